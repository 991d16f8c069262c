"""The model leaves the pipeline: a real `dvc repro` (tiny config) logs the export as an MLflow
pyfunc model on the training run and registers it; the registered model answers as the
evaluate stage did, in process, from pipeline.predict's batch mode and from a real
`mlflow models serve`; promote moves `champion` only to a better version; the runs carry
what the MLflow UI shows (names, source, datasets, models).

Each test has its own copy of the session's baseline project (tests/conftest.py); the served
model's tests share one server over a copy of their own, and only send it requests.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.qa.exported import ExportedQA
from pipeline.runtime import registry
from pipeline.runtime.files import dvc_md5
from tests.helpers.servers import free_port, make_serve, serving
from tests.helpers.project import copy_project, executed_stages, git, run_cmd, set_params, stale_stages

NAME = "squad-qa"
SHORT = {
    "question": "What is the capital of France?",
    "context": "Paris is the capital and most populous city of France.",
}
LONG_CONTEXT = (
    "The Amazon rainforest covers much of the Amazon basin of South America. " * 12
    + "The Eiffel Tower was completed in 1889 in Paris. "
    + "Most of the forest is contained within Brazil. " * 12
)
LONG = {"question": "When was the Eiffel Tower completed?", "context": LONG_CONTEXT}


@pytest.fixture()
def repo(project):
    return project


@pytest.fixture()
def client(repo):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def read_json(path: Path):
    return json.loads(path.read_text())


def sample_questions(repo):
    from datasets import load_from_disk

    validation = load_from_disk(str(repo / "data/raw"))["validation"]
    return validation["id"], validation["question"], validation["context"]


def training_run(repo, client):
    return client.get_run(read_json(repo / "models/trained/training_run.json")["run_id"])


def test_export_is_logged_on_the_training_run_and_registered_as_candidate(repo, client):
    run = training_run(repo, client)
    version = client.get_model_version_by_alias(NAME, registry.CANDIDATE)
    model_ids = [m.model_id for m in run.outputs.model_outputs]
    assert len(model_ids) == 1 and version.source == f"models:/{model_ids[0]}"
    assert version.run_id == run.info.run_id
    logged = client.get_logged_model(model_ids[0])
    assert logged.source_run_id == run.info.run_id
    metrics = read_json(repo / "metrics/eval.json")
    tags = version.tags
    assert tags["git_commit"] == git(repo, "rev-parse", "HEAD~1").strip()
    assert tags["training_run_id"] == run.info.run_id
    assert float(tags["f1"]) == pytest.approx(metrics["f1"]) and float(tags["exact_match"]) == pytest.approx(
        metrics["exact_match"]
    )
    assert tags["eval_data_digest"] == dvc_md5(repo / "data/raw/validation")
    assert "dvc_exp_name" in tags
    # the MLflow model: artifacts, shipped code, pinned requirements, signature with v1.1 outputs
    import mlflow
    from mlflow.models import Model

    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/{NAME}@candidate", dst_path=str(repo.parent / "downloaded"))
    )
    meta = Model.load(str(model_dir / "MLmodel"))
    assert [c.name for c in meta.signature.inputs.inputs] == ["question", "context", "id"]
    assert [c.name for c in meta.signature.outputs.inputs] == [
        *("answer", "score", "start", "end", "engine"),
        *("doc_id", "title"),  # of an answer from the passage index (a question without a context)
    ]
    assert (model_dir / "artifacts/saved_model/saved_model.pb").is_file()
    assert (model_dir / "artifacts/tokenizer/tokenizer.json").is_file()
    assert not list((model_dir / "artifacts/tokenizer").glob("*.h5"))  # weights only once, in the SavedModel
    assert read_json(model_dir / "artifacts/inference.json") == read_json(repo / "models/export/inference.json")
    assert (model_dir / "code/pipeline/qa/predictions.py").is_file()
    requirements = (model_dir / "requirements.txt").read_text()
    for pin in ("tensorflow==2.21.0", "transformers==4.57.6", "mlflow==3.17.2"):
        assert pin in requirements
    assert (model_dir / "serving_input_example.json").is_file()


def test_a_fresh_clones_first_repro_changes_no_tracked_file_so_run_and_version_say_git_dirty_false(repo, client):
    assert (repo.parent / "first_repro_changed.txt").read_text() == ""  # e.g. a .gitignore DVC had to extend
    version = client.get_model_version(NAME, "1")
    assert version.tags["git_dirty"] == "false"
    assert training_run(repo, client).data.tags["git_dirty"] == "false"


def test_make_repros_last_words_are_a_short_table_of_scores_training_and_the_registered_version(repo):
    out = run_cmd([sys.executable, "-m", "pipeline.report"], repo).stdout.splitlines()
    metrics, train = read_json(repo / "metrics/eval.json"), read_json(repo / "metrics/train.json")
    assert [line.split("  ")[0] for line in out] == ["exact match", "F1", "evaluated on", "training", "registered as"]
    assert max(len(line) for line in out) <= 100
    assert f"{metrics['f1']:.2f}  (95% interval {metrics['f1_ci95_low']:.2f}-{metrics['f1_ci95_high']:.2f})" in out[1]
    assert f"{metrics['examples']} questions" in out[2] and f"{train['steps']} steps" in out[3]
    assert out[4].endswith(f"{NAME} version 1 (models:/{NAME}@candidate; `make serve ALIAS=candidate`)")


def test_registering_adds_no_dvc_output_and_a_second_repro_runs_nothing(repo):
    assert executed_stages(run_cmd(["dvc", "repro"], repo)) == set()
    assert stale_stages(repo) == set()
    assert git(repo, "status", "--porcelain").strip() == ""  # mlflow.db and mlartifacts/ are ignored


def test_the_registered_model_answers_every_sample_question_as_the_evaluate_stage(repo, client):
    import mlflow
    import pandas as pd

    ids, questions, contexts = sample_questions(repo)
    expected = read_json(repo / "predictions/predictions.json")
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate")
    out = model.predict(pd.DataFrame({"question": questions, "context": contexts, "id": ids}))
    assert dict(zip(ids, out["answer"])) == expected
    # and as pipeline.predict's one-question form (ExportedQA.answer), score and offsets included
    qa = ExportedQA(repo / "models/export")
    for i in (0, 5):
        one = qa.answer(questions[i], contexts[i], 20, 30)
        row = out.iloc[i]
        assert (row["answer"], row["score"], row["start"], row["end"]) == (
            one["answer"],
            one["score"],
            one["start"],
            one["end"],
        )


@pytest.mark.parametrize("model", ["export", "registry"])
def test_batch_prediction_on_the_sample_equals_the_evaluate_stage(repo, model, tmp_path):
    expected = read_json(repo / "predictions/predictions.json")
    out = tmp_path / "answers.jsonl"
    source = "models/export" if model == "export" else f"models:/{NAME}@candidate"
    proc = run_cmd(
        [
            sys.executable,
            "-m",
            "pipeline.predict",
            "--model",
            source,
            "--input",
            "data/sample/validation.json.gz",
            "--max-questions",
            str(len(expected)),
            "--chunk-size",
            "10",
            "--output",
            str(out),
        ],
        repo,
    )
    assert f"answered {len(expected)} questions" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in rows} == expected
    assert list(expected) == [r["id"] for r in rows]  # input order


def test_batch_prediction_reads_json_lines_and_stops_on_a_bad_row_without_output(repo, tmp_path):
    lines = [json.dumps(SHORT), json.dumps({"id": "long", **LONG}), json.dumps({"question": "", "context": "x"})]
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("\n".join(lines[:2]) + "\n")
    bad.write_text("\n".join(lines) + "\n")
    run_cmd(
        [sys.executable, "-m", "pipeline.predict", "--input", str(good), "--output", str(tmp_path / "a.jsonl")], repo
    )
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "long"]
    qa = ExportedQA(repo / "models/export")
    assert rows[1]["answer"] == qa.answer(LONG["question"], LONG["context"], 20, 30)["answer"]
    proc = run_cmd(
        [sys.executable, "-m", "pipeline.predict", "--input", str(bad), "--output", str(tmp_path / "b.jsonl")],
        repo,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}: row 2: question is empty; ask a question"
    assert not (tmp_path / "b.jsonl").exists()


def test_runs_show_what_they_are_in_the_mlflow_ui(repo, client):
    run = training_run(repo, client)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_name == "tiny_minilm · sample"  # the tiny conf is the repo's own default
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == tags["git_commit"]
    assert tags["mlflow.source.name"] == "pipeline.train" and tags["mlflow.source.type"] == "LOCAL"
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "checkpoint", "eval", "eval-features"}
    assert inputs["checkpoint"].digest == read_json(repo / "models/checkpoint.json")["md5"]
    assert inputs["eval-features"].digest == dvc_md5(repo / "data/tokenized/validation")
    assert tags["models/trained md5"] == dvc_md5(repo / "models/trained")
    # DVC's own run-cache key of each stage that logged here: the run-cache holds an entry under it
    for stage in ("train", "evaluate"):
        key = tags[f"dvc.stage_hash.{stage}"]
        assert (repo / ".dvc/cache/runs" / key[:2] / key).is_dir(), (stage, key)
    key = client.get_model_version(NAME, "1").tags["dvc.stage_hash.export"]
    assert (repo / ".dvc/cache/runs" / key[:2] / key).is_dir()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    tokenized_md5 = next(o["md5"] for o in lock["stages"]["tokenize"]["outs"] if o["path"] == "data/tokenized")
    assert inputs["training"].digest == tokenized_md5  # the DVC md5, as in dvc.lock
    assert inputs["training"].name == "sample-train"
    assert json.loads(inputs["training"].profile)["questions"] == 48
    assert json.loads(inputs["eval"].profile) == {
        "questions": 24,
        "features": read_json(repo / "metrics/eval.json")["features"],
    }
    assert inputs["eval"].digest == tags["eval_data_digest"] == dvc_md5(repo / "data/raw/validation")
    assert json.loads(inputs["eval"].source)["uri"].endswith("data/raw/validation")


def test_an_evaluate_only_change_registers_a_version_that_answers_as_its_evaluation(repo, client):
    """The served model is the evaluated model: after `evaluate.max_answer_length` 30 -> 1, the
    export reruns, and the new version answers every sample question as predictions.json and is
    tagged with the F1 of those answers; version 1 keeps the F1 of its own answers."""
    import mlflow
    import pandas as pd

    first_f1 = client.get_model_version(NAME, "1").tags["f1"]
    first_answers = read_json(repo / "predictions/predictions.json")
    set_params(repo, {"evaluate": {"max_answer_length": 1}})
    assert executed_stages(run_cmd(["dvc", "repro"], repo)) == {"evaluate", "tune_retrieval", "export"}
    newest = client.get_model_version_by_alias(NAME, registry.CANDIDATE)
    assert str(newest.version) == "2"
    metrics = read_json(repo / "metrics/eval.json")
    assert float(newest.tags["f1"]) == pytest.approx(metrics["f1"])
    answers = read_json(repo / "predictions/predictions.json")
    # every answer is now one token (no space inside), whatever the first answers were: the tiny
    # model's first answers may already all be one token, so "the answers changed" is not a given
    assert all(" " not in answer for answer in answers.values())
    assert set(answers) == set(first_answers)
    assert json.loads(newest.tags["answer_settings"])["evaluate.max_answer_length"] == 1
    assert client.get_model_version(NAME, "1").tags["f1"] == first_f1
    ids, questions, contexts = sample_questions(repo)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/2")
    out = model.predict(pd.DataFrame({"question": questions, "context": contexts, "id": ids}))
    assert dict(zip(ids, out["answer"])) == answers
    assert newest.tags["eval_run_id"] == training_run(repo, client).data.tags["latest_eval_run_id"]
    # the SQuAD v2.0 null threshold, which the export records, is an input of both too
    set_params(repo, {"evaluate": {"null_score_diff_threshold": 1.5}})
    assert stale_stages(repo) == {"evaluate", "export"}


def test_promote_moves_champion_only_to_a_better_version(repo, client):
    name = "promote-test"
    source = client.get_model_version(NAME, "1").source
    digest = "0" * 32 + ".dir"

    settings = registry.settings_tag({"evaluate.n_best": 20})

    def register(f1, data_digest=digest, scored_with=settings):
        return registry.register(
            client,
            source,
            name,
            {
                "f1": str(f1),
                "exact_match": "0",
                "eval_data_digest": data_digest,
                "answer_settings": settings,
                "eval_answer_settings": scored_with,
            },
        )

    def promote(*args):
        return run_cmd([sys.executable, "-m", "pipeline.promote", "--name", name, *args], repo, check=False)

    first = register(10.0)
    proc = promote()
    assert (
        proc.returncode == 0
        and proc.stdout.strip() == f"promoted: {name} version {first.version} (F1 10.00) is the first champion"
    )
    worse = register(9.5)
    proc = promote()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"not promoted: {name} version {worse.version} F1 9.50 does not beat "
        f"champion version {first.version} F1 10.00 on the same evaluation data"
    )
    other_data = register(50.0, "f" * 32 + ".dir")
    proc = promote()
    assert proc.returncode == 1 and "evaluated on other data" in proc.stderr
    scored_otherwise = register(60.0, scored_with=registry.settings_tag({"evaluate.n_best": 5}))
    proc = promote()
    assert proc.returncode == 1 and f"version {scored_otherwise.version} has no F1 of its own answers" in proc.stderr
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version
    better = register(12.25)
    proc = promote()
    assert proc.returncode == 0 and "beats version" in proc.stdout
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == better.version
    proc = promote("--version", str(other_data.version), "--force")
    assert proc.returncode == 0 and proc.stdout.startswith("promoted (forced)")
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == other_data.version


# --- a real `mlflow models serve` -------------------------------------------------------


def post(port: int, payload, timeout: float = 120.0) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served(baseline_project, tmp_path_factory):
    """A copy of the baseline project for the server's tests (they only read it)."""
    return copy_project(baseline_project, tmp_path_factory.mktemp("served") / "project") / "repo"


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    """`make serve` (README: `mlflow models serve` of an alias, no venv activated: the venv is not on
    PATH here) of the registered candidate, with a 2,000-character context limit."""
    repo = served
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd, env = make_serve(port, QA_MAX_CONTEXT_CHARS="2000")
    with serving(cmd, f"http://127.0.0.1:{port}/ping", log_path, repo, env):
        yield port


# The server's tests run on one xdist worker (`--dist loadgroup`), so the module starts one server.
SERVER_GROUP = pytest.mark.xdist_group("mlflow-models-serve")


@SERVER_GROUP
def test_served_model_answers_short_and_long_questions_as_pipeline_predict(served, server):
    qa = ExportedQA(served / "models/export")
    status, body = post(server, {"dataframe_records": [SHORT, LONG]})
    assert status == 200
    for row, question in zip(body["predictions"], (SHORT, LONG)):
        expected = qa.answer(question["question"], question["context"], 20, 30)
        assert {k: row[k] for k in ("answer", "score", "start", "end")} == {
            k: expected[k] for k in ("answer", "score", "start", "end")
        }
        assert row["engine"] == "float32"
    assert qa.answer(LONG["question"], LONG["context"], 20, 30)["windows"] > 2


@SERVER_GROUP
def test_served_model_answers_concurrent_clients(server):
    """The scoring server calls predict() from several threads: every answer still comes back."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda i: post(server, {"dataframe_records": [SHORT if i % 2 else LONG]}), range(12)))
    assert [status for status, _ in outcomes] == [200] * 12
    assert len({json.dumps(body) for _, body in outcomes}) == 2  # the same two answers each time


@SERVER_GROUP
@pytest.mark.parametrize(
    "record, message",
    [
        ({"context": "Paris."}, "Model is missing inputs ['question']"),
        ({"question": "", "context": "Paris."}, "row 0: question is empty; ask a question"),
        ({"question": 5, "context": "Paris."}, "row 0: question must be a string, got int 5"),
        ({"question": "Who?", "context": ["Paris."]}, "row 0: context must be a string, got list ['Paris.']"),
        (
            {"question": "Who?", "context": "x" * 2001},
            "row 0: context has 2,001 characters, over the limit of 2,000; split it or raise max_context_chars",
        ),
    ],
)
def test_served_model_refuses_bad_requests_with_400_and_keeps_serving(server, record, message):
    status, body = post(server, {"dataframe_records": [record]})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    if message.startswith("row"):
        assert body["message"] == message  # one line, without the scoring server's dump of the input
    else:
        assert message in body["message"]  # MLflow's own schema check
    status, body = post(server, {"dataframe_records": [SHORT]})
    assert status == 200 and body["predictions"][0]["answer"]

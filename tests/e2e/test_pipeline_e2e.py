"""End to end: a real `dvc repro` in a temporary git repo copied from the project, on the tiny
config and checkpoint.

The session's baseline project (tests/conftest.py) ran the first repro and committed it
(dvc.lock included). Every test gets its own copy of it (repo, DVC cache and run-cache, MLflow
store), makes its one change and reads from DVC's own output which stages executed. So any test
runs alone or in any order, and no test's run-cache entry can stand in for another's run.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from datasets import load_from_disk
from mlflow.tracking import MlflowClient

from pipeline.qa.exported import ExportedQA
from tests.helpers.project import (
    ALWAYS_RUNS,
    STAGES,
    cmd_env,
    executed_stages,
    failure_lines,
    git,
    run_cmd,
    set_params,
    stale_stages,
)

# The answer code: the evaluate stage and the export (whose MLflow model answers with it) import it.
ANSWER_CODE = [
    "pipeline/qa/answers.py",
    "pipeline/qa/postprocess.py",
    "pipeline/qa/predictions.py",
    "pipeline/qa/inference.py",
]


@pytest.fixture()
def repo(project):
    return project


def repro(repo) -> set[str]:
    return executed_stages(run_cmd(["dvc", "repro"], repo))


def read_json(path):
    return json.loads(path.read_text())


def append_comment(repo, path: str) -> None:
    with (repo / path).open("a") as fh:
        fh.write("\n# a comment changes the file's hash\n")


def training_run(repo):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return client, client.get_run(read_json(repo / "models/trained/training_run.json")["run_id"])


def test_first_repro_runs_every_stage_and_writes_sane_metrics(repo):
    log = (repo.parent / "first_repro.log").read_text()
    assert {stage for stage in STAGES if f"Running stage '{stage}'" in log} == set(STAGES)
    metrics = read_json(repo / "metrics/eval.json")
    assert metrics["examples"] == 24
    assert metrics["features"] >= 24
    assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0
    predictions = read_json(repo / "predictions/predictions.json")
    assert len(predictions) == 24 and all(isinstance(v, str) for v in predictions.values())
    train = read_json(repo / "metrics/train.json")
    assert train["steps"] == -(-train["train_features"] // 8)
    assert train["loss"] > 0
    steps = (repo / "plots/train/steps.csv").read_text().splitlines()
    assert steps[0] == "step,loss,learning_rate" and len(steps) > 2
    assert (repo / "models/export/saved_model/saved_model.pb").is_file()
    assert (repo / "models/export/hf/tf_model.h5").is_file()
    # the windows travel with the model, and the export takes them from it
    windows = read_json(repo / "models/trained/qa_windows.json")
    assert (windows["max_length"], windows["stride"]) == (128, 32)
    assert {k: read_json(repo / "models/export/inference.json")[k] for k in ("max_length", "stride")} == {
        "max_length": 128,
        "stride": 32,
    }


def test_mlflow_run_holds_params_curves_metrics_and_commit(repo):
    client, run_ = training_run(repo)
    metrics = read_json(repo / "metrics/eval.json")
    assert run_.data.metrics["f1"] == pytest.approx(metrics["f1"])
    assert run_.data.metrics["exact_match"] == pytest.approx(metrics["exact_match"])
    assert run_.data.params["train.learning_rate"] == "0.0003"
    assert run_.data.params["tokenize.max_length"] == "128"
    assert run_.data.params["data_size.train.examples"] == "48"
    assert run_.data.tags["git_commit"] == git(repo, "rev-parse", "HEAD~1").strip()  # the commit it ran at
    assert len(run_.data.tags["training_inputs_hash"]) == 64
    loss_history = client.get_metric_history(run_.info.run_id, "loss")
    assert len(loss_history) >= 2 and loss_history[0].step < loss_history[-1].step
    assert run_.data.tags["exported"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert {"params.yaml", "plots", "predictions"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run_.info.run_id, "plots")}
    assert "plots/training_loss.png" in plots


def test_second_repro_executes_no_stage_but_the_checkpoint_fingerprint(repo):
    record = (repo / "models/checkpoint.json").read_bytes()
    proc = run_cmd(["dvc", "repro"], repo)
    assert "Running stage 'checkpoint'" in proc.stdout and executed_stages(proc) == set()
    assert (repo / "models/checkpoint.json").read_bytes() == record
    assert json.loads(run_cmd(["dvc", "status", "--json"], repo).stdout) == {"checkpoint": ["always changed"]}


def test_predict_answers_every_question_as_the_evaluate_stage_did(repo):
    """pipeline.predict's code path (ExportedQA.answer, which its main() calls) on each of the
    sample's validation questions gives predictions/predictions.json's answer."""
    validation = load_from_disk(str(repo / "data/raw"))["validation"]
    expected = read_json(repo / "predictions/predictions.json")
    qa = ExportedQA(repo / "models/export")
    answers = {
        i: qa.answer(q, c, 20, 30)["answer"]
        for i, q, c in zip(validation["id"], validation["question"], validation["context"])
    }
    assert answers == expected
    assert sum(bool(a) for a in answers.values()) >= 20
    # and the command line itself, for one of them
    out = run_cmd(
        [
            sys.executable,
            "-m",
            "pipeline.predict",
            "--question",
            validation[0]["question"],
            "--context",
            validation[0]["context"],
        ],
        repo,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["answer"] == expected[validation[0]["id"]]


def test_predict_answers_from_the_export_across_stride_windows(repo):
    context = (
        "The Amazon rainforest covers much of the Amazon basin of South America. " * 6
        + "The Eiffel Tower was completed in 1889 in Paris. "
        + "Most of the forest is contained within Brazil. " * 6
    )
    result = ExportedQA(repo / "models/export").answer("When was the Eiffel Tower completed?", context, 20, 30)
    assert result["windows"] > 1  # longer than max_length=128: several windows
    assert result["answer"] and context[result["start"] : result["end"]] == result["answer"]
    assert isinstance(result["score"], float)


def test_predict_rejects_an_empty_question_before_loading_a_model(repo):
    out = run_cmd(
        [
            sys.executable,
            "-m",
            "pipeline.predict",
            "--model",
            "no/such/export",
            "--question",
            " ",
            "--context",
            "Some text.",
        ],
        repo,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "error: --question is empty; ask a question"


# --- what reruns when: one row of the README's caching table per case -------------------


def change_data_file_content(repo, path: Path | None = None) -> None:
    """Edit the first training question of a SQuAD file (the shipped sample's by default: within
    the tiny subset)."""
    path = path or repo / "data/sample/train.json.gz"
    squad = json.load(gzip.open(path, "rt", encoding="utf-8"))
    squad["data"][0]["paragraphs"][0]["qas"][0]["question"] += " (edited)"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(squad, fh)


def same_checkpoint_by_another_name(repo) -> Path:
    checkpoint = Path(yaml.safe_load((repo / "params.yaml").read_text())["model"]["checkpoint"])
    link = repo.parent / "checkpoint-by-another-name"
    link.symlink_to(checkpoint, target_is_directory=True)
    set_params(repo, {"model": {"checkpoint": str(link)}})
    return link


CACHING_ROWS = {
    "train param": (
        lambda r: set_params(r, {"train": {"learning_rate": 5e-5}}),
        {"train", "evaluate", "tune_retrieval", "export"},
    ),
    # "evaluate param" (answer settings: evaluate and export rerun) and "null threshold":
    # tests/e2e/test_mlflow_model.py::test_an_evaluate_only_change_registers_a_version_...
    # "evaluate param that changes no answer" (evaluate only): test_evaluation_of_a_reused_model_...
    "tokenize param": (
        lambda r: set_params(r, {"tokenize": {"max_length": 96}}),
        {"negatives", "tokenize", "train", "evaluate", "index", "tune_retrieval", "export"},
    ),
    # "model.checkpoint" (by name and by content): test_a_checkpoint_that_changes_under_its_name_...
    "data subset": (lambda r: set_params(r, {"data": {"max_eval_samples": 20}}), set(STAGES) - ALWAYS_RUNS),
    "data file content": (change_data_file_content, set(STAGES) - ALWAYS_RUNS),
    # code: the stage whose code changed runs; later stages run only if its output changed
    "train code": (
        lambda r: append_comment(r, "pipeline/qa/training.py"),
        {"train", "evaluate", "tune_retrieval", "export"},
    ),
    "tokenize code": (lambda r: append_comment(r, "pipeline/tokenize.py"), {"tokenize"}),
    "download code": (lambda r: append_comment(r, "pipeline/download.py"), {"download"}),
    "features code (tokenize, evaluate, tune_retrieval and export import it)": (
        lambda r: append_comment(r, "pipeline/qa/features.py"),
        {"tokenize", "evaluate", "tune_retrieval", "export"},
    ),
    "evaluate code": (lambda r: append_comment(r, "pipeline/evaluate.py"), {"evaluate"}),
    "answer code (evaluate, tune_retrieval and the logged model; not the index)": (
        lambda r: [append_comment(r, p) for p in ANSWER_CODE],
        {"evaluate", "tune_retrieval", "export"},
    ),
    "export code": (lambda r: append_comment(r, "pipeline/qa/serving.py"), {"export"}),
    # retrieve.train_negatives=0 (the default): the negatives file stays an empty list, so a BM25
    # setting reruns the retrieval stages, not tokenize or train
    "BM25 setting": (
        lambda r: set_params(r, {"retrieve": {"k1": 1.2}}),
        {"negatives", "index", "tune_retrieval", "export"},
    ),
    "retrieved negatives (retrieve.train_negatives=1)": (
        lambda r: set_params(r, {"retrieve": {"train_negatives": 1}}),
        {"negatives", "tokenize", "train", "evaluate", "tune_retrieval", "export"},
    ),
}


# Rows whose change reaches training: DVC runs the stages up to train (`dvc repro train`) and its
# own status then names the stages past it that would run (evaluate and export read the new
# models/trained). One row, "train param", runs the whole `dvc repro`, so the propagation past
# train is also seen running; the others save its two stages (half of each row's time).
FULL_REPRO_ROWS = {"train param"}
# What `dvc repro train` leaves to run: the stages after train, and the index (it reads the
# tokenizer and windows, not the model). open/dvc.yaml's evaluate_open is never run by `dvc repro`.
PAST_TRAIN = {"evaluate", "index", "tune_retrieval", "export"}


@pytest.mark.parametrize("change", list(CACHING_ROWS))
def test_a_change_reruns_exactly_the_stages_it_affects(repo, change):
    make_change, expected = CACHING_ROWS[change]
    make_change(repo)
    if "train" in expected and change not in FULL_REPRO_ROWS:
        assert executed_stages(run_cmd(["dvc", "repro", "train"], repo)) == expected - PAST_TRAIN
        assert stale_stages(repo) == expected & PAST_TRAIN
    else:
        assert repro(repo) == expected
        assert stale_stages(repo) == set()
    if change == "data subset":
        assert load_from_disk(str(repo / "data/raw"))["validation"].num_rows == 20
    if change.startswith("retrieved negatives"):
        negatives = read_json(repo / "data/negatives.json")
        questions = read_json(repo / "data/tokenized/summary.json")["train"]
        assert 0 < len(negatives) == questions["negatives"] <= questions["examples"]  # at most one per question
        assert questions["features"] >= questions["examples"] + len(negatives)


def test_a_data_file_outside_the_repo_is_a_dependency_by_content(repo):
    """data.train_file may point anywhere (README: Configuration): its content is a DVC dep, so
    editing it reruns download, and going back to the earlier content restores from the run-cache."""
    outside = repo.parent / "external-data"
    outside.mkdir()
    for name in ("train.json.gz", "validation.json.gz"):
        (outside / name).write_bytes((repo / "data/sample" / name).read_bytes())
    set_params(
        repo,
        {
            "data": {
                "train_file": str(outside / "train.json.gz"),
                "validation_file": str(outside / "validation.json.gz"),
            }
        },
    )
    assert executed_stages(run_cmd(["dvc", "repro", "download"], repo)) == {"download"}
    before = (outside / "train.json.gz").read_bytes()
    change_data_file_content(repo, outside / "train.json.gz")
    assert str(outside / "train.json.gz") in run_cmd(["dvc", "status", "download"], repo).stdout
    assert stale_stages(repo, "download") == {"download"}
    assert executed_stages(run_cmd(["dvc", "repro", "download"], repo)) == {"download"}
    assert "(edited)" in load_from_disk(str(repo / "data/raw"))["train"][0]["question"]
    (outside / "train.json.gz").write_bytes(before)
    proc = run_cmd(["dvc", "repro", "download"], repo)
    assert executed_stages(proc) == set()
    assert "Stage 'download' is cached - skipping run, checking out outputs" in proc.stdout
    assert "(edited)" not in load_from_disk(str(repo / "data/raw"))["train"][0]["question"]


def test_a_checkpoint_that_changes_under_its_name_retokenizes_and_retrains(repo):
    """model.checkpoint by name (another name for the same files reruns tokenize and train: both
    read it) and by content: the same name pointing at changed files reruns them too, and a
    stage that meets data tokenized from the old files stops with one line."""
    link = same_checkpoint_by_another_name(repo)
    assert executed_stages(run_cmd(["dvc", "repro", "train"], repo)) == {"negatives", "tokenize", "train"}
    assert stale_stages(repo) == {"evaluate", "index", "tune_retrieval", "export"}
    changed = repo.parent / "changed-checkpoint"
    shutil.copytree(link, changed)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.2}))
    link.unlink()
    link.symlink_to(changed, target_is_directory=True)
    lines = failure_lines(run_cmd([sys.executable, "-m", "pipeline.train"], repo, check=False))
    assert len(lines) == 1 and lines[0].startswith(
        "error: data/tokenized was built from model.checkpoint with content md5 "
    ), lines
    assert "another installed version of a checkpoint" in lines[0] and "run `dvc repro` again" in lines[0]
    assert executed_stages(run_cmd(["dvc", "repro", "train"], repo)) == {"negatives", "tokenize", "train"}
    record = read_json(repo / "models/checkpoint.json")
    assert read_json(repo / "models/trained/qa_windows.json")["checkpoint_md5"] == record["md5"]
    assert read_json(repo / "data/tokenized/built_with.json")["model.checkpoint md5"] == record["md5"]


def test_a_concurrent_experiment_that_changes_the_data_mid_repro_stops_the_repro_with_one_line(repo):
    """DVC releases its repo lock while a stage's command runs and locks only that stage's own
    deps and outs: a `dvc exp run` in the same workspace can then rebuild data/raw under a
    running `dvc repro`. The repro's train is held (SIGSTOP) after it read the features while a
    real concurrent experiment with another data subset rebuilds data/raw; when it resumes, the
    evaluate stage finds questions that are not the ones the features were built from (the
    "627 examples, 32 features" case), and stops with one line."""
    set_params(repo, {"train": {"learning_rate": 2e-4}})  # the repro trains
    repro_proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=cmd_env({"PYTHONUNBUFFERED": "1"}),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    held = []
    try:
        output = []
        for line in repro_proc.stdout:  # the train stage prints its MLflow run once it has read its data
            output.append(line)
            if line.startswith("MLflow run "):
                break
        else:
            pytest.fail("the repro ended before training started:\n" + "".join(output))
        held = [
            p
            for p in psutil.Process(repro_proc.pid).children(recursive=True)
            if "pipeline.train" in " ".join(p.cmdline())
        ]
        assert held, "no train process under the repro"
        for process in held:
            process.send_signal(signal.SIGSTOP)
        run_cmd(["dvc", "exp", "run", "-S", "data.max_eval_samples=10", "download"], repo)
    finally:
        for process in held:
            process.send_signal(signal.SIGCONT)
    rest, _ = repro_proc.communicate(timeout=600)
    assert repro_proc.returncode != 0, rest
    errors = [line for line in rest.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: data/tokenized was built from data/raw with content md5 "
    ), rest
    assert "a concurrent `dvc exp run` in this workspace" in errors[0]
    # no scores of mismatched inputs (DVC removed the stage's earlier outputs before running it)
    assert not (repo / "metrics/eval.json").exists()


def test_evaluation_of_a_reused_model_is_a_new_run_linked_to_the_training_run(repo):
    # an evaluate param that changes no answer: the export (which depends on the answers) is reused
    set_params(repo, {"evaluate": {"bootstrap_seed": 7}})
    assert repro(repo) == {"evaluate"}
    client, trained = training_run(repo)
    latest = client.search_runs([trained.info.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert latest.data.tags["training_reused"] == "true"
    assert latest.data.tags["training_run_id"] == trained.info.run_id
    assert latest.data.params["evaluate.bootstrap_seed"] == "7"
    assert "loss" not in latest.data.metrics  # it did not train, and does not pretend to
    assert "f1" in latest.data.metrics


def test_going_back_to_an_earlier_parameter_set_restores_from_the_run_cache(repo):
    first = {p: (repo / p).read_bytes() for p in ("models/trained/tf_model.h5", "metrics/train.json")}
    set_params(repo, {"train": {"learning_rate": 1.5e-4}})
    assert executed_stages(run_cmd(["dvc", "repro", "train"], repo)) == {"train"}
    assert (repo / "metrics/train.json").read_bytes() != first["metrics/train.json"]
    git(repo, "checkout", "--", "params.yaml")
    proc = run_cmd(["dvc", "repro"], repo)
    assert executed_stages(proc) == set()
    assert "Stage 'train' is cached - skipping run, checking out outputs" in proc.stdout
    assert {p: (repo / p).read_bytes() for p in first} == first
    assert stale_stages(repo) == set()


def test_bad_stride_fails_with_one_clear_line_and_earlier_outputs_survive(repo):
    lock_before = (repo / "dvc.lock").read_text()
    set_params(repo, {"tokenize": {"stride": 128}})
    out = run_cmd(["dvc", "repro"], repo, check=False)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: params.yaml: tokenize.stride=128 is invalid: stride must be >= 0 and less than "
        "tokenize.max_length (128)"
    ]
    assert (repo / "dvc.lock").read_text() == lock_before
    # DVC removed the stage's workspace output before running it; the good version is in
    # the cache, so restoring the params restores everything without executing a stage.
    set_params(repo, {"tokenize": {"stride": 32}})
    assert repro(repo) == set()
    assert (repo / "data/tokenized/dataset_dict.json").is_file()


def test_squad_v2_experiment_trains_exports_and_predict_answers_nothing_when_null_wins(repo):
    threshold = -2.0
    run_cmd(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "data=sample_v2",
            "-S",
            "data.max_train_samples=200",
            "-S",
            "data.max_eval_samples=80",
            "-S",
            "train.learning_rate=3e-4",
            "-S",
            f"evaluate.null_score_diff_threshold={threshold}",
        ],
        repo,
    )
    assert read_json(repo / "models/export/inference.json")["version_2_with_negative"] is True
    validation = load_from_disk(str(repo / "data/raw"))["validation"]
    expected = read_json(repo / "predictions/predictions.json")
    null_odds = read_json(repo / "predictions/null_odds.json")
    unanswerable = [i for i, a in zip(validation["id"], validation["answers"]) if not a["text"]]
    beyond = [i for i in unanswerable if null_odds[i] > threshold]
    assert beyond, f"no unanswerable question's null odds pass {threshold}: {[null_odds[i] for i in unanswerable]}"
    qa = ExportedQA(repo / "models/export")
    rows = {i: (q, c) for i, q, c in zip(validation["id"], validation["question"], validation["context"])}
    results = {i: qa.answer(q, c, 20, 30) for i, (q, c) in rows.items()}
    for i in beyond:
        assert results[i]["answer"] == "" and results[i]["null_odds"] == pytest.approx(null_odds[i], abs=1e-3)
    assert {i: result["answer"] for i, result in results.items()} == expected
    # the registered MLflow model: null_odds in its signature, the same answers for the batch
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/squad-qa@candidate")
    assert [c.name for c in model.metadata.signature.outputs.inputs] == [
        "answer",
        "score",
        "start",
        "end",
        "null_odds",
        "engine",
        "doc_id",
        "title",
    ]
    out = model.predict(
        pd.DataFrame({"question": [q for q, _ in rows.values()], "context": [c for _, c in rows.values()]})
    )
    assert dict(zip(rows, out["answer"])) == expected
    assert all(
        out["null_odds"][i] == pytest.approx(null_odds[k], abs=1e-3)
        for i, k in enumerate(rows)
        if np.isfinite(null_odds[k])
    )


@pytest.mark.parametrize(
    "stage,recorded_in", [("train", "data/tokenized"), ("evaluate", "data/tokenized"), ("export", "models/trained")]
)
def test_a_workspace_changed_during_a_run_stops_the_next_stage(repo, stage, recorded_in):
    """What a `dvc exp run` started during a `dvc repro` does: it rewrites params.yaml (here
    tokenize.max_length 128 -> 96) while the repro's next stage is about to start. That stage
    finds its input built with other settings and stops with one line; nothing is overwritten."""
    before = {
        p: (repo / p).read_bytes()
        for p in ("metrics/eval.json", "models/export/inference.json", "models/trained/qa_windows.json")
    }
    set_params(repo, {"tokenize": {"max_length": 96}})
    out = run_cmd([sys.executable, "-m", f"pipeline.{stage}"], repo, check=False)
    errors = failure_lines(out)
    assert errors == [
        f"error: {recorded_in} was built with tokenize.max_length=128 but params.yaml has tokenize.max_length=96: "
        "the workspace changed during the run (a concurrent `dvc exp run`?); run `dvc repro` again, and run "
        "experiments with `dvc exp run --queue` or `--temp` while a repro runs"
    ]
    assert {p: (repo / p).read_bytes() for p in before} == before

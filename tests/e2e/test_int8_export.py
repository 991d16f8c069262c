"""int8 answers through the pipeline (pipeline.qa.int8): `export.engine=int8` reruns only the
export, which adds models/export/int8/ and scores its answers by the evaluate stage's code; the
registered version records the engine and those scores; `pipeline.evaluate_model --engine int8`
measures the same figures; a real `mlflow models serve` answers from the int8 model and says so;
without the int8 extra a float32 export still works and an int8 one stops with one line.

On the tiny checkpoint (plumbing, not quality: docs/int8.md has what int8 costs a trained model).
Each test has its own copy of the session's baseline project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.runtime import registry
from tests.helpers.project import (
    copy_project,
    executed_stages,
    failure_lines,
    run_cmd,
    set_params,
    tree_digest,
)
from tests.helpers.servers import free_port, make_serve, serving

NAME = "squad-qa"


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def int8_project(baseline_project, tmp_path_factory):
    """A copy of the baseline project after `dvc repro` with export.engine=int8 (the tests only
    read it): (repo, the repro's process)."""
    repo = copy_project(baseline_project, tmp_path_factory.mktemp("int8") / "project") / "repo"
    set_params(repo, {"export": {"engine": "int8"}})
    proc = run_cmd(["dvc", "repro"], repo)
    return repo, proc


def client_for(repo: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_an_int8_export_reruns_only_the_export_and_registers_the_scores_of_its_own_answers(int8_project):
    repo, proc = int8_project
    assert executed_stages(proc) == {"export"}
    int8_dir = repo / "models/export/int8"
    assert {p.name for p in int8_dir.iterdir()} == {
        "model.xml",
        "model.bin",
        "evaluation.json",
        "predictions.json",
        "nbest_predictions.json",
    }
    assert read_json(repo / "models/export/inference.json")["engine"] == "int8"
    evaluation = read_json(int8_dir / "evaluation.json")
    float_evaluation = read_json(repo / "predictions/evaluation.json")
    float_answers = read_json(repo / "predictions/predictions.json")
    int8_answers = read_json(int8_dir / "predictions.json")
    assert int8_answers.keys() == float_answers.keys() and len(int8_answers) == 24
    agreement = sum(int8_answers[i] == a for i, a in float_answers.items()) / len(float_answers)
    assert evaluation["agreement_with_float"] == pytest.approx(agreement)
    assert evaluation["answer_settings"] == {**float_evaluation["answer_settings"], "precision": "int8"}
    assert evaluation["eval_data_digest"] == float_evaluation["eval_data_digest"]
    assert evaluation["float"]["f1"] == float_evaluation["f1"]
    from datasets import load_from_disk

    train_features = load_from_disk(str(repo / "data/tokenized"))["train"].num_rows
    assert evaluation["calibration_features"] == min(300, train_features)  # export.calibration_samples
    assert f"the same answer as the evaluate stage's for {agreement:.1%}" in proc.stdout

    version = client_for(repo).get_model_version_by_alias(NAME, registry.CANDIDATE)
    tags = version.tags
    assert tags[registry.ENGINE_TAG] == "int8"
    assert float(tags[registry.F1_TAG]) == evaluation["f1"]
    assert float(tags[registry.EM_TAG]) == evaluation["exact_match"]
    assert float(tags[registry.FLOAT_F1_TAG]) == float_evaluation["f1"]
    assert float(tags[registry.AGREEMENT_TAG]) == pytest.approx(agreement)
    assert json.loads(tags[registry.ANSWER_SETTINGS_TAG])["precision"] == "int8"
    run = client_for(repo).get_run(version.run_id)
    assert run.data.metrics["int8.f1"] == pytest.approx(evaluation["f1"])


def test_evaluate_model_measures_the_int8_engine_as_the_export_did(int8_project, tmp_path):
    repo, _ = int8_project
    evaluation = read_json(repo / "models/export/int8/evaluation.json")
    data = repo / "data/sample/validation.json.gz"
    out = tmp_path / "int8.json"
    common = ["--data", str(data), "--max-samples", "24", "--bootstrap-samples", "100"]
    run_cmd(
        [sys.executable, "-m", "pipeline.evaluate_model", "--model", "models/export", "--engine", "int8", *common]
        + ["--out", str(out), "--predictions-dir", str(tmp_path / "predictions")],
        repo,
    )
    measured = read_json(out)
    assert measured["settings"]["engine"] == "int8"
    assert (measured["f1"], measured["exact_match"]) == (evaluation["f1"], evaluation["exact_match"])
    assert read_json(tmp_path / "predictions/predictions.json") == read_json(
        repo / "models/export/int8/predictions.json"
    )
    # A model without an int8 part: one line naming the flag and the fix, before any work.
    proc = run_cmd(
        [sys.executable, "-m", "pipeline.evaluate_model", "--model", "models/trained", "--engine", "int8", *common]
        + ["--out", str(tmp_path / "none.json")],
        repo,
        check=False,
    )
    assert failure_lines(proc) == [
        "error: --engine int8: models/trained has no int8/model.xml; give an export made with export.engine=int8 "
        "(`dvc exp run -S export.engine=int8`)"
    ]
    assert not (tmp_path / "none.json").exists()


def test_pipeline_predict_answers_from_the_engine_asked_for(int8_project):
    repo, _ = int8_project
    question = ["--question", "Who wrote it?", "--context", "The book was written by Ada Lovelace in 1843."]
    answers = {}
    for engine in ("int8", "float32"):
        proc = run_cmd(
            [sys.executable, "-m", "pipeline.predict", "--model", "models/export", "--engine", engine, *question], repo
        )
        answers[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    default = run_cmd([sys.executable, "-m", "pipeline.predict", "--model", "models/export", *question], repo)
    assert json.loads(default.stdout.strip().splitlines()[-1]) == answers["int8"]  # the export's engine
    # The two engines compute the logits apart: their scores differ (the tiny model is untrained).
    assert answers["int8"]["score"] != answers["float32"]["score"]


@pytest.mark.xdist_group("mlflow-models-serve-int8")
def test_the_served_int8_model_answers_as_the_exports_int8_evaluation(int8_project, tmp_path):
    """`make serve` of the int8 candidate: its answers to validation questions are the int8
    predictions the export scored (and registered), and each says which engine computed it."""
    from datasets import load_from_disk

    repo, _ = int8_project
    validation = load_from_disk(str(repo / "data/raw"))["validation"]
    expected = read_json(repo / "models/export/int8/predictions.json")
    port = free_port()
    cmd, env = make_serve(port)
    log_path = tmp_path / "serve.log"
    import urllib.request

    with serving(cmd, f"http://127.0.0.1:{port}/ping", log_path, repo, env):
        records = [{"question": q, "context": c} for q, c in zip(validation["question"], validation["context"])]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": records}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            rows = json.loads(response.read())["predictions"]
    assert [r["answer"] for r in rows] == [expected[i] for i in validation["id"]]
    assert {r["engine"] for r in rows} == {"int8"}
    assert "answers with the int8 engine" in log_path.read_text()


def test_without_the_int8_extra_a_float32_export_works_and_an_int8_one_stops_with_one_line(project, tmp_path):
    """The quick start never needs OpenVINO: with `import openvino` failing, export.engine=float32
    exports; export.engine=int8 stops with one line naming the extra and leaves the export as it was."""
    shim = tmp_path / "no_int8_extra"
    for package in ("openvino", "nncf"):
        (shim / package).mkdir(parents=True)
        (shim / package / "__init__.py").write_text(f"raise ImportError('no module named {package} (test shim)')\n")
    env = {"PYTHONPATH": str(shim)}
    run_cmd([sys.executable, "-m", "pipeline.export"], project, env=env)
    before = tree_digest(project / "models/export")
    set_params(project, {"export": {"engine": "int8"}})
    proc = run_cmd([sys.executable, "-m", "pipeline.export"], project, env=env, check=False)
    assert failure_lines(proc) == [
        "error: the int8 engine needs OpenVINO and NNCF, which the quick start does not install: "
        "run `pip install -e '.[int8]'` (or `make install-int8`)"
    ]
    assert tree_digest(project / "models/export") == before

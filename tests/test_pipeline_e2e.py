"""End to end: a real `dvc repro` in a temporary git repo copied from the project, on a tiny config.

The tests in this module run in order on one repo: first run, MLflow record, no-op rerun,
prediction from the export, a train-only change, then a bad parameter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT, project_files

TINY = {
    "data": {"max_train_samples": 48, "max_eval_samples": 24},
    "tokenize": {"max_length": 128, "stride": 32},
    "train": {"batch_size": 8, "log_every_steps": 2},
    "evaluate": {"batch_size": 32},
}
STAGES = ["download", "tokenize", "train", "evaluate", "export"]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def executed_stages(output: str) -> set[str]:
    """Stages DVC actually ran (not skipped, not restored from the run-cache)."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def set_params(repo: Path, updates: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in updates.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(root: Path, updates: dict = TINY) -> Path:
    repo = root / "repo"
    for name in project_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target)
    set_params(repo, updates)
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("e2e"))
    first = run(["dvc", "repro"], repo)
    repo.joinpath("first_repro.log").write_text(first.stdout + first.stderr)
    return repo


def test_first_repro_runs_every_stage_and_writes_sane_metrics(repo):
    log = repo.joinpath("first_repro.log").read_text()
    assert executed_stages(log) == set(STAGES)
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["examples"] == 24
    assert metrics["features"] >= 24
    assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0
    predictions = json.loads((repo / "predictions/predictions.json").read_text())
    assert len(predictions) == 24 and all(isinstance(v, str) for v in predictions.values())
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["steps"] == -(-train["train_features"] // 8)
    assert train["loss"] > 0
    steps = (repo / "plots/train/steps.csv").read_text().splitlines()
    assert steps[0] == "step,loss,learning_rate" and len(steps) > 2
    assert (repo / "models/export/saved_model/saved_model.pb").is_file()
    assert (repo / "models/export/hf/tf_model.h5").is_file()


def test_mlflow_run_holds_params_curves_metrics_and_commit(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("squad-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run_ = runs[0]
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert run_.data.metrics["f1"] == pytest.approx(metrics["f1"])
    assert run_.data.metrics["exact_match"] == pytest.approx(metrics["exact_match"])
    assert run_.data.params["train.learning_rate"] == "0.0001"
    assert run_.data.params["tokenize.max_length"] == "128"
    assert run_.data.params["data_size.train.examples"] == "48"
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert run_.data.tags["git_commit"] == head
    loss_history = client.get_metric_history(run_.info.run_id, "loss")
    assert len(loss_history) >= 2 and loss_history[0].step < loss_history[-1].step
    assert run_.data.tags["exported"] == "true"


def test_second_repro_executes_no_stage(repo):
    out = run(["dvc", "repro"], repo)
    assert executed_stages(out.stdout + out.stderr) == set()
    assert run(["dvc", "status"], repo).stdout.strip() in ("Data and pipelines are up to date.", "")


def test_predict_answers_from_the_export_across_stride_windows(repo):
    context = (
        "The Amazon rainforest covers much of the Amazon basin of South America. " * 6
        + "The Eiffel Tower was completed in 1889 in Paris. "
        + "Most of the forest is contained within Brazil. " * 6
    )
    out = run([sys.executable, "-m", "pipeline.predict", "--model", "models/export",
               "--question", "When was the Eiffel Tower completed?", "--context", context], repo)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["windows"] > 1  # longer than max_length=128: several windows
    assert result["answer"] and context[result["start"]:result["end"]] == result["answer"]
    assert isinstance(result["score"], float)


def test_predict_rejects_an_empty_question(repo):
    out = run([sys.executable, "-m", "pipeline.predict", "--question", " ", "--context", "Some text."], repo, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "error: --question is empty; ask a question"


def test_train_only_param_reruns_train_evaluate_export(repo):
    set_params(repo, {"train": {"learning_rate": 5e-5}})
    out = run(["dvc", "repro"], repo)
    assert executed_stages(out.stdout + out.stderr) == {"train", "evaluate", "export"}


def test_bad_stride_fails_with_one_clear_line_and_earlier_outputs_survive(repo):
    lock_before = (repo / "dvc.lock").read_text()
    set_params(repo, {"tokenize": {"stride": 128}})
    out = run(["dvc", "repro"], repo, check=False)
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
    out = run(["dvc", "repro"], repo)
    assert executed_stages(out.stdout + out.stderr) == set()
    assert (repo / "data/tokenized/dataset_dict.json").is_file()

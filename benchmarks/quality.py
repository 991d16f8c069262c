"""Quality benchmark on real SQuAD v1.1, through the real pipeline stages.

    make bench-quality                    # or: python benchmarks/quality.py [override ...]

- model: the packaged MiniLM;
- train: the first 8,000 questions of train-v1.1.reconstructed.json.gz;
- eval: the first 2,000 questions of dev-v1.1.json.gz (an honest test split: settings are
  chosen on --tuning questions 8,001-9,000 of train, never on these).

It composes conf/ with the `data=squad_shared` option and the overrides given (default:
`train=quality`), runs download -> tokenize -> train -> evaluate in a scratch directory
with the pipeline's own stage functions, logs to the repo's MLflow store (experiment
`squad-quality-benchmark`), prints EM, F1, train wall time and train features/s, and writes
them to benchmarks/results/.

    python benchmarks/quality.py --tuning -- train.learning_rate=5e-5   # a tuning run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--tuning", action="store_true",
                        help="evaluate on train questions 8,001-9,000 instead of the 2,000 dev questions")
    parser.add_argument("overrides", nargs="*", default=["train=quality"], help="Hydra overrides for conf/")
    args = parser.parse_args()

    import yaml

    from pipeline import download, evaluate, tokenize, train
    from pipeline.compose import compose_params_text
    from pipeline.config import from_dict

    train_file = args.squad_dir / "train-v1.1.reconstructed.json.gz"
    dev_file = args.squad_dir / "dev-v1.1.json.gz"
    if not train_file.is_file() or not dev_file.is_file():
        sys.exit(f"error: SQuAD v1.1 not found in {args.squad_dir}; pass --squad-dir")
    overrides = ["data=squad_shared", f"data.train_file={train_file}", f"data.validation_file={dev_file}",
                 "mlflow.experiment_name=squad-quality-benchmark", *args.overrides]
    params = yaml.safe_load(compose_params_text(overrides))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")

    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        work = Path(tmp)
        if args.tuning:
            # questions 8,001-9,000 of train, written as a SQuAD file for the validation split
            records = download.read_squad_json(train_file)[8000:9000]
            tuning_file = work / "tuning.json"
            _write_squad(records, tuning_file)
            params["data"]["validation_file"] = str(tuning_file)
            params["data"]["max_eval_samples"] = None
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        cfg = from_dict(params, str(work / "params.yaml"))
        os.chdir(work)
        download.run(cfg.data, work / "data/raw")
        tokenize.run(cfg.model.checkpoint, cfg.tokenize, work / "data/raw", work / "data/tokenized",
                     num_proc=os.cpu_count())
        summary = train.train(cfg, work / "data/tokenized", work / "models/trained", work / "metrics/train.json",
                              work / "plots/train")
        metrics = evaluate.evaluate(cfg, work / "data/raw", work / "data/tokenized", work / "models/trained",
                                    work / "metrics/eval.json", work / "predictions", work / "plots/eval/scores.json")

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "split": "tuning: train questions 8,001-9,000" if args.tuning else "dev: first 2,000 questions",
        "overrides": args.overrides,
        "exact_match": metrics["exact_match"],
        "f1": metrics["f1"],
        "train_seconds": summary["train_seconds"],
        "train_features_per_second": summary["features_per_second"],
        "train_features": summary["train_features"],
        "epochs": summary["epochs"],
        "mlflow_run_id": metrics["mlflow_run_id"],
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quality-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json").write_text(json.dumps(result, indent=2))


def _write_squad(records: list[dict], path: Path) -> None:
    data = [{"title": r["title"], "paragraphs": [{"context": r["context"], "qas": [
        {"id": r["id"], "question": r["question"],
         "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}
    ]}]} for r in records]
    path.write_text(json.dumps({"version": "1.1", "data": data}))


if __name__ == "__main__":
    main()

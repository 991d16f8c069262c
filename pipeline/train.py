"""Stage 3, train: data/tokenized/ -> models/trained/ (HF model + tokenizer), curves, MLflow run.

    python -m pipeline.train [--params params.yaml]

Writes
- models/trained/: save_pretrained output, the tokenizer, qa_windows.json (the windows it
  was trained on, read by evaluate, export and evaluate_model), training_run.json (MLflow run id);
- metrics/train.json: final loss, wall time, throughput (DVC metrics);
- plots/train/steps.csv, plots/train/epochs.csv: training curves (DVC plots).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.batching import FeatureTable
from pipeline.qa.modeling import load_qa_model, load_tokenizer, write_windows
from pipeline.qa.training import (keep_head_in_float32, make_curves_callback, make_dataset, precision_policy,
                                  warmup_steps)
from pipeline.runtime import tracking
from pipeline.runtime.config import PipelineConfig, flatten, load_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, dvc_md5, read_json, write_csv, write_json
from pipeline.runtime.lineage import check_built_with, read_built_with
from pipeline.runtime.paths import (EPOCHS_PLOT_FILE, PARAMS_FILE, STEPS_PLOT_FILE, SUMMARY_FILE_NAME, TOKENIZED_DIR,
                                    TRAIN_METRICS_FILE, TRAINED_DIR, stage_code_deps)


def training_inputs_hash(cfg: PipelineConfig, tokenized_dir: Path) -> str:
    """sha256 over everything the train stage depends on: its params, the tokenized train
    split and its code (the .py deps dvc.yaml declares for it). Equal hashes mean equal
    training inputs, across runs and machines."""
    digest = hashlib.sha256()
    params = {"model.checkpoint": cfg.model.checkpoint, "tokenize.max_length": cfg.tokenize.max_length,
              "train": asdict(cfg.train)}
    digest.update(json.dumps(params, sort_keys=True).encode())
    for path in sorted((tokenized_dir / "train").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    for path in stage_code_deps("train"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def expected_inputs(cfg: PipelineConfig) -> dict[str, Any]:
    return {"model.checkpoint": cfg.model.checkpoint, "tokenize.max_length": cfg.tokenize.max_length,
            "tokenize.stride": cfg.tokenize.stride}


def train(cfg: PipelineConfig, tokenized_dir: Path = TOKENIZED_DIR, out_dir: Path = TRAINED_DIR) -> dict[str, Any]:
    import tensorflow as tf
    from datasets import load_from_disk
    from transformers import create_optimizer

    if not (tokenized_dir / "dataset_dict.json").is_file():
        raise PipelineError(f"{tokenized_dir}: no tokenized data; run the tokenize stage first")
    check_built_with(read_built_with(tokenized_dir), expected_inputs(cfg), tokenized_dir)
    tokenizer = load_tokenizer(cfg.model.checkpoint)
    train_split = load_from_disk(str(tokenized_dir))["train"]
    table = FeatureTable.from_dataset(train_split, pad_token_id=tokenizer.pad_token_id or 0)
    n_features = len(table)
    steps_per_epoch = math.ceil(n_features / cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs

    # Open the MLflow run first: if the store is unreachable we stop before training,
    # instead of training for an hour and losing the record.
    summary_file = tokenized_dir / SUMMARY_FILE_NAME
    data_summary = read_json(summary_file) if summary_file.is_file() else {}
    params = flatten(cfg)
    for split, info in data_summary.items():
        params[f"data_size.{split}.examples"] = info.get("examples")
        params[f"data_size.{split}.features"] = info.get("features")
    tags = {"stage": "train", "training_inputs_hash": training_inputs_hash(cfg, tokenized_dir)}
    client, run_id = tracking.start_run(cfg.mlflow.experiment_name, tracking.run_name(cfg), params, tags,
                                        entry_point="pipeline.train")
    print(f"MLflow run {run_id} in {tracking.tracking_uri()}")
    tracking.log_dataset(client, run_id, f"{tracking.data_label(cfg)}-train", dvc_md5(tokenized_dir),
                         tokenized_dir, "training",
                         {"questions": data_summary.get("train", {}).get("examples"), "features": n_features})

    tf.keras.utils.set_random_seed(cfg.train.seed)
    with precision_policy(cfg.train.precision) as policy:
        model = load_qa_model(cfg.model.checkpoint)
        keep_head_in_float32(model)
    optimizer, schedule = create_optimizer(
        init_lr=cfg.train.learning_rate,
        num_train_steps=total_steps,
        num_warmup_steps=warmup_steps(total_steps, cfg.train.warmup_ratio),
        weight_decay_rate=cfg.train.weight_decay,
    )
    model.compile(optimizer=optimizer)  # no loss argument: the HF model computes its own QA loss

    interactive = sys.stdout.isatty()
    curves = make_curves_callback(
        schedule, steps_per_epoch, cfg.train.log_every_steps,
        on_log=lambda metrics, step: tracking.log_metrics(client, run_id, metrics, step),
        show_progress_lines=not interactive,
    )
    dataset = make_dataset(table, cfg)
    started = time.perf_counter()
    model.fit(dataset, epochs=cfg.train.epochs, steps_per_epoch=steps_per_epoch,
              callbacks=[curves], verbose=1 if interactive else 0)
    seconds = time.perf_counter() - started

    summary = {
        "loss": curves.epochs[-1]["loss"],
        "epochs": cfg.train.epochs,
        "steps": total_steps,
        "train_features": n_features,
        "train_seconds": round(seconds, 2),
        "features_per_second": round(n_features * cfg.train.epochs / seconds, 3),
        "precision_policy": policy,
    }
    with atomic_output_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_windows(tmp, cfg.tokenize.max_length, cfg.tokenize.stride, cfg.data.version_2_with_negative,
                      cfg.model.checkpoint)
        write_json(tmp / tracking.RUN_FILE_NAME, {"run_id": run_id, "tracking_uri": tracking.tracking_uri()})
    write_json(TRAIN_METRICS_FILE, summary)
    write_csv(STEPS_PLOT_FILE, curves.steps)
    write_csv(EPOCHS_PLOT_FILE, curves.epochs)

    tracking.log_metrics(client, run_id, {k: v for k, v in summary.items() if isinstance(v, (int, float))},
                         step=total_steps)
    client.log_artifact(run_id, str(STEPS_PLOT_FILE), "plots")
    client.log_artifact(run_id, str(EPOCHS_PLOT_FILE), "plots")
    tracking.log_loss_plot(client, run_id, curves.steps)
    if PARAMS_FILE.is_file():
        client.log_artifact(run_id, str(PARAMS_FILE))
    tracking.end_run(client, run_id)
    return summary


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS_FILE))
    args = parser.parse_args()
    cfg = load_config(args.params)
    summary = train(cfg)
    print(
        f"trained {summary['epochs']} epoch(s), {summary['steps']} steps in {summary['train_seconds']} s "
        f"({summary['features_per_second']} features/s), final loss {summary['loss']:.4f}"
    )


if __name__ == "__main__":
    main()

"""Stage 3, train: data/tokenized/ -> models/trained/ (HF model + tokenizer), curves, MLflow run.

    python -m pipeline.train [--params params.yaml]
    python -m pipeline.launch --workers 2 -- python -m pipeline.train     (several local workers)

Writes (the chief only, when several workers train: the others save to a scratch directory)
- models/trained/: save_pretrained output, the tokenizer, qa_windows.json (the windows it
  was trained on, read by evaluate, export and evaluate_model), training_run.json (MLflow run id);
- metrics/train.json: final loss, wall time, throughput (DVC metrics);
- plots/train/steps.csv, plots/train/epochs.csv: training curves (DVC plots).

Every train.backup_every_steps steps it backs the training up in .train_backup/<inputs hash>/
(gitignored, not a DVC output): a run stopped by SIGTERM (after a backup of the step it was on),
a crash or SIGKILL resumes from the backup when the stage runs again with the same inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.backup import TrainingBackup
from pipeline.qa.batching import FeatureTable
from pipeline.qa.modeling import checkpoint_fingerprint, checkpoint_source, load_tokenizer, write_windows
from pipeline.qa.training import (MULTI_WORKER, batch_rows, build_training_model, make_backup_callback,
                                  make_curves_callback, make_dataset, make_snapshot_callback, make_strategy,
                                  report_loss_sums, steps_per_epoch, workers_agree)
from pipeline.runtime import tracking
from pipeline.runtime.config import PipelineConfig, flatten, load_config
from pipeline.runtime.errors import Interrupted, PipelineError, deferred_interrupts, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, dvc_md5, read_json, write_csv, write_json
from pipeline.runtime.lineage import (BUILT_WITH_FILE_NAME, MD5_SUFFIX, check_built_with, content_inputs,
                                      read_built_with, tokenized_inputs)
from pipeline.runtime.paths import (EPOCHS_PLOT_FILE, PARAMS_FILE, SNAPSHOT_FILE_NAME, STEPS_PLOT_FILE,
                                    SUMMARY_FILE_NAME, TOKENIZED_DIR, TRAIN_BACKUP_DIR_NAME, TRAIN_METRICS_FILE,
                                    TRAINED_DIR, stage_code_deps)


def training_inputs_hash(cfg: PipelineConfig, tokenized_dir: Path, checkpoint_md5: str) -> str:
    """sha256 over everything the train stage depends on: its params, the checkpoint's content,
    the tokenized train split and its code (the .py deps dvc.yaml declares for it). Equal
    hashes mean equal training inputs, across runs and machines."""
    digest = hashlib.sha256()
    params = {"model.checkpoint": cfg.model.checkpoint, "checkpoint_md5": checkpoint_md5,
              "tokenize.max_length": cfg.tokenize.max_length, "train": asdict(cfg.train)}
    digest.update(json.dumps(params, sort_keys=True).encode())
    for path in sorted((tokenized_dir / "train").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    for path in stage_code_deps("train"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def backup_root() -> Path:
    """<repo>/.train_backup ($DVC_ROOT for a queued experiment's temp copy: its backup outlives it)."""
    return tracking.repo_root() / TRAIN_BACKUP_DIR_NAME


def train(cfg: PipelineConfig, tokenized_dir: Path = TOKENIZED_DIR, out_dir: Path = TRAINED_DIR,
          backups: Path | None = None, snapshots: Path | None = None, snapshot_every_steps: int = 0) -> dict[str, Any]:
    # The strategy first: a MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
    placement = make_strategy(cfg.train.strategy, cfg.train.deterministic)
    chief = placement.is_chief
    say = print if chief else (lambda *a, **k: None)
    say(placement.describe(), flush=True)
    if snapshots is not None and placement.kind == MULTI_WORKER:
        raise PipelineError("--snapshots: model snapshots are taken by single-process training only (saving is "
                            "collective across workers); run the stage without --snapshots, or in one process")

    import tensorflow as tf
    from datasets import load_from_disk

    if not (tokenized_dir / "dataset_dict.json").is_file():
        raise PipelineError(f"{tokenized_dir}: no tokenized data; run the tokenize stage first")
    checkpoint_md5 = checkpoint_fingerprint(cfg.model.checkpoint)["md5"]
    check_built_with(read_built_with(tokenized_dir), tokenized_inputs(cfg, checkpoint_md5), tokenized_dir)
    tokenizer = load_tokenizer(cfg.model.checkpoint)
    read = {**content_inputs(tokenized_dir), f"model.checkpoint{MD5_SUFFIX}": checkpoint_md5}
    train_split = load_from_disk(str(tokenized_dir))["train"]
    table = FeatureTable.from_dataset(train_split, pad_token_id=tokenizer.pad_token_id or 0)
    n_features = len(table)
    per_epoch = steps_per_epoch(n_features, cfg.train.batch_size)
    total_steps = per_epoch * cfg.train.epochs
    rows = batch_rows(table, cfg)

    # A backup of other training inputs is never resumed (and is removed); one of these inputs is.
    inputs_hash = training_inputs_hash(cfg, tokenized_dir, checkpoint_md5)
    backup = TrainingBackup(backups or backup_root(), inputs_hash)
    if chief:
        for note in backup.remove_stale():
            print(f"note: {note}", file=sys.stderr, flush=True)
    try:
        resume = backup.resume_point(per_epoch)
    except ValueError as err:
        resume = None
        if chief:
            backup.delete()
            print(f"note: {err}; removed it, training starts from step 0", file=sys.stderr, flush=True)
    if not workers_agree(placement, resume.step if resume else 0):
        raise PipelineError(
            f"the workers found different backups in {backup.dir} (this one: step {resume.step if resume else 0}): "
            f"put {TRAIN_BACKUP_DIR_NAME}/ on storage every worker shares (docs/distributed.md)")

    # Open the MLflow run first: if the store is unreachable we stop before training,
    # instead of training for an hour and losing the record. Only the chief records.
    client, run_id = None, None
    if chief:
        summary_file = tokenized_dir / SUMMARY_FILE_NAME
        data_summary = read_json(summary_file) if summary_file.is_file() else {}
        params = flatten(cfg)
        for split, info in data_summary.items():
            params[f"data_size.{split}.examples"] = info.get("examples")
            params[f"data_size.{split}.features"] = info.get("features")
        params["replicas"] = placement.strategy.num_replicas_in_sync
        params["workers"] = placement.num_workers
        tags = {"stage": "train", "training_inputs_hash": inputs_hash, **tracking.dvc_stage_tags()}
        previous_run = backup.owner_run_id() if resume else None
        if resume:
            tags.update({"resumed_at_step": str(resume.step), "resumed_from_run_id": previous_run or ""})
        client, run_id = tracking.start_run(cfg.mlflow.experiment_name, tracking.run_name(cfg), params, tags,
                                            entry_point="pipeline.train")
        backup.record_owner(run_id)
        print(f"MLflow run {run_id} in {tracking.tracking_uri()}")
        tracking.log_dataset(client, run_id, f"{tracking.data_label(cfg)}-train", dvc_md5(tokenized_dir),
                             tokenized_dir, "training",
                             {"questions": data_summary.get("train", {}).get("examples"), "features": n_features,
                              **{k: v for k, v in data_summary.get("train", {}).items() if k in ("revision", "fingerprint")}})
        # the checkpoint by content, beside the data: runs from other files under one name differ
        tracking.log_dataset(client, run_id, tracking.model_label(cfg.model.checkpoint), checkpoint_md5,
                             checkpoint_source(cfg.model.checkpoint), "checkpoint", {"checkpoint": cfg.model.checkpoint})
        if resume:
            interrupted = f"; interrupted MLflow run {previous_run}" if previous_run else ""
            print(f"resuming from the backup of step {resume.step}/{total_steps} (epoch {resume.epoch + 1}, "
                  f"batch {resume.batch}) in {backup.dir}{interrupted}", flush=True)

    tf.keras.utils.set_random_seed(cfg.train.seed)
    with placement.strategy.scope():
        model, schedule, policy = build_training_model(cfg.train, cfg.model.checkpoint, total_steps)
        report_loss_sums(model)

    interactive = sys.stdout.isatty() and chief
    curves = make_curves_callback(
        schedule, per_epoch, cfg.train.log_every_steps,
        on_log=(lambda metrics, step: tracking.log_metrics(client, run_id, metrics, step)) if chief
        else (lambda metrics, step: None),
        show_progress_lines=chief and not interactive, batch_rows=rows,
        resume_state=resume.state if resume else None,
    )
    # A SIGTERM stops at the end of the step under way, after a backup of it. Several workers
    # cannot agree on that step (a backup is collective), so there the last backup resumes.
    stop_on_signal = placement.kind != MULTI_WORKER
    backup_callback = make_backup_callback(
        backup, cfg.train.backup_every_steps, per_epoch, total_steps, placement, curves, resume,
        on_backup=lambda step: say(f"backup of step {step}/{total_steps} in {backup.dir}", flush=True),
        stop_on_signal=stop_on_signal,
    )
    start = resume.step if resume else 0

    def save_model_dir(directory: Path) -> None:  # the trained model's layout, for the output and the snapshots
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        write_windows(directory, cfg.tokenize.max_length, cfg.tokenize.stride, cfg.data.version_2_with_negative,
                      cfg.model.checkpoint, checkpoint_md5)
        write_json(directory / BUILT_WITH_FILE_NAME, read)  # the evaluate stage checks it

    def save_snapshot(step: int, info: dict) -> None:
        with atomic_output_dir(snapshots / f"step-{step:06d}") as tmp:
            save_model_dir(tmp)
            write_json(tmp / SNAPSHOT_FILE_NAME, {**info, "total_steps": total_steps, "resumed_at_step": start})
        say(f"snapshot of step {step}/{total_steps} in {snapshots / f'step-{step:06d}'}", flush=True)

    callbacks = [curves, backup_callback]
    snapshot_callback = None
    if snapshots is not None and chief:
        snapshot_callback = make_snapshot_callback(save_snapshot, per_epoch, total_steps, snapshot_every_steps,
                                                   clock=lambda: time.perf_counter() - started)
        callbacks.append(snapshot_callback)
    dataset = make_dataset(table, cfg, start // per_epoch, start % per_epoch, placement)
    started = time.perf_counter()
    try:
        with deferred_interrupts() if stop_on_signal else contextlib.nullcontext():
            model.fit(dataset, epochs=cfg.train.epochs, steps_per_epoch=per_epoch,
                      callbacks=callbacks, verbose=1 if interactive else 0)
    except Interrupted as stop:
        if stop.detail is None:  # stopped at once (several workers, or a second signal): the last backup resumes
            last = backup_callback.last_step
            stop.detail = (f"training stopped; the backup of step {last} in {backup.dir} resumes it: run the stage "
                           "again (dvc repro)" if last else "training stopped before any backup: run the stage again")
        raise
    seconds = time.perf_counter() - started - (snapshot_callback.seconds_saving if snapshot_callback else 0.0)
    # features trained by this process (a resumed run trains only what the backup had not)
    trained_rows = sum(int(rows(e)[start % per_epoch if e == start // per_epoch else 0:].sum())
                       for e in range(start // per_epoch, cfg.train.epochs))

    summary = {
        "loss": curves.epochs[-1]["loss"],
        "epochs": cfg.train.epochs,
        "steps": total_steps,
        "train_features": n_features,
        "train_seconds": round(seconds, 2),
        "features_per_second": round(trained_rows / seconds, 3),
        "precision_policy": policy,
    }
    if not chief:
        # Saving is collective: every worker saves, the others into a scratch directory.
        scratch = Path(tempfile.mkdtemp(prefix="train-worker-scratch-"))
        try:
            model.save_pretrained(str(scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"worker {placement.worker_index}: trained steps {start + 1}-{total_steps}; the chief writes the "
              "outputs and the MLflow run", flush=True)
        return summary
    with atomic_output_dir(out_dir) as tmp:
        save_model_dir(tmp)
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
    backup.delete()  # the outputs are written and recorded: nothing left to resume
    summary["resumed_at_step"] = start
    return summary


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS_FILE))
    parser.add_argument("--snapshots", type=Path, metavar="DIR",
                        help="also save the model at the end of every epoch into DIR/step-NNNNNN/ (with snapshot.json: "
                             "step, epoch, training seconds so far), for a quality-against-time curve; not a DVC "
                             "output (benchmarks/quality.py uses it)")
    parser.add_argument("--snapshot-every-steps", type=int, default=0, metavar="N",
                        help="with --snapshots: also every N global steps")
    args = parser.parse_args()
    if args.snapshot_every_steps < 0 or (args.snapshot_every_steps and args.snapshots is None):
        raise PipelineError(f"--snapshot-every-steps {args.snapshot_every_steps}: use a positive number of steps, "
                            "together with --snapshots DIR")
    cfg = load_config(args.params)
    summary = train(cfg, snapshots=args.snapshots, snapshot_every_steps=args.snapshot_every_steps)
    if "resumed_at_step" not in summary:  # a worker other than the chief: it said what it did
        return
    resumed = f" (resumed at step {summary['resumed_at_step']})" if summary["resumed_at_step"] else ""
    print(
        f"trained {summary['epochs']} epoch(s), {summary['steps']} steps{resumed} in {summary['train_seconds']} s "
        f"({summary['features_per_second']} features/s), final loss {summary['loss']:.4f}"
    )


if __name__ == "__main__":
    main()

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

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.backup import ResumePoint, TrainingBackup
from pipeline.qa.batching import FeatureTable
from pipeline.qa.callbacks import LossCurves, ModelSnapshots, ResumableBackup
from pipeline.qa.modeling import checkpoint_fingerprint, checkpoint_source, load_tokenizer, write_windows
from pipeline.qa.training import (
    MULTI_WORKER,
    Placement,
    batch_rows,
    build_training_model,
    make_dataset,
    make_strategy,
    report_loss_sums,
    steps_per_epoch,
    workers_agree,
)
from pipeline.runtime import tracking
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import Interrupted, PipelineError, deferred_interrupts, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, read_json, write_csv, write_json
from pipeline.runtime.lineage import (
    BUILT_WITH_FILE_NAME,
    MD5_SUFFIX,
    check_built_with,
    content_inputs,
    read_built_with,
    tokenized_inputs,
)
from pipeline.runtime.paths import (
    EPOCHS_PLOT_FILE,
    PARAMS_FILE,
    SNAPSHOT_FILE_NAME,
    STEPS_PLOT_FILE,
    SUMMARY_FILE_NAME,
    TOKENIZED_DIR,
    TRAINED_DIR,
    TRAIN_BACKUP_DIR_NAME,
    TRAIN_METRICS_FILE,
    require_output,
    stage_code_deps,
)


def training_inputs_hash(cfg: PipelineConfig, tokenized_dir: Path, checkpoint_md5: str) -> str:
    """sha256 over everything the train stage depends on: its params, the checkpoint's content,
    the tokenized train split and its code (the .py deps dvc.yaml declares for it). Equal
    hashes mean equal training inputs, across runs and machines."""
    digest = hashlib.sha256()
    params = {
        "model.checkpoint": cfg.model.checkpoint,
        "checkpoint_md5": checkpoint_md5,
        "tokenize.max_length": cfg.tokenize.max_length,
        "train": asdict(cfg.train),
    }
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


class Stopwatch:
    """Seconds since start(): the training clock (fit's, and the snapshots')."""

    def start(self) -> None:
        self._started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self._started


@dataclass
class TrainingData:
    """The tokenized train split as the steps below use it, and what it was built from."""

    table: FeatureTable
    tokenizer: Any
    checkpoint_md5: str
    lineage: dict[str, str]  # content md5s of the inputs, written beside the model (evaluate checks them)
    summary: dict  # data/tokenized/summary.json: questions and features per split
    per_epoch: int
    total_steps: int
    rows: Any  # epoch -> features per step (qa.training.batch_rows)


def train(
    cfg: PipelineConfig,
    tokenized_dir: Path = TOKENIZED_DIR,
    out_dir: Path = TRAINED_DIR,
    backups: Path | None = None,
    snapshots: Path | None = None,
    snapshot_every_steps: int = 0,
) -> dict[str, Any]:
    # The strategy first: a MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
    placement = make_strategy(cfg.train.strategy, cfg.train.deterministic)
    say = print if placement.is_chief else (lambda *a, **k: None)
    say(placement.describe(), flush=True)
    check_snapshots(snapshots, placement)
    data = load_training_data(cfg, tokenized_dir)
    backup, resume = find_resume_point(cfg, tokenized_dir, data, placement, backups)
    # the MLflow run before training: an unreachable store stops the stage before an hour of work
    client, run_id = (
        open_run(cfg, tokenized_dir, data, placement, backup, resume) if placement.is_chief else (None, None)
    )
    model, schedule, policy = build_model(cfg, placement, data.total_steps)
    start = resume.step if resume else 0  # the global step training starts from
    clock = Stopwatch()
    curves, backup_callback, snapshot_callback = make_callbacks(
        cfg,
        data,
        placement,
        schedule,
        backup,
        resume,
        client,
        run_id,
        snapshots,
        snapshot_every_steps,
        save=lambda directory: save_model_dir(model, cfg, data, directory),
        say=say,
        clock=clock,
    )
    seconds = fit(model, cfg, data, placement, start, clock, curves, backup_callback, snapshot_callback)
    summary = training_summary(cfg, data, start, seconds, curves, policy)
    if not placement.is_chief:
        save_on_worker(model, placement, start, data.total_steps)
        return summary
    write_outputs(model, cfg, data, out_dir, run_id, summary, curves)
    tracking.finish_training_run(
        client, run_id, summary, curves.steps, [STEPS_PLOT_FILE, EPOCHS_PLOT_FILE], PARAMS_FILE
    )
    backup.delete()  # the outputs are written and recorded: nothing left to resume
    return {**summary, "resumed_at_step": start}


def check_snapshots(snapshots: Path | None, placement: Placement) -> None:
    if snapshots is not None and placement.kind == MULTI_WORKER:
        raise PipelineError(
            "--snapshots: model snapshots are taken by single-process training only (saving is "
            "collective across workers); run the stage without --snapshots, or in one process"
        )


def load_training_data(cfg: PipelineConfig, tokenized_dir: Path) -> TrainingData:
    """The train split, checked against what it was built from (params, checkpoint content)."""
    from datasets import load_from_disk

    require_output(tokenized_dir, "dataset_dict.json", "tokenized data")
    checkpoint_md5 = checkpoint_fingerprint(cfg.model.checkpoint)["md5"]
    check_built_with(read_built_with(tokenized_dir), tokenized_inputs(cfg, checkpoint_md5), tokenized_dir)
    tokenizer = load_tokenizer(cfg.model.checkpoint)
    table = FeatureTable.from_dataset(
        load_from_disk(str(tokenized_dir))["train"], pad_token_id=tokenizer.pad_token_id or 0
    )
    per_epoch = steps_per_epoch(len(table), cfg.train.batch_size)
    summary_file = tokenized_dir / SUMMARY_FILE_NAME
    return TrainingData(
        table=table,
        tokenizer=tokenizer,
        checkpoint_md5=checkpoint_md5,
        lineage={**content_inputs(tokenized_dir), f"model.checkpoint{MD5_SUFFIX}": checkpoint_md5},
        summary=read_json(summary_file) if summary_file.is_file() else {},
        per_epoch=per_epoch,
        total_steps=per_epoch * cfg.train.epochs,
        rows=batch_rows(table, cfg),
    )


def find_resume_point(
    cfg: PipelineConfig, tokenized_dir: Path, data: TrainingData, placement: Placement, backups: Path | None
) -> tuple[TrainingBackup, ResumePoint | None]:
    """The backup of these training inputs and where it resumes (None: from step 0). A backup of
    other inputs is never resumed, and is removed."""
    backup = TrainingBackup(backups or backup_root(), training_inputs_hash(cfg, tokenized_dir, data.checkpoint_md5))
    if placement.is_chief:
        for note in backup.remove_stale():
            print(f"note: {note}", file=sys.stderr, flush=True)
    try:
        resume = backup.resume_point(data.per_epoch)
    except ValueError as err:
        resume = None
        if placement.is_chief:
            backup.delete()
            print(f"note: {err}; removed it, training starts from step 0", file=sys.stderr, flush=True)
    if not workers_agree(placement, resume.step if resume else 0):
        raise PipelineError(
            f"the workers found different backups in {backup.dir} (this one: step {resume.step if resume else 0}): "
            f"put {TRAIN_BACKUP_DIR_NAME}/ on storage every worker shares (docs/distributed.md)"
        )
    return backup, resume


def open_run(
    cfg: PipelineConfig,
    tokenized_dir: Path,
    data: TrainingData,
    placement: Placement,
    backup: TrainingBackup,
    resume: ResumePoint | None,
) -> tuple[Any, str]:
    """The chief's MLflow run (a resumed run links to the interrupted one)."""
    tags = {"training_inputs_hash": backup.inputs_hash, **tracking.dvc_stage_tags()}
    previous_run = backup.owner_run_id() if resume else None
    if resume:
        tags.update({"resumed_at_step": str(resume.step), "resumed_from_run_id": previous_run or ""})
    client, run_id = tracking.start_training_run(
        cfg,
        data.summary,
        len(data.table),
        {"replicas": placement.strategy.num_replicas_in_sync, "workers": placement.num_workers},
        tags,
        tokenized_dir,
        data.checkpoint_md5,
        checkpoint_source(cfg.model.checkpoint),
    )
    backup.record_owner(run_id)
    print(f"MLflow run {run_id} in {tracking.tracking_uri()}")
    if resume:
        interrupted = f"; interrupted MLflow run {previous_run}" if previous_run else ""
        print(
            f"resuming from the backup of step {resume.step}/{data.total_steps} (epoch {resume.epoch + 1}, "
            f"batch {resume.batch}) in {backup.dir}{interrupted}",
            flush=True,
        )
    return client, run_id


def build_model(cfg: PipelineConfig, placement: Placement, total_steps: int):
    """The compiled model in the strategy's scope, seeded. Returns (model, lr schedule, policy)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(cfg.train.seed)
    with placement.strategy.scope():
        model, schedule, policy = build_training_model(cfg.train, cfg.model.checkpoint, total_steps)
        report_loss_sums(model)
    return model, schedule, policy


def make_callbacks(
    cfg: PipelineConfig,
    data: TrainingData,
    placement: Placement,
    schedule,
    backup: TrainingBackup,
    resume: ResumePoint | None,
    client,
    run_id: str | None,
    snapshots: Path | None,
    snapshot_every_steps: int,
    save,
    say,
    clock: Stopwatch,
):
    """The loss curves (logged to MLflow by the chief), the resumable backup and, with
    `snapshots`, model snapshots. Returns (curves, backup callback, snapshot callback or None)."""
    chief, total = placement.is_chief, data.total_steps
    curves = LossCurves(
        schedule,
        data.per_epoch,
        cfg.train.log_every_steps,
        on_log=(lambda metrics, step: tracking.log_metrics(client, run_id, metrics, step))
        if chief
        else (lambda metrics, step: None),
        show_progress_lines=chief and not sys.stdout.isatty(),
        batch_rows=data.rows,
        resume_state=resume.state if resume else None,
    )
    # A SIGTERM stops at the end of the step under way, after a backup of it. Several workers
    # cannot agree on that step (a backup is collective), so there the last backup resumes.
    backup_callback = ResumableBackup(
        backup,
        cfg.train.backup_every_steps,
        data.per_epoch,
        total,
        placement,
        curves,
        resume,
        on_backup=lambda step: say(f"backup of step {step}/{total} in {backup.dir}", flush=True),
        stop_on_signal=placement.kind != MULTI_WORKER,
    )
    if snapshots is None or not chief:
        return curves, backup_callback, None
    start = resume.step if resume else 0

    def save_snapshot(step: int, info: dict) -> None:
        with atomic_output_dir(snapshots / f"step-{step:06d}") as tmp:
            save(tmp)
            write_json(tmp / SNAPSHOT_FILE_NAME, {**info, "total_steps": total, "resumed_at_step": start})
        say(f"snapshot of step {step}/{total} in {snapshots / f'step-{step:06d}'}", flush=True)

    return (
        curves,
        backup_callback,
        ModelSnapshots(save_snapshot, data.per_epoch, total, snapshot_every_steps, clock=clock.seconds),
    )


def fit(
    model,
    cfg: PipelineConfig,
    data: TrainingData,
    placement: Placement,
    start: int,
    clock: Stopwatch,
    curves,
    backup_callback,
    snapshots,
) -> float:
    """Train from global step `start`; returns the training seconds (snapshot saving excluded)."""
    dataset = make_dataset(data.table, cfg, start // data.per_epoch, start % data.per_epoch, placement)
    interactive = sys.stdout.isatty() and placement.is_chief
    callbacks = [c for c in (curves, backup_callback, snapshots) if c is not None]
    clock.start()
    try:
        with deferred_interrupts() if placement.kind != MULTI_WORKER else contextlib.nullcontext():
            model.fit(
                dataset,
                epochs=cfg.train.epochs,
                steps_per_epoch=data.per_epoch,
                callbacks=callbacks,
                verbose=1 if interactive else 0,
            )
    except Interrupted as stop:
        if stop.detail is None:  # stopped at once (several workers, or a second signal): the last backup resumes
            last = backup_callback.last_step
            stop.detail = (
                f"training stopped; the backup of step {last} in {backup_callback.backup.dir} resumes it: "
                "run the stage again (dvc repro)"
                if last
                else "training stopped before any backup: run the stage again"
            )
        raise
    return clock.seconds() - (snapshots.seconds_saving if snapshots is not None else 0.0)


def training_summary(
    cfg: PipelineConfig, data: TrainingData, start: int, seconds: float, curves, policy: str
) -> dict[str, Any]:
    """metrics/train.json: throughput counts the features this process trained (a resumed run
    trains only what the backup had not)."""
    per_epoch = data.per_epoch
    trained_rows = sum(
        int(data.rows(e)[start % per_epoch if e == start // per_epoch else 0 :].sum())
        for e in range(start // per_epoch, cfg.train.epochs)
    )
    return {
        "loss": curves.epochs[-1]["loss"],
        "epochs": cfg.train.epochs,
        "steps": data.total_steps,
        "train_features": len(data.table),
        "train_seconds": round(seconds, 2),
        "features_per_second": round(trained_rows / seconds, 3),
        "precision_policy": policy,
    }


def save_model_dir(model, cfg: PipelineConfig, data: TrainingData, directory: Path) -> None:
    """The trained model's layout (the output and the snapshots): save_pretrained model and
    tokenizer, the windows it was trained on, and the content of what it was built from."""
    model.save_pretrained(str(directory))
    data.tokenizer.save_pretrained(str(directory))
    write_windows(
        directory,
        cfg.tokenize.max_length,
        cfg.tokenize.stride,
        cfg.data.version_2_with_negative,
        cfg.model.checkpoint,
        data.checkpoint_md5,
    )
    write_json(directory / BUILT_WITH_FILE_NAME, data.lineage)  # the evaluate stage checks it


def save_on_worker(model, placement: Placement, start: int, total_steps: int) -> None:
    """Saving is collective: every worker saves, the others than the chief into a scratch directory."""
    scratch = Path(tempfile.mkdtemp(prefix="train-worker-scratch-"))
    try:
        model.save_pretrained(str(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"worker {placement.worker_index}: trained steps {start + 1}-{total_steps}; the chief writes the "
        "outputs and the MLflow run",
        flush=True,
    )


def write_outputs(
    model, cfg: PipelineConfig, data: TrainingData, out_dir: Path, run_id: str, summary: dict, curves
) -> None:
    """models/trained/ (atomically, with the MLflow run id), metrics/train.json and the curves."""
    with atomic_output_dir(out_dir) as tmp:
        save_model_dir(model, cfg, data, tmp)
        write_json(tmp / tracking.RUN_FILE_NAME, {"run_id": run_id, "tracking_uri": tracking.tracking_uri()})
    write_json(TRAIN_METRICS_FILE, summary)
    write_csv(STEPS_PLOT_FILE, curves.steps)
    write_csv(EPOCHS_PLOT_FILE, curves.epochs)


@stage_entry_point
def main() -> None:
    def snapshot_arguments(parser) -> None:
        parser.add_argument(
            "--snapshots",
            type=Path,
            metavar="DIR",
            help="also save the model at the end of every epoch into DIR/step-NNNNNN/ (with "
            "snapshot.json: step, epoch, training seconds so far), for a quality-against-time "
            "curve; not a DVC output (benchmarks/quality.py uses it)",
        )
        parser.add_argument(
            "--snapshot-every-steps",
            type=int,
            default=0,
            metavar="N",
            help="with --snapshots: also every N global steps",
        )

    cfg, args = stage_config(__doc__, snapshot_arguments)
    if args.snapshot_every_steps < 0 or (args.snapshot_every_steps and args.snapshots is None):
        raise PipelineError(
            f"--snapshot-every-steps {args.snapshot_every_steps}: use a positive number of steps, "
            "together with --snapshots DIR"
        )
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

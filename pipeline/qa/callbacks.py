"""The train stage's Keras callbacks: loss curves, the backup that makes a run resumable, and
model snapshots for a time-to-quality curve."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

import tensorflow as tf  # after pipeline/__init__.py, which sets TF_USE_LEGACY_KERAS

from pipeline.qa.backup import ResumePoint, TrainingBackup
from pipeline.qa.training import Placement, dropout_generators
from pipeline.runtime.errors import Interrupted, PipelineError, pending_interrupt


class LossCurves(tf.keras.callbacks.Callback):
    """Per-step and per-epoch loss (kept in memory in `steps` and `epochs`, passed to `on_log`
    for MLflow, printed as progress lines when `show_progress_lines`).

    Losses are per-feature means: each step's mean loss, read from the change in Keras' running
    sums, is weighted by its number of features (`batch_rows(epoch)`) in the loss of a window of
    steps and of an epoch. `state()` is what a backup records and `resume_state` what a resumed
    run starts from: the rows logged so far and the sums of the epoch under way, so the curves of
    a resumed run continue the interrupted one's, step numbers included.

    The running mean is loss_total / loss_count when qa.training.report_loss_sums added them
    (right on every strategy), else Keras' `loss`."""

    def __init__(
        self,
        schedule,
        steps_per_epoch: int,
        log_every: int,
        on_log: Callable[[dict, int], None],
        show_progress_lines: bool,
        batch_rows: Callable[[int], np.ndarray],
        resume_state: dict | None = None,
    ) -> None:
        super().__init__()
        self.schedule, self.steps_per_epoch, self.log_every = schedule, steps_per_epoch, log_every
        self.on_log, self.show_progress_lines, self.batch_rows = on_log, show_progress_lines, batch_rows
        resume = resume_state or {}
        self.steps: list[dict] = [dict(r) for r in resume.get("steps", [])]
        self.epochs: list[dict] = [dict(r) for r in resume.get("epochs", [])]
        self._resume = resume
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        # sums over the epoch so far (features and their losses), from a backup when resuming mid-epoch
        resume = self._resume if self._resume.get("epoch") == epoch else {}
        self._resume = {}
        self._epoch = epoch
        self._batch_rows = self.batch_rows(epoch)
        self._sum, self._rows = float(resume.get("epoch_sum", 0.0)), int(resume.get("epoch_rows", 0))
        self._log_sum, self._log_rows = float(resume.get("log_sum", 0.0)), int(resume.get("log_rows", 0))
        self._keras_total, self._keras_count = 0.0, 0.0  # Keras' sums since this process began the epoch

    def on_train_batch_end(self, batch, logs=None):
        batch = int(batch)  # Keras may pass a numpy integer
        n = batch + 1
        rows = int(self._batch_rows[batch])
        # this step's mean loss, from the change in Keras' running sums
        if "loss_count" in logs:
            total, count = float(logs["loss_total"]), float(logs["loss_count"])
        else:  # Keras' running mean over this process's part of the epoch, weighted by features
            count = self._keras_count + rows
            total = float(logs["loss"]) * count
        step_loss = (total - self._keras_total) / max(count - self._keras_count, 1e-12)
        self._keras_total, self._keras_count = total, count
        self._sum += step_loss * rows
        self._rows += rows
        if n % self.log_every == 0 or n == self.steps_per_epoch:
            self._log_window(n)
        if n == self.steps_per_epoch:  # here, not in on_epoch_end: a backup of this step must hold it
            row = {"epoch": self._epoch + 1, "loss": self._sum / max(self._rows, 1)}
            self.epochs.append(row)
            self.on_log({"epoch_loss": row["loss"]}, self._epoch + 1)

    def _log_window(self, n: int) -> None:
        window = (self._sum - self._log_sum) / max(self._rows - self._log_rows, 1)
        self._log_sum, self._log_rows = self._sum, self._rows
        step = self._epoch * self.steps_per_epoch + n
        lr = float(self.schedule(step - 1)) if callable(self.schedule) else float(self.schedule)
        self.steps.append({"step": step, "loss": window, "learning_rate": lr})
        self.on_log({"loss": window, "learning_rate": lr}, step)
        if self.show_progress_lines:
            print(f"epoch {self._epoch + 1} step {n}/{self.steps_per_epoch} loss {window:.4f} lr {lr:.2e}", flush=True)

    def state(self) -> dict:
        return {
            "epoch": self._epoch,
            "epoch_sum": self._sum,
            "epoch_rows": self._rows,
            "log_sum": self._log_sum,
            "log_rows": self._log_rows,
            "steps": [dict(r) for r in self.steps],
            "epochs": [dict(r) for r in self.epochs],
        }


class ResumableBackup(tf.keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, every `every` global steps, into `backup.dir`: the checkpoint
    (weights, optimizer, epoch and batch) on every worker (saving is collective; only the chief's
    is kept), plus, on the chief, the curves and dropout RNG states of the same step.

    On train begin it restores the checkpoint (Keras) and the dropout RNG states of `resume`.
    No backup is made at the last step (nothing would be left to resume). With stop_on_signal,
    a SIGTERM/SIGINT recorded by runtime.errors.deferred_interrupts stops training at the end
    of the current step, after a backup of that step, with Interrupted."""

    def __init__(
        self,
        backup: TrainingBackup,
        every: int,
        steps_per_epoch: int,
        total_steps: int,
        placement: Placement,
        curves: LossCurves,
        resume: ResumePoint | None,
        on_backup: Callable[[int], None],
        stop_on_signal: bool,
    ) -> None:
        super().__init__(str(backup.dir), save_freq=every, delete_checkpoint=False)
        self.backup, self.every, self.steps_per_epoch, self.total_steps = backup, every, steps_per_epoch, total_steps
        self.placement, self.curves, self.resume, self.on_backup = placement, curves, resume, on_backup
        self.stop_on_signal = stop_on_signal
        self.last_step = resume.step if resume else None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores weights, optimizer, epoch and batch
        states = (self.resume.state.get("dropout_rng") if self.resume else None) or []
        generators = dropout_generators(self.model)
        if states and len(states) != len(generators):
            raise PipelineError(
                f"{self.backup.dir}: the backup holds {len(states)} dropout RNG states, the model "
                f"has {len(generators)} dropout layers; delete the directory to start over"
            )
        for generator, state in zip(generators, states):
            generator.reset(np.asarray(state, dtype=np.int64))

    def on_train_batch_end(self, batch, logs=None):
        batch = int(batch)  # Keras may pass a numpy integer
        step = self._current_epoch * self.steps_per_epoch + batch + 1
        if step % self.every == 0:
            self.back_up(self._current_epoch, batch)
        if self.stop_on_signal and pending_interrupt() is not None:
            self.stop(step, self._current_epoch, batch)

    def back_up(self, epoch: int, batch: int) -> bool:
        step = epoch * self.steps_per_epoch + batch + 1
        if step >= self.total_steps or step == self.last_step:
            return False
        if self.placement.is_chief:
            state = self.curves.state()
            state["dropout_rng"] = [g.state.numpy().tolist() for g in dropout_generators(self.model)]
            self.backup.write_state(step, state)  # before the checkpoint: see pipeline.qa.backup
        self._training_state.back_up(epoch=epoch, batch=batch)
        self.last_step = step
        self.on_backup(step)
        return True

    def stop(self, step: int, epoch: int, batch: int) -> None:
        self.back_up(epoch, batch)
        if self.last_step:
            detail = (
                f"training stopped after step {step}/{self.total_steps}; the backup of step {self.last_step} "
                f"in {self.backup.dir} resumes it: run the stage again (dvc repro)"
            )
        else:
            detail = f"training stopped after step {step}/{self.total_steps}, before any backup: run the stage again"
        raise Interrupted(pending_interrupt(), detail)


class ModelSnapshots(tf.keras.callbacks.Callback):
    """Saves the model being trained at the end of every epoch and, with every_steps > 0, every
    that many global steps, through `save(step, info)`: the points of a time-to-quality curve, to
    be evaluated after training. Not at the last step (the trained model is the stage's output).
    info: step, epoch (fractional) and train_seconds, the training clock (`clock()`, seconds since
    training began) minus the time spent saving snapshots, which `seconds_saving` holds so the
    caller can take it out of its own wall time too."""

    def __init__(
        self,
        save: Callable[[int, dict], None],
        steps_per_epoch: int,
        total_steps: int,
        every_steps: int,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self.save, self.steps_per_epoch, self.total_steps = save, steps_per_epoch, total_steps
        self.every_steps, self.clock = every_steps, clock
        self.seconds_saving = 0.0
        self.saved: list[dict] = []
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + int(batch) + 1
        at_epoch_end = step % self.steps_per_epoch == 0
        if step >= self.total_steps or not (at_epoch_end or (self.every_steps and step % self.every_steps == 0)):
            return
        began = time.perf_counter()
        info = {
            "step": step,
            "epoch": round(step / self.steps_per_epoch, 4),
            "train_seconds": round(self.clock() - self.seconds_saving, 2),
        }
        self.save(step, info)
        self.saved.append(info)
        self.seconds_saving += time.perf_counter() - began

"""Resume after interruption, in one process on a tiny model: the backup callback (Keras'
BackupAndRestore plus the curves and dropout RNG states), the generator started at the saved
epoch and step, and the stop at a step boundary on SIGTERM. A resumed training ends with the
same weights and the same curves as an uninterrupted one. (tests/e2e/test_distributed_e2e.py does it
with real processes, SIGKILL and `dvc repro`.)"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from pipeline.qa.backup import TrainingBackup
from pipeline.qa.callbacks import LossCurves, ResumableBackup
from pipeline.qa.training import (
    ONE_DEVICE,
    Placement,
    batch_rows,
    dropout_generators,
    make_dataset,
    report_loss_sums,
    resumable_dropout,
    steps_per_epoch,
)
from pipeline.runtime.errors import Interrupted, deferred_interrupts
from tests.helpers.tiny_model import random_table, tiny_bert, tiny_config

N_FEATURES = 22  # batch 4: 6 steps per epoch, the last one of 2 features
EPOCHS = 2
EVERY = 2


class Crash(Exception):
    pass


def train_tiny(backup_dir, stop_at=None, how=None):
    """Train the tiny model for EPOCHS epochs with backups every EVERY steps into backup_dir,
    resuming from it when it holds a backup. stop_at: the global step after which to stop,
    `how`: "sigterm" (a real signal to this process) or "crash" (an exception)."""
    import tensorflow as tf
    from transformers import create_optimizer

    cfg = tiny_config(f"train.epochs={EPOCHS}", "train.log_every_steps=1")
    table = random_table(N_FEATURES)
    per_epoch = steps_per_epoch(N_FEATURES, cfg.train.batch_size)
    total = per_epoch * EPOCHS
    backup = TrainingBackup(backup_dir, "ab" * 32)
    resume = backup.resume_point(per_epoch)
    tf.keras.utils.set_random_seed(7)
    with resumable_dropout():
        model = tiny_bert(dropout=0.1)
    optimizer, schedule = create_optimizer(
        init_lr=1e-3, num_train_steps=total, num_warmup_steps=2, weight_decay_rate=0.01
    )
    model.compile(optimizer=optimizer)
    report_loss_sums(model)
    curves = LossCurves(
        schedule, per_epoch, 1, lambda m, s: None, False, batch_rows(table, cfg), resume.state if resume else None
    )
    placement = Placement(tf.distribute.get_strategy(), ONE_DEVICE, 0, 1)
    backups = []
    backup_cb = ResumableBackup(
        backup, EVERY, per_epoch, total, placement, curves, resume, on_backup=backups.append, stop_on_signal=True
    )

    class Stop(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch * per_epoch + batch + 1 == stop_at:
                if how == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    raise Crash()

    start = resume.step if resume else 0
    dataset = make_dataset(table, cfg, start // per_epoch, start % per_epoch)
    with deferred_interrupts():
        model.fit(dataset, epochs=EPOCHS, steps_per_epoch=per_epoch, callbacks=[curves, Stop(), backup_cb], verbose=0)
    return model, curves, resume, backups


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model, curves, resume, backups = train_tiny(tmp_path_factory.mktemp("whole") / "backup")
    assert resume is None and backups == [2, 4, 6, 8, 10]  # none at the last step: nothing left to resume
    return [w.numpy() for w in model.weights], curves.steps, curves.epochs


def assert_same_training(model, curves, uninterrupted):
    weights, steps, epochs = uninterrupted
    for mine, theirs in zip([w.numpy() for w in model.weights], weights):
        np.testing.assert_array_equal(mine, theirs)
    assert [r["step"] for r in curves.steps] == [r["step"] for r in steps] == list(range(1, 13))
    # curve values are rebuilt from Keras' float32 running means: equal to float32 rounding
    np.testing.assert_allclose([r["loss"] for r in curves.steps], [r["loss"] for r in steps], rtol=1e-5)
    np.testing.assert_allclose([r["loss"] for r in curves.epochs], [r["loss"] for r in epochs], rtol=1e-5)


def test_sigterm_backs_up_the_step_it_stopped_at_and_the_rerun_ends_with_the_same_weights(tmp_path, uninterrupted):
    with pytest.raises(Interrupted) as stop:
        train_tiny(tmp_path / "backup", stop_at=5, how="sigterm")
    assert stop.value.signum == signal.SIGTERM
    assert "stopped after step 5/12; the backup of step 5" in stop.value.detail
    model, curves, resume, backups = train_tiny(tmp_path / "backup")
    assert (resume.step, resume.epoch, resume.batch) == (5, 0, 5)
    assert backups == [6, 8, 10]
    assert_same_training(model, curves, uninterrupted)


def test_a_crash_resumes_from_the_last_backup_even_across_an_epoch_end(tmp_path, uninterrupted):
    with pytest.raises(Crash):
        train_tiny(tmp_path / "backup", stop_at=7, how="crash")  # backups at 2, 4, 6 (= the end of epoch 1)
    model, curves, resume, _ = train_tiny(tmp_path / "backup")
    assert (resume.step, resume.epoch, resume.batch) == (6, 1, 0)
    assert len(resume.state["epochs"]) == 1  # epoch 1's row was recorded with the backup of its last step
    assert_same_training(model, curves, uninterrupted)


def test_the_dropout_layers_draw_from_generators_a_backup_can_restore():
    with resumable_dropout():
        model = tiny_bert(dropout=0.1)
    assert len(dropout_generators(model)) == 7  # embeddings + 3 per layer


def test_a_stale_backup_of_other_inputs_is_removed_with_a_note(tmp_path):
    stale = TrainingBackup(tmp_path, "cd" * 32)
    stale.write_state(4, {"epoch": 0})
    (stale.dir / "chief").mkdir()
    notes = TrainingBackup(tmp_path, "ab" * 32).remove_stale()
    assert not stale.dir.exists()
    assert len(notes) == 1 and "at step 4" in notes[0] and "other training inputs" in notes[0]


def test_the_directory_of_a_run_stopped_before_any_backup_is_removed_without_a_note(tmp_path):
    TrainingBackup(tmp_path, "cd" * 32).record_owner("run-0")
    (tmp_path / ("cd" * 8) / "owner.json").write_text('{"run_id": "run-0", "pid": 999999999, "host": "elsewhere"}')
    assert TrainingBackup(tmp_path, "ab" * 32).remove_stale() == []
    assert not (tmp_path / ("cd" * 8)).exists()


def test_the_backup_of_a_live_training_with_other_inputs_is_left_alone(tmp_path):
    live = TrainingBackup(tmp_path, "cd" * 32)
    live.record_owner("run-1")
    (live.dir / "owner.json").write_text(
        (live.dir / "owner.json").read_text().replace(f'"pid": {os.getpid()}', f'"pid": {os.getppid()}')
    )
    assert TrainingBackup(tmp_path, "ab" * 32).remove_stale() == []
    assert live.dir.exists()


def test_the_state_file_keeps_the_two_last_steps_so_any_surviving_checkpoint_finds_its_own(tmp_path):
    backup = TrainingBackup(tmp_path, "ab" * 32)
    for step in (2, 4, 6):
        backup.write_state(step, {"epoch": 0, "at": step})
    import json

    assert sorted(json.loads((backup.dir / "resume_state.json").read_text())["states"]) == ["4", "6"]

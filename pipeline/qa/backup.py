"""The resumable backup of one training: where it lives, whether it may be resumed, where
training resumes.

A backup directory belongs to one set of training inputs (the stage passes a hash of params,
data and code), so a changed input never resumes a stale backup. It holds
- `chief/`: Keras' BackupAndRestore checkpoint (weights, optimizer, epoch and batch);
- `resume_state.json`: what the checkpoint does not hold, for the last two backups (the loss
  curves so far, the dropout RNG states), keyed by global step: it is written before the
  checkpoint, so whichever checkpoint survives a crash finds its state;
- `owner.json`: the tracking run and process that use the directory now (a resumed run links
  to the run it resumes; a live training's backup is never removed as stale).
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.runtime.files import read_json, write_json

CHECKPOINT_SUBDIR = "chief"  # BackupAndRestore's own layout: the chief writes <backup_dir>/chief
STATE_FILE = "resume_state.json"
OWNER_FILE = "owner.json"
KEY_LENGTH = 16  # hex digits of the inputs hash naming the directory


@dataclass
class ResumePoint:
    step: int  # global steps already trained (the backup was made after this many)
    epoch: int  # the epoch and batch training resumes at (0-based)
    batch: int
    state: dict[str, Any]  # what the callbacks recorded at that step (curves, RNG states)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingBackup:
    """The backup directory of one training, `<root>/<first 16 hex digits of inputs_hash>`."""

    def __init__(self, root: Path, inputs_hash: str) -> None:
        self.root = Path(root)
        self.inputs_hash = inputs_hash
        self.dir = self.root / inputs_hash[:KEY_LENGTH]

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / CHECKPOINT_SUBDIR

    def remove_stale(self) -> list[str]:
        """Remove the backups of other training inputs (they can never be resumed: resuming
        them would mix two trainings), except one a live process on this host is using.
        Returns one note per backup removed."""
        notes = []
        if not self.root.is_dir():
            return notes
        for other in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir):
            owner = self._read(other / OWNER_FILE)
            pid = owner.get("pid")
            if (
                owner.get("host") == socket.gethostname()
                and isinstance(pid, int)
                and pid != os.getpid()
                and _process_alive(pid)
            ):
                continue  # another training (other inputs) is running and backing up there
            step = self._last_step(other)
            had_checkpoint = (other / CHECKPOINT_SUBDIR).is_dir()
            shutil.rmtree(other, ignore_errors=True)
            if not had_checkpoint and step is None:
                continue  # a run that stopped before its first backup: nothing to ignore
            made = f" at step {step}" if step is not None else ""
            notes.append(
                f"ignored the training backup {other}{made}: it was made from other training inputs "
                f"(params, data or code) than this run's ({self.inputs_hash[:KEY_LENGTH]}); removed it"
            )
        return notes

    def resume_point(self, steps_per_epoch: int) -> ResumePoint | None:
        """Where training resumes, or None when there is nothing to resume. Reads the step
        from the checkpoint exactly as Keras will when it restores it. ValueError when the
        directory holds a checkpoint this module did not complete (the caller deletes it:
        Keras would otherwise restore it)."""
        import tensorflow as tf

        path = tf.train.latest_checkpoint(str(self.checkpoint_dir)) if self.checkpoint_dir.is_dir() else None
        if path is None:
            return None
        reader = tf.train.load_checkpoint(path)
        epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
        batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
        if epoch < 0 or batch < 0:
            return None
        step = epoch * steps_per_epoch + batch + 1
        state = self._read(self.dir / STATE_FILE).get("states", {}).get(str(step))
        if state is None:  # a checkpoint without its curves/RNG record (edited by hand?): not resumable exactly
            raise ValueError(f"{self.dir}: the checkpoint of step {step} has no record in {STATE_FILE}")
        return ResumePoint(step=step, epoch=step // steps_per_epoch, batch=step % steps_per_epoch, state=state)

    def write_state(self, step: int, state: dict[str, Any]) -> None:
        """Record the state of `step` (before its checkpoint is written), keeping the previous
        step's: the checkpoint on disk is always one of the two."""
        states = self._read(self.dir / STATE_FILE).get("states", {})
        keep = {k: v for k, v in states.items() if int(k) < step}
        last = max(keep, key=int) if keep else None
        record = {str(step): state, **({last: keep[last]} if last else {})}
        write_json(self.dir / STATE_FILE, {"inputs_hash": self.inputs_hash, "states": record})

    def owner_run_id(self) -> str | None:
        """The tracking run that used the directory last (the interrupted run a resumed one follows)."""
        return self._read(self.dir / OWNER_FILE).get("run_id")

    def record_owner(self, run_id: str) -> None:
        """Mark the directory as used by this process and tracking run."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / OWNER_FILE, {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()})

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()  # only when empty
        except OSError:
            pass

    def _last_step(self, directory: Path) -> int | None:
        steps = [int(k) for k in self._read(directory / STATE_FILE).get("states", {})]
        return max(steps) if steps else None

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

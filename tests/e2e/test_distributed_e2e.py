"""Real processes on the tiny config: resume after SIGKILL through `dvc repro`, SIGTERM's clean
stop with a backup, a stale backup ignored, and two workers on localhost
(MultiWorkerMirroredStrategy over TF_CONFIG on 127.0.0.1) against one process.

The module's project is a copy of the session's baseline with a learning rate and backups of its
own and no training outputs; each test trains in its own copy of it. The reference is one
uninterrupted `python -m pipeline.train` in another copy (outside DVC, so that DVC's run-cache
cannot restore that result in place of a resumed run).
"""

from __future__ import annotations

import csv
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.project import copy_project, git, run_cmd, update_conf

# One xdist worker (`--dist loadgroup`) runs the module, so its reference trains once.
pytestmark = pytest.mark.xdist_group("distributed-e2e")
# The tiny config at a learning rate at which 13 steps visibly lower the loss, with a backup every
# 2 steps (13 steps: 100 features of the 48 questions, batch 8).
CONF = {"train/cpu.yaml": {"learning_rate": 5.0e-4, "backup_every_steps": 2}}
TOTAL_STEPS = 13
OUTPUTS = ["models/trained", "metrics/train.json", "plots/train"]


def read_rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def weights(model_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(model_dir / "tf_model.h5", "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def clean(repo: Path) -> None:
    for path in OUTPUTS + [".train_backup"]:
        shutil.rmtree(repo / path, ignore_errors=True) if (repo / path).is_dir() else (repo / path).unlink(
            missing_ok=True
        )


def train_runs(repo: Path):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("squad-pipeline")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'train'") if experiment else []
    return client, {r.info.run_id: r for r in runs}


def env() -> dict:
    full = dict(os.environ)
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full['PATH']}"
    return full


class Watched:
    """A process whose merged output is read line by line in the background."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)[-4000:]}")

    def finish(self, timeout: float = 600) -> str:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        time.sleep(0.5)
        return "".join(self.lines)


def stage_process(root_pid: int, module: str = "pipeline.train") -> int:
    """The pid of the stage's python process below `root_pid`. DVC runs the stage command through
    $SHELL -c (/bin/sh when SHELL is unset, as in CI): dash does not exec its last command, so the
    `sh -c "python -m pipeline.train"` between DVC and Python must not be taken for the stage (killing
    it would orphan a training that goes on and deletes its backup)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            argv = []
        if argv and Path(argv[0]).name.startswith("python") and module in argv[1:] and pid != root_pid:
            return pid
        todo.extend(children.get(pid, []))
    raise AssertionError(f"no python -m {module} process below {root_pid}")


@pytest.fixture(scope="module")
def prepared(baseline_project, tmp_path_factory) -> Path:
    folder = copy_project(baseline_project, tmp_path_factory.mktemp("distributed") / "project")
    repo = folder / "repo"
    update_conf(repo, CONF)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "lr 5e-4, a backup every 2 steps")
    clean(repo)
    return folder


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    """One uninterrupted single-process training, kept aside."""
    repo = copy_project(prepared, tmp_path_factory.mktemp("reference") / "project") / "repo"
    out = run_cmd([sys.executable, "-m", "pipeline.train"], repo)
    assert "resuming" not in out.stdout and not (repo / ".train_backup").exists()  # deleted after success
    keep = tmp_path_factory.mktemp("reference")
    for path in OUTPUTS:
        (shutil.copytree if (repo / path).is_dir() else shutil.copy)(repo / path, keep / Path(path).name)
    return keep


@pytest.fixture()
def clean_repo(prepared, tmp_path):
    """This test's own copy of the module's project (no training outputs)."""
    folder = copy_project(prepared, tmp_path / "project")
    yield folder / "repo"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_train_stage_killed_mid_epoch_resumes_at_its_backup_and_ends_as_if_never_stopped(clean_repo, reference):
    repo = clean_repo
    _, before = train_runs(repo)
    first = Watched(["dvc", "repro", "train"], repo)
    first.wait_for(r"backup of step 4/13 in .*\.train_backup")
    victim = stage_process(first.proc.pid)
    os.kill(victim, signal.SIGKILL)  # nothing in the process can react: no backup at this point
    log1 = first.finish()
    assert first.proc.returncode != 0
    backups = [int(s) for s in re.findall(r"backup of step (\d+)/13", log1)]
    assert backups[-1] == 4 and backups == [2, 4]
    _, runs = train_runs(repo)
    killed = set(runs) - set(before)
    assert len(killed) == 1 and runs[killed.pop()].info.status == "RUNNING"  # SIGKILL: left RUNNING
    killed_id = next(iter(set(runs) - set(before)))

    second = run_cmd(["dvc", "repro", "train"], repo)
    log2 = second.stdout + second.stderr
    assert f"resuming from the backup of step 4/{TOTAL_STEPS} (epoch 1, batch 4)" in log2
    assert f"interrupted MLflow run {killed_id}" in log2
    progress = [int(s) for s in re.findall(r"epoch 1 step (\d+)/13", log2)]
    assert progress == [6, 8, 10, 12, 13]  # the resumed process trained steps 5..13 only
    assert "13 steps (resumed at step 4)" in log2
    assert not (repo / ".train_backup").exists()  # deleted after the successful run

    # the same steps, the same curves, the same weights as the uninterrupted run
    metrics = (repo / "metrics/train.json").read_text()
    assert '"steps": 13' in metrics
    resumed_steps, reference_steps = read_rows(repo / "plots/train/steps.csv"), read_rows(reference / "train/steps.csv")
    assert [r["step"] for r in resumed_steps] == [r["step"] for r in reference_steps] == [2, 4, 6, 8, 10, 12, 13]
    np.testing.assert_allclose([r["loss"] for r in resumed_steps], [r["loss"] for r in reference_steps], rtol=1e-5)
    np.testing.assert_allclose(
        [r["loss"] for r in read_rows(repo / "plots/train/epochs.csv")],
        [r["loss"] for r in read_rows(reference / "train/epochs.csv")],
        rtol=1e-5,
    )
    resumed_weights, reference_weights = weights(repo / "models/trained"), weights(reference / "trained")
    assert resumed_weights.keys() == reference_weights.keys()
    worst = max(float(np.abs(resumed_weights[k] - reference_weights[k]).max()) for k in reference_weights)
    assert worst <= 1e-6, worst

    # MLflow: the killed run closed KILLED, the resumed one links to it and continues its steps
    client, runs = train_runs(repo)
    assert runs[killed_id].info.status == "KILLED"
    resumed = [r for r in runs.values() if r.data.tags.get("resumed_from_run_id") == killed_id]
    assert len(resumed) == 1 and resumed[0].data.tags["resumed_at_step"] == "4"
    assert resumed[0].info.status == "FINISHED"
    # (the final summary logs `loss` at the last step once more)
    assert sorted({m.step for m in client.get_metric_history(resumed[0].info.run_id, "loss")}) == [6, 8, 10, 12, 13]
    assert [m.step for m in client.get_metric_history(killed_id, "loss")][:2] == [2, 4]


def test_sigterm_stops_after_a_backup_with_one_line_and_a_stale_backup_is_ignored(clean_repo):
    repo = clean_repo
    _, before = train_runs(repo)
    stage = Watched([sys.executable, "-m", "pipeline.train"], repo)
    stage.wait_for(r"backup of step 2/13")
    stage.proc.send_signal(signal.SIGTERM)
    log = stage.finish(timeout=300)
    assert stage.proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    match = re.fullmatch(
        r"error: stopped by SIGTERM; training stopped after step (\d+)/13; the backup of step (\d+) "
        r"in (\S+) resumes it: run the stage again \(dvc repro\)",
        last,
    )
    assert match, last
    stopped, backed_up, backup_dir = int(match[1]), int(match[2]), Path(match[3])
    assert stopped == backed_up >= 2  # a backup of the very step it stopped at
    assert (backup_dir / "chief" / "checkpoint").is_file()
    assert f'"{stopped}"' in (backup_dir / "resume_state.json").read_text()
    _, runs = train_runs(repo)
    interrupted = [runs[i] for i in set(runs) - set(before)]
    assert [r.info.status for r in interrupted] == ["KILLED"]  # the run SIGTERM stopped, closed as such

    # other training inputs: the backup is stale, ignored with a line saying so, and removed
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("seed: 42", "seed: 43"))
    try:
        out = run_cmd([sys.executable, "-m", "pipeline.train"], repo)
    finally:
        (repo / "params.yaml").write_text(params)
    assert (
        f"note: ignored the training backup {backup_dir} at step {stopped}: it was made from other training "
        f"inputs (params, data or code) than this run's" in out.stderr
    )
    assert "resuming" not in out.stdout
    assert not backup_dir.exists()


def test_two_workers_on_localhost_train_like_one_process_and_only_the_chief_writes(clean_repo, reference, tmp_path):
    repo = clean_repo
    _, before = train_runs(repo)
    scratch = Path(os.environ["TMPDIR"])
    scratch_before = set(scratch.glob("train-worker-scratch-*"))
    out = run_cmd(
        [sys.executable, "-m", "pipeline.launch", "--workers", "2", "--", "python", "-m", "pipeline.train"],
        repo,
        timeout=900,
    )
    log = out.stdout + out.stderr
    assert "training on 2 replica(s) (multi_worker, worker 0 of 2)" in log
    assert "[worker 1] worker 1: trained steps 1-13; the chief writes the outputs and the MLflow run" in log
    assert re.search(r"^trained 1 epoch\(s\), 13 steps", out.stdout, re.M)
    assert "AUTO" not in log and "auto_shard" not in log.lower()  # no auto-sharding fallback warnings

    # one MLflow run, written by the chief, which alone wrote the outputs
    client, runs = train_runs(repo)
    new = set(runs) - set(before)
    assert len(new) == 1
    run = runs[new.pop()]
    assert run.data.params["replicas"] == "2" and run.data.params["workers"] == "2"
    assert f'"run_id": "{run.info.run_id}"' in (repo / "models/trained/training_run.json").read_text()
    assert not list(repo.glob("models/.trained*")) and set(scratch.glob("train-worker-scratch-*")) == scratch_before
    assert not (repo / ".train_backup").exists()

    # the loss falls, and ends close to one process's on the same global batches
    steps = read_rows(repo / "plots/train/steps.csv")
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12, 13]
    assert steps[4]["loss"] < steps[0]["loss"] - 0.5 and steps[5]["loss"] < steps[0]["loss"] - 0.5
    final = float(re.search(r'"loss": ([\d.]+)', (repo / "metrics/train.json").read_text())[1])
    single = float(re.search(r'"loss": ([\d.]+)', (reference / "train.json").read_text())[1])
    # Tolerance: with dropout switched off the two agree to float rounding (tests/unit/test_training_distributed.py);
    # here each worker draws its own dropout masks, which moves a 13-step epoch's mean loss by a few percent.
    assert abs(final - single) <= 0.05 * single, (final, single)

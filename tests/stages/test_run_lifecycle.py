"""No orphaned MLflow runs: a stage that fails closes its run as FAILED, one stopped by SIGTERM
or Ctrl-C as KILLED, and a run left RUNNING by a process that died (SIGKILL) is closed as
KILLED the next time a stage of the repo starts a run. Real sqlite store, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline.runtime import tracking

STAGE = """
import sys, time
from pipeline.runtime import tracking
from pipeline.runtime.errors import PipelineError, stage_entry_point

@stage_entry_point
def main():
    client, run_id = tracking.start_run("lifecycle", "train", {"a": 1}, {})
    print(run_id, flush=True)
    if sys.argv[1] == "error":
        raise PipelineError("params.yaml: train.epochs=0 is invalid: use at least 1 epoch")
    if sys.argv[1] == "finish":
        tracking.end_run(client, run_id)
        return
    time.sleep(120)

main()
"""


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return MlflowClient(uri)


def start(tmp_path, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE, mode],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


@pytest.mark.parametrize("mode,status", [("finish", "FINISHED"), ("error", "FAILED")])
def test_a_run_ends_finished_or_failed_with_its_stage(store, tmp_path, mode, status):
    proc, run_id = start(tmp_path, mode)
    proc.wait(timeout=120)
    assert proc.returncode == (0 if mode == "finish" else 1)
    assert store.get_run(run_id).info.status == status
    if mode == "error":
        assert (
            proc.stderr.read().strip().splitlines()[-1]
            == "error: params.yaml: train.epochs=0 is invalid: use at least 1 epoch"
        )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_closes_the_run_as_killed_with_one_line(store, tmp_path, signum):
    proc, run_id = start(tmp_path, "sleep")
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signum
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: stopped by {signal.Signals(signum).name}")
    assert store.get_run(run_id).info.status == "KILLED"


def test_a_run_left_running_by_a_killed_process_is_closed_at_the_next_start(store, tmp_path, capsys):
    proc, orphan = start(tmp_path, "sleep")
    proc.kill()  # SIGKILL: nothing in the process can react
    proc.wait(timeout=60)
    assert store.get_run(orphan).info.status == "RUNNING"
    client, new_run = tracking.start_run("lifecycle", "train", {}, {})
    assert store.get_run(orphan).info.status == "KILLED"
    assert "ended without closing the run" in store.get_run(orphan).data.tags["killed_reason"]
    assert f"MLflow run {orphan}" in capsys.readouterr().err
    tracking.end_run(client, new_run)
    alive, running = start(tmp_path, "sleep")  # a live run of the same repo is left alone
    try:
        client, another = tracking.start_run("lifecycle", "train", {}, {})
        assert store.get_run(running).info.status == "RUNNING"
        tracking.end_run(client, another)
    finally:
        alive.kill()
        alive.wait(timeout=60)

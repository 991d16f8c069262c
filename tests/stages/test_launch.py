"""pipeline.launch: N local workers with their TF_CONFIG on 127.0.0.1, the chief's exit code,
the others stopped when one fails. (A real two-worker training: tests/e2e/test_distributed_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

from pipeline.runtime.paths import PROJECT_ROOT

WORKER = """
import json, os, sys, time
tf_config = json.loads(os.environ["TF_CONFIG"])
index = tf_config["task"]["index"]
print(f"index {index} of {tf_config['cluster']['worker']}", flush=True)
mode = sys.argv[1]
if mode == "fail" and index == 1:
    sys.exit(3)
if mode == "fail":
    time.sleep(120)
"""


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.launch", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_each_worker_gets_its_tf_config_and_the_chiefs_output_passes_through():
    proc = launch("--workers", "3", "--", sys.executable, "-c", WORKER, "ok")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    chief = next(line for line in lines if line.startswith("index 0 of"))
    addresses = eval(chief.split(" of ", 1)[1])  # noqa: S307 (our own output)
    assert len(addresses) == 3 and len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert f"[worker 1] index 1 of {addresses}" in lines and f"[worker 2] index 2 of {addresses}" in lines


def test_a_failing_worker_stops_the_others_and_the_chiefs_code_is_returned():
    started = time.monotonic()
    proc = launch("--workers", "2", "--", sys.executable, "-c", WORKER, "fail")
    assert time.monotonic() - started < 60  # the chief did not sleep its 120 s
    assert proc.returncode == 143  # the chief, stopped by SIGTERM
    assert "launch: worker 1 exited with 3; stopping the other workers" in proc.stderr


def test_no_command_is_one_error_line():
    proc = launch("--workers", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no command: give it after --")

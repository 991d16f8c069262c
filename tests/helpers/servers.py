"""Real servers in tests (`mlflow server`, `mlflow models serve`): a free port on 127.0.0.1, a
process started in its own group, waited for until it answers, and always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_serve(port: int, alias: str = "candidate", **env_vars: str) -> tuple[list[str], dict]:
    """`make serve` of a registry alias as the README has a user run it: the command and its
    environment, with the venv *not* on PATH (the Makefile must put it there: MLflow execs uvicorn
    from PATH) and the repo's own MLflow store (no MLFLOW_TRACKING_URI); env_vars are added."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, **env_vars, "PATH": path}
    env.pop("MLFLOW_TRACKING_URI", None)
    return ["make", "serve", f"BIN={venv_bin}", "STAMP=", f"ALIAS={alias}", f"PORT={port}"], env


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log_path: Path, cwd: Path, env: dict, timeout_s: float = 240) -> Iterator[None]:
    """Start `cmd`, wait until GET `url` answers (or the process dies, or time runs out: the
    log's tail is the error), yield, then stop the whole process group (CLI and workers)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except urllib.error.HTTPError:
                    break  # it answered
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"{cmd[:3]} did not come up: {log_path.read_text()[-3000:]}") from None
                    time.sleep(1)
            yield
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

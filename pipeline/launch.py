"""Start N training workers on this machine, each with its TF_CONFIG (MultiWorkerMirroredStrategy).

    python -m pipeline.launch --workers 2 -- python -m pipeline.train [--params params.yaml]

Worker 0 is the chief: its output passes through as is, the others' lines are prefixed with
`[worker i]`. The exit code is the chief's; when any worker fails, the others are stopped
(SIGTERM, then SIGKILL) instead of waiting forever for it in a collective. SIGTERM or Ctrl-C to
the launcher is passed on to every worker. On a cluster the scheduler sets TF_CONFIG and runs
the same stage command on every node (docs/distributed.md); this command is for one
machine (and for testing the multi-worker path on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

STOP_GRACE_SECONDS = 20


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on `host` now (held together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


_OUTPUT = threading.Lock()


def _relay(stream, prefix: str) -> None:
    """Copy a worker's output to ours a whole line at a time, so that two workers' lines never
    mix within a line (a Python program writes a line and its newline in two writes when
    unbuffered, and another process could write in between)."""
    for line in iter(stream.readline, ""):
        with _OUTPUT:
            sys.stdout.write(f"{prefix}{line}")
            sys.stdout.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell reports it


def launch(workers: int, command: list[str], host: str = "127.0.0.1") -> int:
    addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
    print(f"launch: {workers} worker(s) on {', '.join(addresses)}: {' '.join(command)}", flush=True)
    procs: list[subprocess.Popen] = []
    relays = []
    for index in range(workers):
        # PYTHONUNBUFFERED: a Python worker writing to our pipe sends each line as it prints it
        env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), "PYTHONUNBUFFERED": "1"}
        # the chief's stdout passes through unprefixed and its stderr as is; the others' are
        # merged and prefixed with their index
        stderr = None if index == 0 else subprocess.STDOUT
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        prefix = "" if index == 0 else f"[worker {index}] "
        relay = threading.Thread(target=_relay, args=(proc.stdout, prefix), daemon=True)
        relay.start()
        procs.append(proc)
        relays.append(relay)

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            codes = [proc.poll() for proc in procs]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                first = failed[0]
                running = [p for p in procs if p.poll() is None]
                if running:
                    print(
                        f"launch: worker {first} exited with {exit_code(codes[first])}; stopping the other workers",
                        file=sys.stderr,
                        flush=True,
                    )
                _stop(procs)
                break
            if all(code == 0 for code in codes):
                break
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for relay in relays:
        relay.join(timeout=5)
    codes = [exit_code(proc.returncode) for proc in procs]
    # the chief's code; when the chief succeeded but another worker failed, that worker's
    return codes[0] or next((c for c in codes if c), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    parser.add_argument("--host", default="127.0.0.1", help="address the workers listen on (default 127.0.0.1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command every worker runs")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.workers < 1:
        print(f"error: --workers={args.workers} is invalid: use at least 1", file=sys.stderr)
        sys.exit(2)
    if not command:
        print(
            "error: no command: give it after --, e.g. python -m pipeline.launch --workers 2 -- "
            "python -m pipeline.train",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(launch(args.workers, command, args.host))


if __name__ == "__main__":
    main()

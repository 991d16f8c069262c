"""The one error type a stage reports to the user as a single clear line, and the stage
entry point that turns failures, SIGTERM and Ctrl-C into one line and a clean exit."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from typing import Callable, Iterator


class PipelineError(Exception):
    """Bad input or config: the message names what is wrong, where, and the fix."""


class Interrupted(BaseException):
    """SIGTERM (a scheduler preempting the job, `kill`) or SIGINT (Ctrl-C) arrived.

    `detail` replaces the default end of the one-line message (what was saved, how to go on)."""

    def __init__(self, signum: int, detail: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail


# Called with "FAILED" or "KILLED" when a stage stops early (an MLflow run to close, ...);
# a callback removes itself once its work finished normally.
_ON_ABORT: list[Callable[[str], None]] = []


def on_abort(callback: Callable[[str], None]) -> Callable[[], None]:
    """Register a callback for an early stop; returns the function that unregisters it."""
    _ON_ABORT.append(callback)
    return lambda: _ON_ABORT.remove(callback) if callback in _ON_ABORT else None


def _abort(status: str) -> None:
    while _ON_ABORT:
        callback = _ON_ABORT.pop()
        try:
            callback(status)
        except Exception as err:  # closing a record must not hide the reason we stopped
            print(f"note: could not record the stop ({type(err).__name__}: {err})", file=sys.stderr)


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


_PENDING: list[int] = []  # signals recorded inside deferred_interrupts()


def _record_interrupt(signum, frame) -> None:
    if _PENDING:  # a second signal: the user (or the scheduler) insists, stop now
        raise Interrupted(signum)
    _PENDING.append(signum)


def pending_interrupt() -> int | None:
    """The signal received inside deferred_interrupts() and not yet acted on, if any."""
    return _PENDING[0] if _PENDING else None


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Inside this block SIGTERM/SIGINT are recorded instead of raised, so that a training loop
    can stop at a step boundary (and back up its state) by checking pending_interrupt(); a
    second signal raises Interrupted at once. A signal still pending when the block ends
    raises Interrupted there. Main thread only (Python runs signal handlers there)."""
    previous = {s: signal.signal(s, _record_interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    _PENDING.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if _PENDING:
        raise Interrupted(_PENDING.pop())


def stage_entry_point(main: Callable[[], None]) -> Callable[[], None]:
    """Run a stage's main(): PipelineError -> one `error:` line and exit code 1; SIGTERM/SIGINT
    -> one line and exit code 128 + signal; any early stop runs the on_abort callbacks first."""

    @functools.wraps(main)
    def wrapper() -> None:
        previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            main()
        except PipelineError as err:
            _abort("FAILED")
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except Interrupted as stop:
            _abort("KILLED")
            detail = stop.detail or (
                "outputs of this stage were not written (earlier ones are intact); run it again to redo it"
            )
            print(f"error: stopped by {stop}; {detail}", file=sys.stderr)
            sys.exit(128 + stop.signum)
        except BaseException:
            _abort("FAILED")
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper

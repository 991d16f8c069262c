"""The one error type a stage reports to the user as a single clear line."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class PipelineError(Exception):
    """Bad input or config: the message names what is wrong, where, and the fix."""


def stage_entry_point(main: Callable[[], None]) -> Callable[[], None]:
    """Run a stage's main(), turning PipelineError into one line on stderr and exit code 1."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    return wrapper

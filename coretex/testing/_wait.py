"""Poll with a deadline: tests synchronize on state, never on sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value and return that value.

    Raise :class:`AssertionError` naming ``message`` (and the last probe error, if any) when the
    deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except AssertionError as exc:  # a probe may assert to explain what it saw
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}{detail}")
        time.sleep(interval)

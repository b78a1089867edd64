"""A circuit breaker for kernel calls: stop waiting on a kernel that keeps failing.

After ``failures_to_open`` failures in a row the circuit opens: calls fail at once (callers fail
closed, as for any unreachable kernel) instead of each spending the full deadline. After
``cooldown_s`` one trial call goes through (half-open); its success closes the circuit, its
failure opens it for another cool-down. PITFALLS: fail-closed engines took clusters down when
they were slow; a breaker keeps the failure fast and the reason clear.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from coretex.errors import KernelUnavailableError


class CircuitBreaker:
    def __init__(self, failures_to_open: int = 3, cooldown_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    def before_call(self, target: str) -> None:
        """Raise :class:`KernelUnavailableError` while the circuit is open (one trial after cool-down)."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if waited >= self.cooldown_s and not self._trial_running:
                self._trial_running = True  # half-open: let exactly one call find out
                return
            raise KernelUnavailableError(
                f"KERNEL_UNAVAILABLE: {target}: circuit open after {self._failures} failures "
                f"(next trial in {max(0.0, self.cooldown_s - waited):.1f}s)"
            )

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial_running = 0, None, False

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.failures_to_open:
                self._opened_at = self._clock()

"""The kernel client's circuit breaker, with a hand-driven clock."""

from __future__ import annotations

import pytest

from coretex.errors import KernelUnavailableError
from coretex.kernel.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_repeated_failures_and_fails_fast_with_a_clear_reason() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=3, cooldown_s=5, clock=clock)
    for _ in range(2):
        breaker.before_call("k:1")
        breaker.failed()
    assert not breaker.open
    breaker.before_call("k:1")
    breaker.failed()

    assert breaker.open
    with pytest.raises(KernelUnavailableError, match="KERNEL_UNAVAILABLE: k:1: circuit open after 3 failures"):
        breaker.before_call("k:1")


def test_half_open_lets_one_trial_through_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown_s=5, clock=clock)
    breaker.failed()
    clock.now += 5

    breaker.before_call("k")  # the trial
    with pytest.raises(KernelUnavailableError):
        breaker.before_call("k")  # only one at a time
    breaker.failed()  # trial failed: open for another cooldown
    with pytest.raises(KernelUnavailableError):
        breaker.before_call("k")
    clock.now += 5
    breaker.before_call("k")
    breaker.succeeded()

    assert not breaker.open
    breaker.before_call("k")  # closed again: calls flow


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures_to_open=2, cooldown_s=5, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert not breaker.open

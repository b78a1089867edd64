"""Which committed dispatches the executor still carries out (pure: no Redis needed)."""

from __future__ import annotations

from workflow_helpers import build, make_run

from coretex.engine.executor import still_wanted
from coretex.workflow.commands import DispatchJob
from coretex.workflow.decide import decide
from coretex.workflow.events import Cancel, JobResult, Start, TimerFired

FLAKY = {"id": "a", "type": "worker", "topic": "job.a", "retry": {"max_attempts": 2, "initial_backoff_sec": 5}}


def _dispatches(outcome_commands: list[object]) -> list[DispatchJob]:
    return [c for c in outcome_commands if isinstance(c, DispatchJob)]


def test_a_fresh_dispatch_is_wanted() -> None:
    outcome = decide(make_run(build([FLAKY])), Start(1.0))
    [dispatch] = _dispatches(outcome.commands)
    assert still_wanted(outcome.run, dispatch)


def test_an_abandoned_attempt_is_not_dispatched_again() -> None:
    started = decide(make_run(build([FLAKY])), Start(1.0))
    [first] = _dispatches(started.commands)
    failed = decide(started.run, JobResult(2.0, "a", 1, first.job_id, "failed", error_code="boom"))
    assert not still_wanted(failed.run, first)  # waiting for the retry: attempt 1 is over
    retried = decide(failed.run, TimerFired(7.0, "retry:a:2"))
    [second] = _dispatches(retried.commands)
    assert still_wanted(retried.run, second) and not still_wanted(retried.run, first)


def test_nothing_is_dispatched_for_a_run_that_ended() -> None:
    started = decide(make_run(build([FLAKY])), Start(1.0))
    [dispatch] = _dispatches(started.commands)
    cancelled = decide(started.run, Cancel(2.0, by="bob"))
    assert not still_wanted(cancelled.run, dispatch)

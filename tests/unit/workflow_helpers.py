"""Shared helpers for the pure workflow engine's unit and property tests.

``build`` parses a small workflow document; ``Driver`` feeds events to :func:`decide`, keeps the
event log and mirrors what the outside world would hold (outstanding jobs, active timers), and
checks the invariants every transition must keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coretex.workflow.commands import (
    CancelJob,
    Command,
    DispatchJob,
    EmitAlert,
    FinishRun,
    StartTimer,
    StopTimer,
    command_to_dict,
)
from coretex.workflow.decide import Outcome, decide, job_id_for
from coretex.workflow.definition import Workflow, parse_workflow
from coretex.workflow.events import Event, JobResult, Rerun, event_from_dict, event_to_dict
from coretex.workflow.run import STEP_FAILURES, Run, StepStatus, new_run, run_to_dict

RUN_ID = "run-1"
STARTED_AT = 1_000.0


def build(steps: Sequence[dict[str, Any]] | dict[str, Any], **document: Any) -> Workflow:
    """Parse a workflow with id ``wf`` and the given steps (list or map form)."""
    return parse_workflow({"id": "wf", "steps": steps, **document})


def make_run(workflow: Workflow, input: Any = None, **kwargs: Any) -> Run:
    return new_run(RUN_ID, workflow, tenant="acme", input={} if input is None else input,
                   created_at=STARTED_AT - 1, **kwargs)


def kinds(commands: Iterable[Command]) -> list[str]:
    return [type(c).__name__ for c in commands]


def of_type(commands: Iterable[Command], cls: type[Any]) -> list[Any]:
    return [c for c in commands if isinstance(c, cls)]


def dispatched_steps(commands: Iterable[Command]) -> list[str]:
    return [c.step_id for c in commands if isinstance(c, DispatchJob)]


def job(step_id: str, attempt: int = 1, item: int | None = None) -> str:
    return job_id_for(RUN_ID, step_id, attempt, item)


def result(at: float, step_id: str, status: str = "succeeded", attempt: int = 1, item: int | None = None,
           **kwargs: Any) -> JobResult:
    return JobResult(at, step_id, attempt, job(step_id, attempt, item), status, item=item, **kwargs)


def dep_done(run: Run, step_id: str) -> bool:
    """Whether ``step_id`` no longer holds its dependants back (the engine's documented rule)."""
    state = run.steps[step_id]
    if state.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
        return True
    return state.status in STEP_FAILURES and run.workflow.steps[step_id].on_failure == "continue"


@dataclass
class Driver:
    """Applies events one at a time and checks per-transition invariants."""

    run: Run
    log: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    jobs: dict[str, DispatchJob] = field(default_factory=dict)
    """Dispatched jobs not yet answered nor cancelled: job id -> dispatch."""
    answered: dict[str, DispatchJob] = field(default_factory=dict)
    """Jobs the engine accepted a result for, or cancelled."""
    all_dispatched: dict[str, DispatchJob] = field(default_factory=dict)
    dispatch_keys: list[tuple[str, int, int | None]] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    timers: dict[str, float] = field(default_factory=dict)
    alerts: list[EmitAlert] = field(default_factory=list)
    finished: list[FinishRun] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    initial: Run | None = None

    def __post_init__(self) -> None:
        self.initial = self.run

    def apply(self, event: Event) -> Outcome:
        before = run_to_dict(self.run)
        outcome = decide(self.run, event)
        assert run_to_dict(self.run) == before, f"decide mutated its input run on {event!r}"
        self.log.append(event)
        self.outcomes.append(outcome)
        if not outcome.applied:
            assert outcome.run is self.run and not outcome.commands and not outcome.timeline
            return outcome
        assert outcome.run.seq == self.run.seq + 1
        self.check_transition(outcome)
        self.run = outcome.run
        return outcome

    def check_transition(self, outcome: Outcome) -> None:
        run = outcome.run
        fired = getattr(self.log[-1], "timer_id", None)
        if fired is not None:  # a fired timer leaves the run without a StopTimer
            self.timers.pop(fired, None)
        if isinstance(self.log[-1], JobResult):
            accepted = self.log[-1].job_id
            if accepted in self.jobs:
                self.answered[accepted] = self.jobs.pop(accepted)
        if not isinstance(self.log[-1], Rerun):
            self.check_step_starts(self.run, run)
        finishes = 0
        for command in outcome.commands:
            self.commands.append(command)
            if isinstance(command, DispatchJob):
                key = (command.step_id, command.attempt, command.item)
                assert key not in self.dispatch_keys, f"{key} dispatched twice"
                self.dispatch_keys.append(key)
                assert command.job_id == job_id_for(run.run_id, *key)
                step = run.workflow.steps[command.step_id]
                assert 1 <= command.attempt <= step.retry.max_attempts
                blocking = [d for d in step.depends_on if not dep_done(run, d)]
                assert not blocking, f"{command.step_id} dispatched before {blocking} were done"
                self.jobs[command.job_id] = command
                self.all_dispatched[command.job_id] = command
            elif isinstance(command, CancelJob):
                assert command.job_id in self.all_dispatched, f"cancel of unknown job {command.job_id}"
                self.cancelled.add(command.job_id)
                if command.job_id in self.jobs:
                    self.answered[command.job_id] = self.jobs.pop(command.job_id)
            elif isinstance(command, StartTimer):
                self.timers[command.timer_id] = command.due
            elif isinstance(command, StopTimer):
                assert command.timer_id in self.timers, f"stop of unknown timer {command.timer_id}"
                del self.timers[command.timer_id]
            elif isinstance(command, EmitAlert):
                self.alerts.append(command)
            elif isinstance(command, FinishRun):
                finishes += 1
                self.finished.append(command)
                assert command.status == run.status.value
        assert finishes == (1 if run.terminal and not self.run.terminal else 0)
        ids = [c.id for c in outcome.commands]
        assert len(set(ids)) == len(ids), "command ids repeat within one outcome"
        assert self.timers == run.timers, "StartTimer/StopTimer commands disagree with the run's timers"

    @staticmethod
    def check_step_starts(before: Run, after: Run) -> None:
        """A step leaves ``pending`` only once its dependencies are done, blocked only by a blocking one."""
        for step_id, state in after.steps.items():
            if before.steps[step_id].status is not StepStatus.PENDING or state.status is StepStatus.PENDING:
                continue
            deps = after.workflow.steps[step_id].depends_on
            if state.status is StepStatus.BLOCKED:
                assert any(after.steps[d].status is StepStatus.BLOCKED
                           or (after.steps[d].status in STEP_FAILURES and not dep_done(after, d))
                           for d in deps), f"{step_id} blocked for nothing"
            elif state.status is not StepStatus.CANCELLED:
                blocking = [d for d in deps if not dep_done(after, d)]
                assert not blocking, f"{step_id} became {state.status.value} before {blocking} were done"
            else:
                assert after.terminal, f"{step_id} cancelled before it started in a live run"


def replay(initial: Run, log: Sequence[Event]) -> tuple[Run, list[Command], list[bool]]:
    """Rebuild a run from its event log (through the events' dict form, as the store keeps it)."""
    run = initial
    commands: list[Command] = []
    applied: list[bool] = []
    for event in log:
        outcome = decide(run, event_from_dict(event_to_dict(event)))
        run = outcome.run
        commands += outcome.commands
        applied.append(outcome.applied)
    return run, commands, applied


def commands_as_dicts(commands: Iterable[Command]) -> list[dict[str, Any]]:
    return [command_to_dict(c) for c in commands]

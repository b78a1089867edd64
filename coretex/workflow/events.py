"""What happens to a run: the events :func:`~coretex.workflow.decide.decide` is handed.

Every event carries ``at`` (seconds since the epoch), the only clock the engine reads. Events
serialize to plain dicts (:func:`event_to_dict`) for the run's event log, from which a run can be
rebuilt by replaying them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

JOB_OUTCOMES = ("succeeded", "failed", "timed_out", "cancelled", "denied")
JOB_PROGRESS_STATES = ("waiting_approval", "running", "attached")


@dataclass(frozen=True)
class Start:
    at: float


@dataclass(frozen=True)
class Rerun:
    """Starts a rerun: ``reused`` steps keep the earlier run's outputs (step id -> output fields)."""

    at: float
    reused: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """A step's job ended (``status`` is one of :data:`JOB_OUTCOMES`)."""

    at: float
    step_id: str
    attempt: int
    job_id: str
    status: str
    item: int | None = None
    output: Any = None
    output_ptr: str = ""
    error_code: str = ""
    error_message: str = ""
    simulated: bool = False
    """The output is a dry run's would-be dispatch, not a worker's."""
    decision: str = ""
    """The kernel's decision on the job (ALLOW, DENY ...) and its rule."""
    rule_id: str = ""
    retry_cap: int = -1
    """The policy's max_retries budget for the job (-1: none): the step retries at most that often."""


@dataclass(frozen=True)
class JobProgress:
    """A step's job changed without ending: parked for approval by policy, running again, or
    ``attached`` to an existing job (``job_id``) that its idempotency key matched (``replaces``)."""

    at: float
    step_id: str
    attempt: int
    job_id: str
    state: str
    item: int | None = None
    reason: str = ""
    decision: str = ""
    rule_id: str = ""
    replaces: str = ""


@dataclass(frozen=True)
class Approval:
    at: float
    step_id: str
    approver: str
    roles: tuple[str, ...]
    approve: bool
    reason: str = ""


@dataclass(frozen=True)
class TimerFired:
    at: float
    timer_id: str


@dataclass(frozen=True)
class Cancel:
    at: float
    by: str
    reason: str = ""


Event = Start | Rerun | JobResult | JobProgress | Approval | TimerFired | Cancel
_KINDS: dict[str, type[Any]] = {
    "start": Start, "rerun": Rerun, "job_result": JobResult, "job_progress": JobProgress,
    "approval": Approval, "timer_fired": TimerFired, "cancel": Cancel,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def event_kind(event: Event) -> str:
    return _NAMES[type(event)]


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"kind": event_kind(event), **asdict(event)}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    values = {k: v for k, v in data.items() if k != "kind"}
    if "roles" in values:
        values["roles"] = tuple(values["roles"])
    event: Event = _KINDS[data["kind"]](**values)
    return event

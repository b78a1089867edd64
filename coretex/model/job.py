"""A job's identity, metadata and lifecycle.

The lifecycle is CAP's (spec section 4.3) plus APPROVAL_REQUIRED for jobs parked by policy:

    PENDING ─► SCHEDULED ─► DISPATCHED ─► RUNNING ─► SUCCEEDED | FAILED | TIMEOUT
       │           ├─► DENIED      └──────────► (any terminal)
       │           ├─► APPROVAL_REQUIRED ─► SCHEDULED | DENIED
       │           └─► SUCCEEDED   a dry run no worker may simulate: recorded, never sent
       └─► FAILED (no pool, bad input)
    DISPATCHED | RUNNING ─► SCHEDULED      a retry: a new attempt after a failure, timeout or lost worker
    any non-terminal ─► CANCELLED

Other backward moves are refused; repeating the current state is an idempotent no-op. Every
dispatch is a new attempt (the record counts them); moves that belong to an attempt carry it, so
a late result of an abandoned attempt is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DENIED = "DENIED"
    TIMEOUT = "TIMEOUT"


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DENIED, JobState.TIMEOUT}
)

_S = JobState
_FORWARD: dict[JobState, frozenset[JobState]] = {
    _S.PENDING: frozenset({_S.SCHEDULED, _S.FAILED, _S.DENIED}),
    _S.SCHEDULED: frozenset({_S.APPROVAL_REQUIRED, _S.DISPATCHED, _S.DENIED, _S.FAILED, _S.SUCCEEDED}),
    _S.APPROVAL_REQUIRED: frozenset({_S.SCHEDULED, _S.DENIED}),
    _S.DISPATCHED: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.TIMEOUT, _S.SCHEDULED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.TIMEOUT, _S.SCHEDULED}),
}


def can_transition(current: JobState, target: JobState) -> bool:
    """Whether ``current -> target`` is a legal move (staying put is legal and idempotent)."""
    if current == target:
        return True
    if current in TERMINAL_STATES:
        return False
    if target == JobState.CANCELLED:
        return True
    return target in _FORWARD.get(current, frozenset())


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which ``target`` may be entered (excluding ``target`` itself)."""
    return frozenset(s for s in JobState if s != target and can_transition(s, target))


@dataclass(frozen=True)
class JobMeta:
    """CAP ``JobMetadata``: who asks, for what capability, with which risks and requirements."""

    tenant_id: str = "default"
    actor_id: str = ""
    actor_type: str = "service"
    idempotency_key: str = ""
    capability: str = ""
    risk_tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    pack_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    """What the store knows about one job; the gateway's job view is built from it."""

    job_id: str
    topic: str
    tenant_id: str
    state: JobState
    trace_id: str
    context_ptr: str
    created_at: float
    updated_at: float
    meta: JobMeta
    decision: str = ""
    rule_id: str = ""
    reason: str = ""
    policy_snapshot: str = ""
    pool: str = ""
    result_ptr: str = ""
    error_code: str = ""
    error_message: str = ""
    attempts: int = 0
    worker_id: str = ""
    execution_ms: int = 0
    timeout_s: int = 0
    """Deadline of each attempt, fixed at its dispatch (config timeouts, tightened by policy)."""
    max_retries: int = 0
    """Retries allowed after the first attempt, fixed at dispatch like ``timeout_s``."""
    requested_retries: int = -1
    """The submitter's own max_retries for this job (-1: the topic's from config)."""
    requested_timeout_s: int = 0
    """The submitter's own attempt deadline (0: the topic's from config)."""
    progress_pct: int = 0
    """Last progress the handler reported (0-100), with ``progress_message``."""
    progress_message: str = ""
    pending_reason: str = ""
    """Why a job that has not ended is not running: ``<code>: <detail>`` (approval, backoff, backpressure)."""
    run_id: str = ""
    """The workflow run this job is a step of ("" for a job submitted on its own)."""
    workflow_id: str = ""
    step_id: str = ""
    step_attempt: int = 0
    """The run's attempt number of the step (the run retries steps; the job itself does not retry)."""
    step_item: int = -1
    """The ``for_each`` item this job handles (-1: none)."""
    dispatch_env: str = ""
    """JSON of the JobRequest.env the current attempt was sent with (to send it again, unchanged)."""
    policy_max_retries: int = -1
    """The policy's ``max_retries`` budget for this job (-1: none); a workflow caps step retries by it."""
    dry_run: int = 0
    """1: a dry run; the job is dispatched only to a worker that declares dry-run support for its topic."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

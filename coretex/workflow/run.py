"""A run's state: its status, each step's status and attempts, active timers. Plain data.

:func:`run_to_dict` / :func:`run_from_dict` give the JSON the store keeps (the workflow itself is
kept once per version and named by ``workflow_id`` and ``workflow_version``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from coretex.workflow.definition import Workflow


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    BLOCKED = "blocked"


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT})
STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.TIMED_OUT,
                           StepStatus.SKIPPED, StepStatus.BLOCKED})
STEP_ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.WAITING})
STEP_FAILURES = frozenset({StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.TIMED_OUT})


@dataclass
class Slot:
    """One unit that runs as jobs with attempts: a step, or one item of a ``for_each`` step."""

    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    job_id: str = ""
    output: Any = None
    output_ptr: str = ""
    error_code: str = ""
    error_message: str = ""
    retry_pending: bool = False
    """Between attempts: the last one failed and the next waits for its backoff timer."""
    retry_at: float = 0.0
    """When the pending retry is due (meaningful only with ``retry_pending``)."""


@dataclass
class ItemRun(Slot):
    index: int = 0
    value: Any = None
    """The element of the ``for_each`` list this item handles."""


@dataclass
class StepRun(Slot):
    started_at: float = 0.0
    finished_at: float = 0.0
    reason: str = ""
    """Why it waits, was skipped or is blocked; the kernel's reason for a parked job."""
    decision: str = ""
    rule_id: str = ""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    items: list[ItemRun] | None = None
    reused_from: str = ""
    """The run whose output this step reuses (a rerun)."""

    def copy(self) -> StepRun:
        items = [replace(item) for item in self.items] if self.items is not None else None
        return replace(self, approvals=[dict(a) for a in self.approvals], items=items)


@dataclass
class Run:
    run_id: str
    workflow: Workflow
    tenant: str
    input: Any
    created_at: float
    status: RunStatus = RunStatus.PENDING
    started_by: str = ""
    trace_id: str = ""
    dry_run: bool = False
    steps: dict[str, StepRun] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)
    """Active timers of this run: id -> due time."""
    schemas: dict[str, Any] = field(default_factory=dict)
    """Registry schemas the workflow names, pinned when the run started: ref -> schema."""
    started_at: float = 0.0
    finished_at: float = 0.0
    output: Any = None
    error_code: str = ""
    error_message: str = ""
    rerun_of: str = ""
    rerun_from: str = ""
    idempotency_key: str = ""
    seq: int = 0
    """Events applied so far."""
    version: int = 0
    """The store's optimistic-concurrency version (not changed by ``decide``)."""

    @property
    def terminal(self) -> bool:
        return self.status in RUN_TERMINAL

    def copy(self) -> Run:
        return replace(self, steps={k: v.copy() for k, v in self.steps.items()}, timers=dict(self.timers))


def new_run(run_id: str, workflow: Workflow, *, tenant: str, input: Any, created_at: float, started_by: str = "",
            trace_id: str = "", dry_run: bool = False, schemas: Mapping[str, Any] | None = None,
            rerun_of: str = "", rerun_from: str = "", idempotency_key: str = "") -> Run:
    return Run(
        run_id=run_id, workflow=workflow, tenant=tenant, input=input, created_at=created_at, started_by=started_by,
        trace_id=trace_id, dry_run=dry_run, steps={step_id: StepRun() for step_id in workflow.steps},
        schemas=dict(schemas or {}), rerun_of=rerun_of, rerun_from=rerun_from, idempotency_key=idempotency_key,
    )


_RUN_SCALARS = [f.name for f in fields(Run) if f.name not in ("workflow", "steps", "timers", "status")]


def run_to_dict(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(run, name) for name in _RUN_SCALARS}
    out.update(status=run.status.value, workflow_id=run.workflow.id, workflow_version=run.workflow.version,
               timers=dict(run.timers), steps={k: _step_to_dict(v) for k, v in run.steps.items()})
    return out


def run_from_dict(data: Mapping[str, Any], workflow: Workflow) -> Run:
    values = {name: data[name] for name in _RUN_SCALARS if name in data}
    return Run(**values, workflow=workflow, status=RunStatus(data["status"]), timers=dict(data.get("timers", {})),
               steps={k: _step_from_dict(v) for k, v in data.get("steps", {}).items()})


_STEP_FIELDS = [f.name for f in fields(StepRun)]
_ITEM_FIELDS = [f.name for f in fields(ItemRun)]


def _step_to_dict(step: StepRun) -> dict[str, Any]:
    # Field by field rather than dataclasses.asdict, which deep-copies every output and approval
    # on each commit: the dict is serialized at once, so sharing the values is safe.
    out = {name: getattr(step, name) for name in _STEP_FIELDS}
    out["status"] = step.status.value
    if step.items is not None:
        out["items"] = [{**{name: getattr(item, name) for name in _ITEM_FIELDS}, "status": item.status.value}
                        for item in step.items]
    return out


def _step_from_dict(data: Mapping[str, Any]) -> StepRun:
    items = data.get("items")
    values = {k: v for k, v in data.items() if k not in ("status", "items")}
    return StepRun(**values, status=StepStatus(data["status"]),
                   items=[ItemRun(**{**i, "status": StepStatus(i["status"])}) for i in items] if items is not None
                   else None)

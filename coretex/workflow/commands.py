"""What a run asks the world to do after a transition is committed.

Commands are written to the run's outbox in the same atomic commit as its new state, then
executed and acknowledged; each carries an id unique within its run, and each effect is
idempotent by a natural id (the job id, the timer id), so a replayed command changes nothing.
Timer commands are applied inside the commit itself (they only touch the engine's own timer set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from coretex.workflow.definition import StepMeta


@dataclass(frozen=True)
class DispatchJob:
    id: str
    step_id: str
    attempt: int
    job_id: str
    topic: str
    input: Any
    meta: StepMeta
    item: int | None = None
    timeout_sec: float = 0
    dry_run: bool = False


@dataclass(frozen=True)
class CancelJob:
    id: str
    job_id: str
    reason: str


@dataclass(frozen=True)
class StartTimer:
    id: str
    timer_id: str
    due: float


@dataclass(frozen=True)
class StopTimer:
    id: str
    timer_id: str


@dataclass(frozen=True)
class EmitAlert:
    id: str
    level: str
    code: str
    message: str
    step_id: str = ""


@dataclass(frozen=True)
class FinishRun:
    id: str
    status: str


Command = DispatchJob | CancelJob | StartTimer | StopTimer | EmitAlert | FinishRun
_KINDS: dict[str, type[Any]] = {
    "dispatch_job": DispatchJob, "cancel_job": CancelJob, "start_timer": StartTimer, "stop_timer": StopTimer,
    "emit_alert": EmitAlert, "finish_run": FinishRun,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def command_kind(command: Command) -> str:
    return _NAMES[type(command)]


def command_to_dict(command: Command) -> dict[str, Any]:
    return {"kind": command_kind(command), **asdict(command)}


def command_from_dict(data: Mapping[str, Any]) -> Command:
    values = {k: v for k, v in data.items() if k != "kind"}
    if "meta" in values:
        meta = values["meta"]
        values["meta"] = StepMeta(**{**meta, "risk_tags": tuple(meta.get("risk_tags", ())),
                                     "requires": tuple(meta.get("requires", ()))})
    command: Command = _KINDS[data["kind"]](**values)
    return command

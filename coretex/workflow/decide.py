"""``decide(run, event) -> Outcome(run', commands, timeline)``: the whole engine, pure.

Deterministic: time comes only from the event, job ids are derived from (run, step, attempt,
item), jitter from a hash of the same. The input run is never modified.

Semantics:
- A step starts when every dependency succeeded or was skipped (or failed with
  ``on_failure: continue``, an explicit continue-on-error). Independent steps run in parallel.
- A failed, cancelled or timed-out dependency (or a blocked one) makes its dependants ``blocked``.
- A step's ``condition`` that is false makes it ``skipped``, a real status.
- A worker step's attempt that fails or times out is retried with backoff while its retry policy
  allows; then the step fails. With ``on_failure: fail_run`` (the default) the run fails and every
  still-running sibling job is cancelled.
- Run statuses: pending, running, waiting (only approvals or parked jobs left), succeeded,
  failed, cancelled, timed_out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from coretex.errors import CoretexError
from coretex.model.schema import SchemaViolation, find_violations
from coretex.protocol.pointers import ContextPointer
from coretex.workflow.commands import (
    CancelJob,
    Command,
    DispatchJob,
    EmitAlert,
    FinishRun,
    StartTimer,
    StopTimer,
)
from coretex.workflow.definition import Step, parse_instant
from coretex.workflow.events import Approval, Cancel, Event, JobProgress, JobResult, Rerun, Start, TimerFired
from coretex.workflow.expressions import ExpressionError, evaluate, evaluate_bool, render
from coretex.workflow.run import (
    STEP_ACTIVE,
    STEP_FAILURES,
    STEP_TERMINAL,
    ItemRun,
    Run,
    RunStatus,
    Slot,
    StepRun,
    StepStatus,
)

MAX_ITEMS = 1_000
"""Most items a ``for_each`` may fan out to: every item lives in the run's state, which each
transition reads and writes whole (a bigger fan-out belongs in a child workflow or a batch job)."""
RUN_TIMEOUT = "run_timeout"
_JOB_NAMESPACE = uuid.UUID("6f1c0b7e-2a55-4c7e-9a53-1f0e6f3c2d10")


class Outcome(NamedTuple):
    run: Run
    commands: list[Command]
    timeline: list[dict[str, Any]]
    applied: bool = True
    """False: the event changed nothing (stale, duplicate or refused); nothing to commit."""


def job_id_for(run_id: str, step_id: str, attempt: int, item: int | None = None) -> str:
    """The job id of one attempt, the same every time it is derived (dispatch is idempotent by it)."""
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{run_id}/{step_id}/{attempt}/{'' if item is None else item}"))


def backoff_s(step: Step, run_id: str, attempt: int, item: int | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, capped, plus deterministic jitter."""
    policy = step.retry
    base = min(policy.max_backoff_sec, policy.initial_backoff_sec * policy.multiplier ** (attempt - 1))
    if not policy.jitter:
        return float(base)
    digest = hashlib.sha256(f"{run_id}/{step.id}/{attempt}/{item}".encode()).digest()
    fraction = int.from_bytes(digest[:4], "big") / 2**32
    return float(base * (1 + policy.jitter * fraction))


@dataclass(frozen=True)
class ApprovalProblem:
    """Why an approver may not decide a step: ``no_step`` (no such approval step), ``not_waiting``
    (not waiting for a decision now) or ``refused`` (role, separation of duties, deciding twice)."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


def approval_problem(run: Run, step_id: str, approver: str, roles: tuple[str, ...]) -> ApprovalProblem | None:
    """Why ``approver`` may not decide approval step ``step_id`` now, or None if they may."""
    step = run.workflow.steps.get(step_id)
    state = run.steps.get(step_id)
    if step is None or state is None or step.type != "approval":
        return ApprovalProblem("no_step", f"run {run.run_id} has no approval step {step_id!r}")
    if state.status is not StepStatus.WAITING or run.terminal:
        where = f"; the run is {run.status.value}" if run.terminal else ""
        return ApprovalProblem("not_waiting", f"step {step_id} is {state.status.value}, not waiting for approval"
                                              f"{where}")
    if not set(roles) & set(step.approvers):
        return ApprovalProblem("refused", f"step {step_id} needs an approver with one of the roles "
                                          f"{', '.join(step.approvers)}")
    if approver == run.started_by and not step.allow_self_approval:
        return ApprovalProblem("refused", f"{approver} started run {run.run_id} and cannot approve its own step "
                                          "(separation of duties)")
    if any(a["by"] == approver for a in state.approvals):
        return ApprovalProblem("refused", f"{approver} already decided step {step_id}")
    return None


def decide(run: Run, event: Event) -> Outcome:
    decision = _Decision(run.copy(), event.at)
    handler = _HANDLERS[type(event)]
    if not handler(decision, event):
        return Outcome(run, [], [], applied=False)
    if not decision.run.terminal:
        decision.advance()
        decision.settle()
    decision.run.seq += 1
    return Outcome(decision.run, decision.commands, decision.timeline)


@dataclass
class _Decision:
    run: Run
    at: float
    commands: list[Command] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    # -- bookkeeping ---------------------------------------------------------------------------

    def command_id(self) -> str:
        return f"{self.run.run_id}:{self.run.seq}:{len(self.commands)}"

    def note(self, kind: str, step_id: str = "", **detail: Any) -> None:
        self.timeline.append({"type": kind, "at": self.at, **({"step": step_id} if step_id else {}), **detail})

    def start_timer(self, timer_id: str, due: float) -> None:
        self.run.timers[timer_id] = due
        self.commands.append(StartTimer(self.command_id(), timer_id, due))

    def stop_timer(self, timer_id: str) -> None:
        if self.run.timers.pop(timer_id, None) is not None:
            self.commands.append(StopTimer(self.command_id(), timer_id))

    def set_run_status(self, status: RunStatus, code: str = "", message: str = "") -> None:
        if self.run.status is status:
            return
        self.note("run_status", **{"from": self.run.status.value, "to": status.value},
                  **({"error_code": code, "error_message": message} if code else {}))
        self.run.status = status

    def set_step(self, step_id: str, status: StepStatus, **changes: Any) -> None:
        state = self.run.steps[step_id]
        previous = state.status
        if previous is not status and "reason" not in changes:
            state.reason = ""  # a reason describes one status (waiting, skipped ...), never the next
        for name, value in changes.items():
            setattr(state, name, value)
        if status in STEP_ACTIVE and not state.started_at:
            state.started_at = self.at
        if status in STEP_TERMINAL:
            state.finished_at = self.at
        state.status = status
        if previous is not status:
            detail = {k: v for k, v in changes.items() if k in ("reason", "error_code", "error_message", "output_ptr",
                                                                "reused_from", "decision", "rule_id")}
            self.note("step_status", step_id, **{"from": previous.value, "to": status.value}, **detail)

    def tolerated(self, step_id: str, field: str, exc: ExpressionError) -> bool:
        """In a dry run an expression over simulated outputs may not resolve: note it, go on."""
        if not self.run.dry_run:
            return False
        self.note("template_unresolved", step_id, field=field, error=str(exc))
        return True

    def variables(self, item: Any = None, index: int | None = None) -> dict[str, Any]:
        run = self.run
        variables: dict[str, Any] = {
            "input": run.input,
            "steps": {k: {"status": v.status.value, "output": v.output, "output_ptr": v.output_ptr}
                      for k, v in run.steps.items()},
            "run": {"id": run.run_id, "tenant": run.tenant, "workflow": run.workflow.id,
                    "version": run.workflow.version, "dry_run": run.dry_run, "started_by": run.started_by},
        }
        if index is not None:
            variables.update(item=item, index=index)
        return variables

    # -- advancing the DAG ---------------------------------------------------------------------

    def advance(self) -> None:
        """Start every step whose dependencies are done; block those whose dependencies failed.

        One pass in topological order suffices: a step that finishes at once (condition, notify,
        skipped) is settled before its dependants are looked at.
        """
        workflow = self.run.workflow
        for step_id in workflow.order:
            if self.run.terminal:
                return
            state = self.run.steps[step_id]
            if state.status is not StepStatus.PENDING:
                continue
            step = workflow.steps[step_id]
            blocker = next((d for d in step.depends_on if self._blocks(d)), None)
            if blocker is not None:
                self.set_step(step_id, StepStatus.BLOCKED,
                              reason=f"dependency {blocker} {self.run.steps[blocker].status.value}")
            elif all(self._done(d) for d in step.depends_on) and self.fatal_step() is None:
                self.start_step(step)  # (once the run is bound to fail, nothing new starts)

    def _done(self, step_id: str) -> bool:
        state = self.run.steps[step_id]
        if state.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            return True
        return state.status in STEP_FAILURES and self.run.workflow.steps[step_id].on_failure == "continue"

    def _blocks(self, step_id: str) -> bool:
        state = self.run.steps[step_id]
        if state.status is StepStatus.BLOCKED:
            return True
        return state.status in STEP_FAILURES and self.run.workflow.steps[step_id].on_failure != "continue"

    def start_step(self, step: Step) -> None:
        if step.condition:
            try:
                go = evaluate_bool(step.condition, self.variables())
            except ExpressionError as exc:
                if not self.tolerated(step.id, "condition", exc):
                    self.fail_step(step.id, "expression_error", f"step {step.id}: condition: {exc}")
                    return
                go = True  # a dry run explores the gated path
            if not go:
                self.set_step(step.id, StepStatus.SKIPPED, reason=f"condition {step.condition!r} is false")
                return
        starter: Callable[[_Decision, Step], None] = _STARTERS[step.type]
        starter(self, step)

    def _start_worker(self, step: Step) -> None:
        if not step.for_each:
            self.set_step(step.id, StepStatus.RUNNING)
            self.dispatch(step, self.run.steps[step.id], None)
            return
        try:
            items = evaluate(step.for_each, self.variables())
        except ExpressionError as exc:
            if not self.tolerated(step.id, "for_each", exc):
                self.fail_step(step.id, "expression_error", f"step {step.id}: for_each: {exc}")
                return
            items = []
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            self.fail_step(step.id, "expression_error",
                           f"step {step.id}: for_each must give a list of at most {MAX_ITEMS} items, got "
                           f"{type(items).__name__}{f' of {len(items)}' if isinstance(items, list) else ''}")
            return
        self.set_step(step.id, StepStatus.RUNNING, items=[ItemRun(index=i, value=v) for i, v in enumerate(items)])
        self.note("fan_out", step.id, items=len(items), max_parallel=step.max_parallel)
        if not items:
            self.set_step(step.id, StepStatus.SUCCEEDED, output=[])
            return
        self.launch_items(step)

    def launch_items(self, step: Step) -> None:
        state = self.run.steps[step.id]
        assert state.items is not None
        limit = step.max_parallel or len(state.items)
        active = sum(1 for item in state.items if item.status in STEP_ACTIVE)
        for item in state.items:
            if active >= limit or state.status not in STEP_ACTIVE:
                return
            if item.status is StepStatus.PENDING:
                active += 1
                item.status = StepStatus.RUNNING
                self.dispatch(step, item, item.index)

    def _start_approval(self, step: Step) -> None:
        self.set_step(step.id, StepStatus.WAITING,
                      reason=f"awaiting approval by {step.quorum} of roles {', '.join(step.approvers)}")
        if step.expires_after_sec:
            self.start_timer(f"approval_expiry:{step.id}", self.at + step.expires_after_sec)

    def _start_delay(self, step: Step) -> None:
        if step.delay_sec:
            due = self.at + step.delay_sec
        else:
            try:
                text = render(step.delay_until, self.variables())
            except ExpressionError as exc:
                if not self.tolerated(step.id, "delay_until", exc):
                    self.fail_step(step.id, "expression_error", f"step {step.id}: delay_until: {exc}")
                    return
                text = _iso(self.at)
            parsed = parse_instant(str(text))
            if parsed is None:
                self.fail_step(step.id, "invalid_delay", f"step {step.id}: delay_until {text!r} is not an ISO 8601 "
                                                         "time with a zone")
                return
            due = parsed
        if due <= self.at:
            self.set_step(step.id, StepStatus.SUCCEEDED, output={"waited_until": due})
            return
        self.set_step(step.id, StepStatus.RUNNING, reason=f"waiting until {due}")
        self.start_timer(f"delay:{step.id}", due)

    def _start_condition(self, step: Step) -> None:
        try:
            value = evaluate_bool(step.expression, self.variables())
        except ExpressionError as exc:
            if not self.tolerated(step.id, "expression", exc):
                self.fail_step(step.id, "expression_error", f"step {step.id}: expression: {exc}")
                return
            value = True
        self.set_step(step.id, StepStatus.SUCCEEDED, output=value)

    def _start_notify(self, step: Step) -> None:
        try:
            message = render(step.message, self.variables())
        except ExpressionError as exc:
            if not self.tolerated(step.id, "message", exc):
                self.fail_step(step.id, "expression_error", f"step {step.id}: message: {exc}")
                return
            message = step.message
        code = step.code or f"workflow.{self.run.workflow.id}.{step.id}"
        alert = {"level": step.level, "code": code, "message": message}
        if self.run.dry_run:  # an alert reaches people: a dry run only says what it would send
            self.set_step(step.id, StepStatus.SUCCEEDED, output={"dry_run": True, "would_alert": alert})
            return
        self.commands.append(EmitAlert(self.command_id(), step.level, code, str(message), step.id))
        self.set_step(step.id, StepStatus.SUCCEEDED, output=alert)

    # -- jobs ------------------------------------------------------------------------------------

    def dispatch(self, step: Step, slot: Slot, item: int | None) -> None:
        """Start the next attempt of ``slot``: render and check its input, then ask for its job."""
        slot.attempt += 1
        slot.retry_pending, slot.retry_at = False, 0.0
        variables = self.variables(slot.value, item) if isinstance(slot, ItemRun) else self.variables()
        try:
            payload = render(step.input, variables)
        except ExpressionError as exc:
            if not self.run.dry_run:
                self.slot_failed(step, slot, item, StepStatus.FAILED, "template_error", f"step {step.id}: input: {exc}",
                                 retryable=False)
                return
            payload = step.input  # a dry run's simulated outputs cannot fill every template
            self.note("template_unresolved", step.id, field="input", error=str(exc))
        violations = self.violations(payload, step.input_schema)
        if violations:
            self.slot_failed(step, slot, item, StepStatus.FAILED, "input_schema_violation",
                             f"step {step.id}: input does not match its schema: {_describe(violations)}",
                             retryable=False)
            return
        slot.job_id = job_id_for(self.run.run_id, step.id, slot.attempt, item)
        slot.status = StepStatus.RUNNING
        self.commands.append(DispatchJob(
            self.command_id(), step.id, slot.attempt, slot.job_id, step.topic, payload, step.meta, item,
            step.timeout_sec, self.run.dry_run,
        ))
        if step.timeout_sec:
            self.start_timer(_timer("step_timeout", step.id, slot.attempt, item), self.at + step.timeout_sec)
        self.note("dispatch", step.id, attempt=slot.attempt, job_id=slot.job_id,
                  input_ptr=ContextPointer(slot.job_id).uri, **({"item": item} if item is not None else {}))

    def violations(self, instance: Any, schema: Any) -> list[SchemaViolation]:
        if schema is None:
            return []
        resolved = self.run.schemas.get(schema) if isinstance(schema, str) else schema
        if resolved is None:
            return [SchemaViolation("", f"schema {schema!r} was not pinned when the run started", "$ref")]
        try:
            return find_violations(instance, resolved, self._pinned_schema, schema_checked=True)
        except CoretexError as exc:  # a $ref the run did not pin
            return [SchemaViolation("", str(exc), "$ref")]

    def _pinned_schema(self, uri: str) -> Any:
        return self.run.schemas[uri]  # KeyError is a LookupError: "no such schema" to the validator

    def slot_failed(self, step: Step, slot: Slot, item: int | None, status: StepStatus, code: str, message: str,
                    *, retryable: bool = True, retry_cap: int = -1) -> None:
        """An attempt ended badly: retry it after a backoff if the retry policy (and the safety
        policy's ``max_retries`` budget, ``retry_cap``) allows, else fail it."""
        self.stop_timer(_timer("step_timeout", step.id, slot.attempt, item))
        slot.error_code, slot.error_message = code, message
        policy = step.retry
        max_attempts = policy.max_attempts if retry_cap < 0 else min(policy.max_attempts, retry_cap + 1)
        if (retryable and status is not StepStatus.CANCELLED and slot.attempt < max_attempts
                and (not policy.retry_on or code in policy.retry_on)):
            delay = backoff_s(step, self.run.run_id, slot.attempt, item)
            slot.retry_pending, slot.retry_at = True, self.at + delay
            if item is None and self.run.steps[step.id].status is StepStatus.WAITING:  # was parked, now backs off
                self.set_step(step.id, StepStatus.RUNNING, reason=f"retry backoff until {slot.retry_at}")
            elif isinstance(slot, ItemRun):
                slot.status = StepStatus.RUNNING
            self.start_timer(_timer("retry", step.id, slot.attempt + 1, item), slot.retry_at)
            self.note("retry_scheduled", step.id, attempt=slot.attempt, error_code=code, error_message=message,
                      retry_at=slot.retry_at, **({"item": item} if item is not None else {}))
            return
        if item is None:
            self.fail_step(step.id, code, message, status, settled_job=slot.job_id)
            return
        slot.status = status
        self.fail_step(step.id, code, f"item {item}: {message}", status)

    def fail_step(self, step_id: str, code: str, message: str, status: StepStatus = StepStatus.FAILED, *,
                  settled_job: str = "") -> None:
        """End the step with ``status``; ``settled_job`` already ended and needs no cancel."""
        self.cancel_step_jobs(step_id, f"step {step_id} {status.value}", settled_job)
        self.set_step(step_id, status, error_code=code, error_message=message)

    def cancel_step_jobs(self, step_id: str, reason: str, settled_job: str = "") -> None:
        """Cancel the step's running jobs and stop its timers (retries, timeouts, delay, expiry)."""
        state = self.run.steps[step_id]
        slots: list[tuple[Slot, int | None]] = [(state, None)] if state.items is None else \
            [(item, item.index) for item in state.items]
        for slot, item in slots:
            if slot.status in STEP_ACTIVE and slot.job_id and not slot.retry_pending and slot.job_id != settled_job:
                self.commands.append(CancelJob(self.command_id(), slot.job_id, reason))
            if slot.status in STEP_ACTIVE:
                slot.status = StepStatus.CANCELLED if item is not None else slot.status
        for timer_id in [t for t in self.run.timers if _timer_step(t) == step_id]:
            self.stop_timer(timer_id)

    def slot_succeeded(self, step: Step, slot: Slot, item: int | None, result: JobResult) -> None:
        self.stop_timer(_timer("step_timeout", step.id, slot.attempt, item))
        if not result.simulated:
            violations = self.violations(result.output, step.output_schema)
            if violations:
                self.slot_failed(step, slot, item, StepStatus.FAILED, "output_schema_violation",
                                 f"step {step.id}: output does not match its schema: {_describe(violations)}",
                                 retryable=False)
                return
        slot.output, slot.output_ptr = result.output, result.output_ptr
        slot.error_code = slot.error_message = ""
        if item is None:
            self.set_step(step.id, StepStatus.SUCCEEDED, output=result.output, output_ptr=result.output_ptr)
            return
        slot.status = StepStatus.SUCCEEDED
        state = self.run.steps[step.id]
        assert state.items is not None
        if all(i.status is StepStatus.SUCCEEDED for i in state.items):
            self.set_step(step.id, StepStatus.SUCCEEDED, output=[i.output for i in state.items])
        else:
            self.launch_items(step)

    # -- ending ----------------------------------------------------------------------------------

    def fatal_step(self) -> str | None:
        """The first step whose failure fails the run (``on_failure: fail_run``), if any."""
        workflow, steps = self.run.workflow, self.run.steps
        return next((s for s in workflow.order if steps[s].status in STEP_FAILURES
                     and workflow.steps[s].on_failure == "fail_run"), None)

    def settle(self) -> None:
        """Fail the run on a fatal step failure, finish it when every step is done, else update status."""
        workflow, steps = self.run.workflow, self.run.steps
        fatal = self.fatal_step()
        if fatal is not None:
            state = steps[fatal]
            self.end_run(RunStatus.FAILED, state.error_code or state.status.value,
                         f"step {fatal} {state.status.value}: {state.error_message}".rstrip(": "))
            return
        if all(s.status in STEP_TERMINAL for s in steps.values()):
            try:
                output = render(workflow.output, self.variables())
            except ExpressionError as exc:
                if not self.run.dry_run:
                    self.end_run(RunStatus.FAILED, "output_error", f"run output: {exc}")
                    return
                output = workflow.output  # simulated step outputs cannot fill every template
                self.note("template_unresolved", field="output", error=str(exc))
            self.run.output = output
            self.end_run(RunStatus.SUCCEEDED)
            return
        self.set_run_status(RunStatus.RUNNING if any(map(_running, steps.values())) else RunStatus.WAITING)

    def end_run(self, status: RunStatus, code: str = "", message: str = "") -> None:
        for step_id in self.run.workflow.order:
            state = self.run.steps[step_id]
            if state.status in STEP_ACTIVE:
                self.cancel_step_jobs(step_id, f"run {status.value}")
                self.set_step(step_id, StepStatus.CANCELLED, reason=f"run {status.value}")
            elif state.status is StepStatus.PENDING:
                self.set_step(step_id, StepStatus.CANCELLED, reason=f"run {status.value} before it started")
        for timer_id in list(self.run.timers):
            self.stop_timer(timer_id)
        self.run.error_code, self.run.error_message = code, message
        self.run.finished_at = self.at
        self.set_run_status(status, code, message)
        self.commands.append(FinishRun(self.command_id(), status.value))

    def slot_of(self, step_id: str, item: int | None) -> tuple[Step, Slot] | None:
        step = self.run.workflow.steps.get(step_id)
        state = self.run.steps.get(step_id)
        if step is None or state is None or state.status not in STEP_ACTIVE:
            return None
        if item is None:
            return (step, state) if state.items is None else None
        if state.items is None or not 0 <= item < len(state.items):
            return None
        slot = state.items[item]
        return (step, slot) if slot.status in STEP_ACTIVE else None  # a finished item hears nothing more


# -- event handlers: each returns False when the event changes nothing ------------------------------


def _on_start(d: _Decision, event: Start | Rerun) -> bool:
    if d.run.status is not RunStatus.PENDING:
        return False
    d.run.started_at = event.at
    d.set_run_status(RunStatus.RUNNING)
    if isinstance(event, Rerun):
        for step_id, reused in event.reused.items():
            if step_id in d.run.steps:
                d.set_step(step_id, StepStatus.SUCCEEDED, output=reused.get("output"),
                           output_ptr=reused.get("output_ptr", ""), reused_from=reused.get("from_run", ""))
    if d.run.workflow.timeout_sec:
        d.start_timer(RUN_TIMEOUT, event.at + d.run.workflow.timeout_sec)
    return True


def _on_job_result(d: _Decision, event: JobResult) -> bool:
    found = d.slot_of(event.step_id, event.item)
    if found is None:
        return False
    step, slot = found
    if slot.job_id != event.job_id or slot.attempt != event.attempt or slot.retry_pending:
        return False
    d.note("job_result", step.id, job_id=event.job_id, attempt=event.attempt, status=event.status,
           **{k: v for k, v in (("item", event.item), ("output_ptr", event.output_ptr), ("decision", event.decision),
                                ("rule_id", event.rule_id), ("error_code", event.error_code),
                                ("error_message", event.error_message)) if v not in (None, "")})
    if event.status == "succeeded":
        d.slot_succeeded(step, slot, event.item, event)
    elif event.status == "timed_out":
        d.slot_failed(step, slot, event.item, StepStatus.TIMED_OUT, event.error_code or "timeout",
                      event.error_message or "the job timed out", retry_cap=event.retry_cap)
    elif event.status == "cancelled":
        d.slot_failed(step, slot, event.item, StepStatus.CANCELLED, "job_cancelled",
                      event.error_message or "the job was cancelled", retryable=False)
    elif event.status == "denied":
        d.slot_failed(step, slot, event.item, StepStatus.FAILED, event.error_code or "safety_denied",
                      event.error_message or "denied by policy", retryable=False)
    else:
        d.slot_failed(step, slot, event.item, StepStatus.FAILED, event.error_code or "job_failed",
                      event.error_message or "the job failed", retry_cap=event.retry_cap)
    return True


def _on_job_progress(d: _Decision, event: JobProgress) -> bool:
    found = d.slot_of(event.step_id, event.item)
    if found is None:
        return False
    step, slot = found
    if slot.attempt != event.attempt or slot.retry_pending:
        return False
    if event.state == "attached":
        if slot.job_id != event.replaces or event.job_id == slot.job_id:
            return False
        slot.job_id = event.job_id
        d.note("job_attached", step.id, job_id=event.job_id, replaces=event.replaces)
        return True
    if slot.job_id != event.job_id:
        return False
    target = StepStatus.WAITING if event.state == "waiting_approval" else StepStatus.RUNNING
    if slot.status is target:
        return False
    slot.status = target
    if event.item is None:
        d.set_step(step.id, target, reason=event.reason, decision=event.decision, rule_id=event.rule_id)
    else:
        d.note("item_status", step.id, item=event.item, to=target.value, reason=event.reason)
    return True


def _on_approval(d: _Decision, event: Approval) -> bool:
    if approval_problem(d.run, event.step_id, event.approver, event.roles) is not None:
        return False
    step = d.run.workflow.steps[event.step_id]
    state = d.run.steps[step.id]
    state.approvals.append({"by": event.approver, "at": event.at, "approve": event.approve, "reason": event.reason,
                            "roles": list(event.roles)})
    d.note("approval", step.id, by=event.approver, approve=event.approve, reason=event.reason)
    if not event.approve:
        d.fail_step(step.id, "approval_rejected", f"rejected by {event.approver}" +
                    (f": {event.reason}" if event.reason else ""))
        return True
    approvers = [a["by"] for a in state.approvals if a["approve"]]
    if len(approvers) >= step.quorum:
        d.stop_timer(f"approval_expiry:{step.id}")
        d.set_step(step.id, StepStatus.SUCCEEDED, output={"approved_by": approvers})
    return True


def _on_timer(d: _Decision, event: TimerFired) -> bool:
    if d.run.timers.pop(event.timer_id, None) is None:
        return False  # stopped meanwhile, or fired twice
    kind, step_id, attempt, item = _parse_timer(event.timer_id)
    d.note("timer_fired", step_id, timer=event.timer_id)
    if kind == RUN_TIMEOUT:
        d.end_run(RunStatus.TIMED_OUT, "run_timeout",
                  f"the run exceeded its timeout of {d.run.workflow.timeout_sec}s")
        return True
    state = d.run.steps.get(step_id)
    step = d.run.workflow.steps.get(step_id)
    if state is None or step is None:
        return True
    if kind == "delay" and state.status is StepStatus.RUNNING:
        d.set_step(step_id, StepStatus.SUCCEEDED, output={"waited_until": event.at})
    elif kind == "approval_expiry" and state.status is StepStatus.WAITING:
        if step.on_expiry == "skip":
            d.set_step(step_id, StepStatus.SKIPPED, reason="approval expired")
        else:
            d.fail_step(step_id, "approval_expired", f"no decision within {step.expires_after_sec}s")
    elif kind in ("retry", "step_timeout"):
        found = d.slot_of(step_id, item)
        if found is None:
            return True
        _, slot = found
        if kind == "retry" and slot.retry_pending and slot.attempt == attempt - 1:
            d.dispatch(step, slot, item)
        elif kind == "step_timeout" and slot.attempt == attempt and not slot.retry_pending:
            d.commands.append(CancelJob(d.command_id(), slot.job_id, f"step {step_id} timed out"))
            slot.job_id, timed_out = "", slot.job_id  # cancelled just above
            d.note("job_cancelled", step_id, job_id=timed_out, reason="step_timeout")
            d.slot_failed(step, slot, item, StepStatus.TIMED_OUT, "step_timeout",
                          f"attempt {attempt} exceeded the step timeout of {step.timeout_sec}s")
    return True


def _on_cancel(d: _Decision, event: Cancel) -> bool:
    if d.run.terminal:
        return False
    message = f"cancelled by {event.by}" + (f": {event.reason}" if event.reason else "")
    d.end_run(RunStatus.CANCELLED, "cancelled", message)
    return True


_HANDLERS: dict[type[Any], Callable[[_Decision, Any], bool]] = {
    Start: _on_start, Rerun: _on_start, JobResult: _on_job_result, JobProgress: _on_job_progress,
    Approval: _on_approval, TimerFired: _on_timer, Cancel: _on_cancel,
}
_STARTERS: dict[str, Callable[[_Decision, Step], None]] = {
    "worker": _Decision._start_worker, "approval": _Decision._start_approval, "delay": _Decision._start_delay,
    "condition": _Decision._start_condition, "notify": _Decision._start_notify,
}


def _running(state: StepRun) -> bool:
    """Whether a step is working (not only waiting for people): running, or with a running item."""
    if state.status is not StepStatus.RUNNING:
        return False
    return state.items is None or any(i.status is StepStatus.RUNNING or i.retry_pending for i in state.items)


def _timer(kind: str, step_id: str, attempt: int, item: int | None) -> str:
    return f"{kind}:{step_id}:{attempt}" + (f":{item}" if item is not None else "")


def _parse_timer(timer_id: str) -> tuple[str, str, int, int | None]:
    """(kind, step, attempt, item) of a timer id (attempt 0 and no item where they do not apply)."""
    parts = timer_id.split(":")
    kind = parts[0]
    step_id = parts[1] if len(parts) > 1 else ""
    attempt = int(parts[2]) if len(parts) > 2 else 0
    item = int(parts[3]) if len(parts) > 3 else None
    return kind, step_id, attempt, item


def _timer_step(timer_id: str) -> str:
    return _parse_timer(timer_id)[1]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _describe(violations: list[SchemaViolation]) -> str:
    return "; ".join(f"{v.pointer or '/'}: {v.message}" for v in violations[:5])

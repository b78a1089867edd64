"""The workflow engine: every run transition is load -> decide -> one atomic commit -> execute.

Crash safety comes from the transactional outbox: a transition's commands are committed with its
state, executed afterwards, and acknowledged; whatever a crash leaves unacknowledged is executed
again by the tick (each command is idempotent by its job or timer id). Timers live in a Redis
sorted set fired by the tick, and the tick reconciles quiet runs with their jobs, so a result
whose notification was lost (a control worker killed at the wrong instant) is still applied.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from coretex.engine.errors import ApprovalRefusedError, StepNotWaitingError
from coretex.engine.executor import execute_command
from coretex.engine.listener import handle_news
from coretex.engine.policy import check_run_start
from coretex.engine.schemas import pin_schemas
from coretex.errors import CoretexError, NotFoundError, StoreError
from coretex.model.canonical import canonical_json
from coretex.model.job import JobRecord, JobState
from coretex.model.schema import SchemaViolationError, find_violations, parse_schema_ref
from coretex.scheduler.submit import check_input_size
from coretex.services import Services
from coretex.store._redis import redis_errors
from coretex.store.job_news import News
from coretex.store.runs import RunConflictError, RunStore, StoredRun
from coretex.store.workflows import SavedWorkflow, WorkflowStore
from coretex.workflow.commands import (
    Command,
    DispatchJob,
    StartTimer,
    StopTimer,
    command_from_dict,
    command_to_dict,
)
from coretex.workflow.decide import Outcome, approval_problem, decide
from coretex.workflow.definition import Workflow, parse_workflow
from coretex.workflow.events import (
    Approval,
    Cancel,
    Event,
    JobProgress,
    JobResult,
    Rerun,
    Start,
    TimerFired,
    event_from_dict,
    event_to_dict,
)
from coretex.workflow.run import STEP_ACTIVE, Run, StepStatus, new_run, run_from_dict, run_to_dict

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 50
"""Optimistic retries of one transition before giving up (each conflict means progress elsewhere)."""
INLINE_OUTPUT_BYTES = 64 * 1024
"""Step outputs up to this size (canonical JSON) are kept in the run; larger ones only by pointer."""
OUTBOX_REPLAY_AFTER_S = 5.0
RECONCILE_AFTER_S = 10.0
"""A run quiet for this long is checked against its jobs and overdue timers by the tick."""
INLINE_DISPATCH_MAX = 2
"""A transition dispatching more jobs than this sends them through the control queue instead."""
RECONCILE_SAMPLE = 100
NEWS_CLAIM_IDLE_MS = 5000
"""Job news read but not acknowledged for this long (its listener died) is handled by the tick."""
DEFINITION_CACHE_SIZE = 512

_JOB_OUTCOMES = {
    JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed", JobState.TIMEOUT: "timed_out",
    JobState.CANCELLED: "cancelled", JobState.DENIED: "denied",
}


@dataclass(frozen=True)
class RunReceipt:
    run_id: str
    created: bool
    """False when the idempotency key matched an earlier run, whose id is returned."""


class Engine:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.inline_dispatch = False
        """True in control workers: a step's job enters the dispatch pipeline right here instead of
        one more queue hop away (the pipeline is the same; a crash leaves a PENDING job that the
        reconcile submits again)."""
        self.runs = RunStore(services.redis, services.settings)
        self.workflows = WorkflowStore(services.redis, services.settings)
        self._definitions: OrderedDict[tuple[str, str, int], Workflow] = OrderedDict()
        """Parsed workflow versions (immutable once saved), least recently used first."""

    # -- workflow templates --------------------------------------------------------------------

    def save_workflow(self, tenant: str, document: Mapping[str, Any], saved_by: str) -> SavedWorkflow:
        """Check ``document`` (every problem at once: WorkflowInvalidError) and save a new version."""
        body = {k: v for k, v in document.items() if k not in ("version", "tenant")}
        parse_workflow(body, schema_exists=self._schema_exists)
        return self.workflows.save(tenant, body, saved_by)

    def workflow(self, tenant: str, workflow_id: str, version: int | None = None) -> Workflow:
        if version is not None and (cached := self._definitions.get((tenant, workflow_id, version))):
            self._definitions.move_to_end((tenant, workflow_id, version))
            return cached
        saved = self.workflows.get(tenant, workflow_id, version)
        workflow = parse_workflow(saved.document)
        self._definitions[(tenant, workflow_id, saved.version)] = workflow
        while len(self._definitions) > DEFINITION_CACHE_SIZE:
            self._definitions.popitem(last=False)
        return workflow

    def _schema_exists(self, name: str) -> bool:
        ref = parse_schema_ref(name)
        try:
            self.services.schemas.get(ref.id, ref.version)
        except NotFoundError:
            return False
        return True

    # -- runs ------------------------------------------------------------------------------------

    def start(self, tenant: str, workflow_id: str, input: Any, *, started_by: str, actor_type: str = "human",
              idempotency_key: str = "", dry_run: bool = False, version: int | None = None) -> RunReceipt:
        """Check and create a run, then start it. Nothing is written when a check fails."""
        workflow = self.workflow(tenant, workflow_id, version)
        schemas = pin_schemas(workflow, self.services.schemas)
        self._check_input(tenant, workflow, input, schemas)
        check_run_start(self.services, tenant, workflow, started_by, actor_type, dry_run)
        run = new_run(str(uuid.uuid4()), workflow, tenant=tenant, input=input, created_at=time.time(),
                      started_by=started_by, trace_id=uuid.uuid4().hex, dry_run=dry_run, schemas=schemas,
                      idempotency_key=idempotency_key)
        return self._create_and_start(run, Start(at=time.time()))

    def rerun(self, tenant: str, run_id: str, *, started_by: str, from_step: str = "", dry_run: bool | None = None,
              actor_type: str = "human") -> RunReceipt:
        """A new run of the same workflow version and input, linked to ``run_id``.

        With ``from_step``, the succeeded steps outside ``from_step``'s downstream keep their outputs
        (their immutable result pointers); ``from_step`` and everything after it run again, with
        fresh kernel decisions. Without it, every step runs again.
        """
        old = self.get(tenant, run_id)
        workflow = old.workflow
        if from_step and from_step not in workflow.steps:
            raise NotFoundError(f"workflow {workflow.id} has no step {from_step!r}")
        dry = old.dry_run if dry_run is None else dry_run
        check_run_start(self.services, tenant, workflow, started_by, actor_type, dry)
        reused: dict[str, dict[str, Any]] = {}
        if from_step:
            again = workflow.downstream(from_step)
            for step_id, state in old.steps.items():
                if step_id not in again and state.status is StepStatus.SUCCEEDED:
                    reused[step_id] = {"output": state.output, "output_ptr": state.output_ptr,
                                       "from_run": state.reused_from or old.run_id}
        run = new_run(str(uuid.uuid4()), workflow, tenant=tenant, input=old.input, created_at=time.time(),
                      started_by=started_by, trace_id=uuid.uuid4().hex, dry_run=dry, schemas=old.schemas,
                      rerun_of=old.run_id, rerun_from=from_step)
        return self._create_and_start(run, Rerun(at=time.time(), reused=reused))

    def _create_and_start(self, run: Run, first: Start | Rerun) -> RunReceipt:
        limits = self.services.live_config.section("limits", run.tenant)
        run_id, created = self.runs.create(
            run.run_id, run.tenant, self._doc(run), idempotency_key=run.idempotency_key,
            window_s=self.services.settings.idempotency_window_s, max_concurrent=limits.get("max_concurrent_runs") or 0,
        )
        if created:
            self.handle(run_id, first)
        return RunReceipt(run_id, created)

    def get(self, tenant: str, run_id: str) -> Run:
        """The run, if it belongs to ``tenant`` (another tenant's run is not found)."""
        stored = self.runs.load(run_id)
        if stored.tenant != tenant:
            raise NotFoundError(f"run {run_id} not found")
        return self._run_of(stored)

    def replay(self, tenant: str, run_id: str) -> Run:
        """Rebuild the run from its event log alone (decide is deterministic): a postmortem tool,
        and the proof that the log is complete. Equal to :meth:`get` for every committed run."""
        current = self.get(tenant, run_id)
        run = new_run(run_id, current.workflow, tenant=current.tenant, input=current.input,
                      created_at=current.created_at, started_by=current.started_by, trace_id=current.trace_id,
                      dry_run=current.dry_run, schemas=current.schemas, rerun_of=current.rerun_of,
                      rerun_from=current.rerun_from, idempotency_key=current.idempotency_key)
        for event in self.runs.events(run_id):
            run = decide(run, event_from_dict(event)).run
        run.version = current.version
        return run

    def cancel(self, tenant: str, run_id: str, *, by: str, reason: str = "") -> Run:
        self.get(tenant, run_id)
        return self.handle(run_id, Cancel(at=time.time(), by=by, reason=reason))

    def decide_approval(self, tenant: str, run_id: str, step_id: str, *, approver: str, roles: Sequence[str],
                        approve: bool, reason: str = "") -> Run:
        """Record an approver's decision on an approval step. NotFoundError for no such step,
        StepNotWaitingError when it is not waiting, ApprovalRefusedError (with why) for this approver."""
        run = self.get(tenant, run_id)
        problem = approval_problem(run, step_id, approver, tuple(roles))
        if problem is not None:
            error = {"no_step": NotFoundError, "not_waiting": StepNotWaitingError}.get(problem.kind,
                                                                                  ApprovalRefusedError)
            raise error(problem.message)
        return self.handle(run_id, Approval(at=time.time(), step_id=step_id, approver=approver, roles=tuple(roles),
                                            approve=approve, reason=reason))

    # -- the transition loop ---------------------------------------------------------------------

    def handle(self, run_id: str, event: Event, loaded: StoredRun | None = None) -> Run:
        """Apply ``event``: decide, commit atomically (re-deciding on a conflict), then execute.
        ``loaded``: the run as just read by the caller, used for the first attempt."""
        for _ in range(MAX_COMMIT_ATTEMPTS):
            stored, loaded = loaded or self.runs.load(run_id), None
            run = self._run_of(stored)
            event = _not_before(event, run)
            outcome = decide(run, event)
            if not outcome.applied:
                return run
            try:
                self._commit(stored, event, outcome)
            except RunConflictError:
                continue
            self.execute(outcome.run, [c for c in outcome.commands if not isinstance(c, StartTimer | StopTimer)])
            return outcome.run
        raise StoreError(f"run {run_id}: gave up after {MAX_COMMIT_ATTEMPTS} conflicting commits")

    def _commit(self, stored: StoredRun, event: Event, outcome: Outcome) -> None:
        commands = outcome.commands
        self.runs.commit(
            stored, self._doc(outcome.run),
            event=event_to_dict(event),
            timeline=outcome.timeline,
            outbox=[(c.id, command_to_dict(c)) for c in commands if not isinstance(c, StartTimer | StopTimer)],
            timers_started=[(c.timer_id, c.due) for c in commands if isinstance(c, StartTimer)],
            timers_stopped=[c.timer_id for c in commands if isinstance(c, StopTimer)],
            ended=outcome.run.terminal,
        )

    def execute(self, run: Run, commands: Sequence[Command] | None = None) -> None:
        """Execute ``commands`` (default: every unacknowledged one of the run, for a replay) and
        acknowledge each that took effect; the rest stay in the outbox for the tick."""
        if commands is None:
            commands = [command_from_dict(body) for _, body in self.runs.outbox(run.run_id)]
        # A fan-out's many jobs go through the control queue, so every control worker shares their
        # dispatch; one or two (a chain, a diamond) enter the pipeline right here.
        inline = self.inline_dispatch and sum(isinstance(c, DispatchJob) for c in commands) <= INLINE_DISPATCH_MAX
        done = []
        for command in commands:
            command_id = command.id
            try:
                moved = execute_command(self, run, command, inline=inline)
            except StoreError as exc:  # the broker or Redis: the tick replays it
                log.warning("run %s: command %s not executed yet: %s", run.run_id, command_id, exc)
                continue
            done.append(command_id)
            if moved:  # a job ended at once (denied, say): the rest must see the run as it is now
                run = self._run_of(self.runs.load(run.run_id))
        self.runs.ack(run.run_id, done)

    def _run_of(self, stored: StoredRun) -> Run:
        doc = stored.doc
        workflow = self.workflow(stored.tenant, doc["workflow_id"], doc["workflow_version"])
        run = run_from_dict(doc, workflow)
        run.version = stored.version
        return run

    def _doc(self, run: Run) -> dict[str, Any]:
        doc = run_to_dict(run)
        for state in doc["steps"].values():  # no blobs in state: big outputs stay behind their pointer
            if state["output_ptr"] and _too_big(state["output"]):
                state["output"] = None
        return doc

    # -- jobs ------------------------------------------------------------------------------------

    def hear(self, news: News) -> None:
        """Job news from a listener: the job, its output and its run read in one round trip, then
        :meth:`job_changed`'s work. The record decides; the news only said where to look."""
        if not news.run_id:
            self.job_changed(news.job_id)
            return
        batch = self.services.redis.pipeline(transaction=False)
        job_of = self.services.jobs.get_queued(news.job_id, batch)
        output_of = self.services.pointers.get_json_queued(news.result_ptr, batch) if news.result_ptr else None
        run_of = self.runs.load_queued(news.run_id, batch)
        with redis_errors(f"read the news of job {news.job_id}"):
            replies = batch.execute()
        try:
            record = job_of(replies[0])
        except NotFoundError:
            return
        if record.run_id != news.run_id or record.result_ptr != news.result_ptr:  # moved on since: read afresh
            self.job_changed(news.job_id, record)
            return
        output = output_of(replies[1], record.tenant_id) if output_of is not None else None
        event = self._event_for(record, output)
        if event is not None:
            self.handle(record.run_id, event, loaded=run_of(replies[-1]))

    def job_changed(self, job_id: str, record: JobRecord | None = None) -> None:
        """A job moved: if it is a step's, tell its run (idempotent; stale news changes nothing)."""
        if record is None:
            try:
                record = self.services.jobs.get(job_id)
            except NotFoundError:
                return
        if not record.run_id:
            return
        event = self._event_for(record)
        if event is not None:
            self.handle(record.run_id, event)

    def _event_for(self, record: JobRecord, output: Any = None) -> JobResult | JobProgress | None:
        """The run event for ``record``'s state; ``output``: its result, if the caller read it."""
        item = record.step_item if record.step_item >= 0 else None
        now = time.time()
        outcome = _JOB_OUTCOMES.get(record.state)
        if outcome is not None:
            if record.state is not JobState.SUCCEEDED:
                output = None
            elif output is None and record.result_ptr:
                output = self.services.pointers.get_json(record.result_ptr, record.tenant_id)
            simulated = bool(record.dry_run and isinstance(output, dict) and output.get("dry_run") is True
                             and "would_dispatch" in output)
            return JobResult(now, record.step_id, record.step_attempt, record.job_id, outcome, item=item,
                             output=output, output_ptr=record.result_ptr, error_code=record.error_code,
                             error_message=record.error_message, simulated=simulated, decision=record.decision,
                             rule_id=record.rule_id, retry_cap=record.policy_max_retries)
        if record.state is JobState.APPROVAL_REQUIRED:
            return JobProgress(now, record.step_id, record.step_attempt, record.job_id, "waiting_approval", item=item,
                               reason=record.pending_reason or record.reason, decision=record.decision,
                               rule_id=record.rule_id)
        if record.state in (JobState.DISPATCHED, JobState.RUNNING):
            return JobProgress(now, record.step_id, record.step_attempt, record.job_id, "running", item=item)
        return None

    # -- the tick --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Fire due timers, replay stale outboxes, reconcile quiet runs. One failure never stops the rest."""
        for run_id, timer_id, _due in self.runs.pop_due_timers(now):
            self._safely(run_id, self.handle, run_id, TimerFired(at=now, timer_id=timer_id))
        for run_id in self.runs.stale_outboxes(now - OUTBOX_REPLAY_AFTER_S):
            self._safely(run_id, self._replay_outbox, run_id)
        self.reconcile(now)
        self.reclaim_news()

    def reclaim_news(self, min_idle_ms: int = NEWS_CLAIM_IDLE_MS) -> None:
        """Handle job news whose listener died before acknowledging it."""
        news = self.services.job_news
        try:
            handle_news(news, news.claim_stale("tick", min_idle_ms=min_idle_ms), self.hear)
        except StoreError as exc:
            log.warning("job news not reclaimed this tick: %s", exc)

    def reconcile(self, now: float, quiet_s: float = RECONCILE_AFTER_S) -> None:
        """Catch up quiet runs: timers past due (popped by a tick that died) and jobs that ended
        without the run hearing of it. Each tick looks at a random sample of the active runs, so
        thousands of runs waiting for approvals cost every tick the same."""
        sample = self.runs.active(RECONCILE_SAMPLE)
        quiet = [r for r, at in self.runs.updated_at(sample).items() if at < now - quiet_s]
        for run_id in quiet:
            self._safely(run_id, self._reconcile_run, run_id, now)

    def _reconcile_run(self, run_id: str, now: float) -> None:
        run = self._run_of(self.runs.load(run_id))
        for timer_id, due in list(run.timers.items()):
            if due < now - 1.0:
                self.handle(run_id, TimerFired(at=now, timer_id=timer_id))
        for state in run.steps.values():
            slots = [state] if state.items is None else state.items
            for slot in slots:
                if slot.status in STEP_ACTIVE and slot.job_id and not slot.retry_pending:
                    self._reconcile_job(slot.job_id)

    def _reconcile_job(self, job_id: str) -> None:
        try:
            record = self.services.jobs.get(job_id)
        except NotFoundError:
            return  # its dispatch command has not run yet: the outbox replay creates it
        if record.state not in (JobState.PENDING, JobState.SCHEDULED):  # (a lost submit: the scheduler's tick)
            self.job_changed(job_id, record)

    def _replay_outbox(self, run_id: str) -> None:
        """Execute what a crash left unacknowledged, against the run as it is now."""
        self.execute(self._run_of(self.runs.load(run_id)))

    def _safely(self, run_id: str, action: Callable[..., object], *args: Any) -> None:
        try:
            action(*args)
        except NotFoundError:
            log.info("run %s is gone (expired); nothing to do", run_id)
        except CoretexError as exc:
            log.warning("run %s: %s", run_id, exc)
        except Exception:
            log.exception("run %s: unexpected failure in the tick", run_id)

    # -- checks at start -------------------------------------------------------------------------

    def _check_input(self, tenant: str, workflow: Workflow, input: Any, schemas: Mapping[str, Any]) -> None:
        check_input_size(self.services, tenant, input, what="run input")
        schema = workflow.input_schema
        if schema is None:
            return
        resolved = schemas[schema] if isinstance(schema, str) else schema
        violations = find_violations(input, resolved, schemas.__getitem__, schema_checked=True)
        if violations:
            raise SchemaViolationError(violations, schema_label=f"input schema of workflow {workflow.id}")


def _not_before(event: Event, run: Run) -> Event:
    """``event``, its time moved up to the run's latest recorded time if it is older: news of two
    jobs handled by two control workers can be committed in the other order, and a step must
    never start before the steps it waited for finished. (The event log keeps the moved time, so
    a replay decides the same.)"""
    latest = max([run.started_at, *(t for s in run.steps.values() for t in (s.started_at, s.finished_at))])
    return replace(event, at=latest) if event.at < latest else event


def _too_big(value: Any) -> bool:
    return len(canonical_json(value).encode()) > INLINE_OUTPUT_BYTES

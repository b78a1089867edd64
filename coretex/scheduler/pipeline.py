"""The dispatch pipeline: a chain of small stages every job passes before it may run.

    secret detection -> policy check (kernel) -> routing (capabilities, profiles) -> backpressure
    -> publish (concurrency limits, budgets, attempt; in the dispatcher)

Each stage looks at a :class:`Dispatch` and either lets it through (returns ``None``, possibly
after recording what it decided on it) or stops it with a :class:`Verdict`: a terminal state, or
SCHEDULED to hold the job (with a pending reason) and look again shortly. A new cross-cutting
concern is a new stage in ``dispatcher.default_stages``, never an ``if`` in the scheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.errors import KernelUnavailableError, RoutingError
from coretex.kernel.wire import constraints_from_wire
from coretex.model.job import JobRecord, JobState
from coretex.policy.constraints import Constraints
from coretex.scheduler.packets import meta_from_message, policy_request
from coretex.scheduler.routing import Pool
from coretex.secrets import detect_secrets, mark_job

log = logging.getLogger(__name__)


NOT_LOADED: Any = object()
"""The job's input has not been read yet (the pipeline reads it behind its ctx: pointer)."""


@dataclass
class Dispatch:
    """One job on its way through the pipeline; stages fill in what they decided."""

    record: JobRecord
    request: job_pb2.JobRequest
    decision: str = ""
    rule_id: str = ""
    reason: str = ""
    policy_snapshot: str = ""
    pool: str = ""
    constraints: safety_pb2.PolicyConstraints | None = None
    """The kernel's constraints of an ALLOW_WITH_CONSTRAINTS decision, honoured at dispatch."""
    meta_changed: bool = False
    payload: Any = NOT_LOADED
    stages_done: int = 0
    """How many stages of the list already ran on this dispatch (:func:`run_stages` goes on from there)."""
    asked: AskedCheck | None = None
    """A Check sent ahead (:meth:`PolicyCheck.ask_ahead`) while the job's record was being written."""

    def decision_fields(self) -> dict[str, Any]:
        """Record fields the pipeline decided, written with the job's next state."""
        fields: dict[str, Any] = {
            "decision": self.decision,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "policy_snapshot": self.policy_snapshot,
        }
        if self.meta_changed:
            fields["meta"] = meta_from_message(self.request.meta)
        return fields


@dataclass(frozen=True)
class AskedCheck:
    request: safety_pb2.PolicyCheckRequest
    answer: Callable[[], safety_pb2.PolicyCheckResponse]


@dataclass(frozen=True)
class Verdict:
    """How a stopped job ends: its terminal state, error code and message, and whether to DLQ it."""

    state: JobState
    error_code: str
    error_message: str
    dead_letter: bool = True


class Stage(Protocol):
    name: str

    def __call__(self, dispatch: Dispatch) -> Verdict | None: ...


class SecretDetection:
    """Tag jobs that carry secrets (references or credential shapes) so policy can block them.

    Adds risk tag ``secrets`` and label ``secrets_present=true`` to the job's metadata (never
    removes a tag the client set). The values themselves are never copied anywhere.
    """

    name = "secrets"

    def __init__(self, load_input: Callable[[str, str], Any]) -> None:
        self._load_input = load_input

    def __call__(self, dispatch: Dispatch) -> Verdict | None:
        request = dispatch.request
        payload = dispatch.payload
        if payload is NOT_LOADED:
            payload = self._load_input(request.context_ptr, dispatch.record.tenant_id)
        finding = detect_secrets(payload, labels=dict(request.meta.labels))
        if not finding.present:
            return None
        tags, labels = mark_job(request.meta.risk_tags, request.meta.labels, finding)
        del request.meta.risk_tags[:]
        request.meta.risk_tags.extend(tags)
        request.meta.labels.clear()
        request.meta.labels.update(labels)
        request.labels.update(labels)
        dispatch.meta_changed = True
        log.info("job %s carries secrets at %s", dispatch.record.job_id, ", ".join(finding.paths) or "labels")
        return None


class PolicyCheck:
    """Ask the safety kernel. Unreachable kernel => DENIED (fail closed), never allowed.

    REQUIRE_APPROVAL parks the job (APPROVAL_REQUIRED) unless ``approved`` says a human already
    approved exactly this request under exactly this policy snapshot.
    """

    name = "policy"

    def __init__(
        self,
        ask: Callable[[safety_pb2.PolicyCheckRequest], Callable[[], safety_pb2.PolicyCheckResponse]],
        approved: Callable[[Dispatch], bool] = lambda dispatch: False,
        *,
        kernel_wait_s: float = 0.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._ask = ask
        """Sends a Check and returns what waits for its answer (``KernelClient.check_ahead``)."""
        self._approved = approved
        self._kernel_wait_s = kernel_wait_s
        self._now = now

    def ask_ahead(self, dispatch: Dispatch) -> None:
        """Send the Check now, while the caller writes the job's record; the stage takes the answer
        in its turn if the request is still the same. An unreachable kernel is left to the stage."""
        request = policy_request(dispatch.request)
        try:
            dispatch.asked = AskedCheck(request, self._ask(request))
        except KernelUnavailableError:
            dispatch.asked = None

    def __call__(self, dispatch: Dispatch) -> Verdict | None:
        request = policy_request(dispatch.request)
        asked, dispatch.asked = dispatch.asked, None
        try:
            answer = asked.answer if asked is not None and asked.request == request else self._ask(request)
            response = answer()
        except KernelUnavailableError as exc:
            # Never run unchecked: wait (pending, re-checked) for the kernel, then deny.
            if self._now() - dispatch.record.created_at < self._kernel_wait_s:
                return Verdict(JobState.SCHEDULED, "kernel_unavailable", str(exc), dead_letter=False)
            dispatch.decision, dispatch.reason = "DENY", str(exc)
            return Verdict(JobState.DENIED, KernelUnavailableError.code, str(exc))
        dispatch.decision = safety_pb2.DecisionType.Name(response.decision).removeprefix("DECISION_TYPE_")
        dispatch.rule_id, dispatch.reason = response.rule_id, response.reason
        dispatch.policy_snapshot = response.policy_snapshot
        if response.HasField("constraints"):
            dispatch.constraints = response.constraints
        if response.decision in (safety_pb2.DECISION_TYPE_ALLOW, safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS):
            return None
        if response.decision == safety_pb2.DECISION_TYPE_REQUIRE_HUMAN:
            if self._approved(dispatch):
                return None
            return Verdict(JobState.APPROVAL_REQUIRED, "approval_required", response.reason, dead_letter=False)
        # THROTTLE needs the retry timers of the scheduler's tick; until they exist a throttled job
        # must not run, so it is refused like a deny, with the kernel's own reason.
        return Verdict(JobState.DENIED, "safety_denied", f"{dispatch.decision}: {response.reason}")


PLACEMENT_POOL = "placement/pool"
"""Label of a job's preferred pool: a hint, honoured only among capable pools for its topic."""


class Routing:
    """Pick the pool from config; no mapping => FAILED with ``no_pool_mapping``."""

    name = "routing"

    def __init__(self, route: Callable[[str, Sequence[str], str | None, Constraints | None], str]) -> None:
        self._route = route

    def __call__(self, dispatch: Dispatch) -> Verdict | None:
        meta = dispatch.request.meta
        constraints = constraints_from_wire(dispatch.constraints) if dispatch.constraints is not None else None
        try:
            dispatch.pool = self._route(dispatch.request.topic, list(meta.requires), meta.labels.get(PLACEMENT_POOL),
                                        constraints)
        except RoutingError as exc:
            return Verdict(JobState.FAILED, RoutingError.code, str(exc))
        return None


class Backpressure:
    """Hold a job while its pool's queue is over ``max_queue_depth``; refuse it when the wait runs out.

    Held jobs stay SCHEDULED with pending reason ``pool_overloaded`` and are re-checked by a timer
    (never queued silently forever); after the pool's ``max_hold_s`` they end FAILED ``pool_overloaded``.
    """

    name = "backpressure"

    def __init__(self, depth: Callable[[str], int], pools: Callable[[], Mapping[str, Pool]],
                 now: Callable[[], float]) -> None:
        self._depth, self._pools, self._now = depth, pools, now

    def __call__(self, dispatch: Dispatch) -> Verdict | None:
        pool = self._pools()[dispatch.pool]
        if pool.max_queue_depth is None:
            return None
        depth = self._depth(dispatch.pool)
        if depth < pool.max_queue_depth:
            return None
        message = f"pool {dispatch.pool} has {depth} queued jobs (limit {pool.max_queue_depth})"
        if self._now() - dispatch.record.created_at >= pool.max_hold_s:
            return Verdict(JobState.FAILED, "pool_overloaded", f"{message}; gave up after {pool.max_hold_s}s")
        return Verdict(JobState.SCHEDULED, "pool_overloaded", message, dead_letter=False)


class DryRunGate:
    """A dry-run job goes only to a pool with a live worker that declared dry-run support for its
    topic; any other dry-run job ends SUCCEEDED without being sent, its output the dispatch it
    would have made (kernel decision and pool included). Policy has already seen it by now."""

    name = "dry_run"

    def __init__(self, simulates: Callable[[str, str], bool]) -> None:
        self._simulates = simulates

    def __call__(self, dispatch: Dispatch) -> Verdict | None:
        if not dispatch.record.dry_run or self._simulates(dispatch.pool, dispatch.request.topic):
            return None
        return Verdict(JobState.SUCCEEDED, "dry_run",
                       f"dry run: would dispatch {dispatch.request.topic} to pool {dispatch.pool}; no worker there "
                       "declares dry-run support, so none was called", dead_letter=False)


def would_dispatch(dispatch: Dispatch) -> dict[str, Any]:
    """The output of a dry-run job that was not sent: what would have happened."""
    return {"dry_run": True, "would_dispatch": {
        "topic": dispatch.request.topic, "pool": dispatch.pool, "decision": dispatch.decision,
        "rule_id": dispatch.rule_id, "reason": dispatch.reason, "policy_snapshot": dispatch.policy_snapshot,
    }}


def run_stages(stages: Sequence[Stage], dispatch: Dispatch, until: str = "") -> Verdict | None:
    """Run the stages not yet run on ``dispatch``, in order, up to (not including) the one named
    ``until`` (default: to the end); the first verdict stops it."""
    for stage in stages[dispatch.stages_done:]:
        if stage.name == until:
            return None
        verdict = stage(dispatch)
        dispatch.stages_done += 1
        if verdict is not None:
            log.info("job %s stopped at %s: %s %s", dispatch.record.job_id, stage.name,
                     verdict.state.value, verdict.error_code)
            return verdict
    return None

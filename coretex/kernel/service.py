"""The five CAP ``SafetyKernel`` RPCs over whichever policy snapshot is active.

Fail closed, with a reason a CAP peer can show: without an active snapshot every decision is
DENY with rule ``POLICY_UNAVAILABLE``, and when the active snapshot was not re-verified against
its sources within ``max_age_s`` every decision is DENY with rule ``POLICY_STALE``. These are
answers, not errors, so a caller never mistakes "no policy" for a transport problem it may
retry around (OPA #1020), nor for an allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc

from coretex.agent.v1 import safety_pb2
from coretex.kernel.audit import DecisionAuditLog, audited_decision
from coretex.kernel.client import decision_trailers
from coretex.kernel.wire import Request, Response, policy_request_from_wire, response_from_decision
from coretex.policy import Decision, DecisionKind, Explanation, PolicySet

_D = TypeVar("_D", Decision, Response)

log = logging.getLogger("coretex.kernel")

SERVICE_NAMES = ("coretex.agent.v1.SafetyKernel", "cordum.agent.v1.SafetyKernel")
"""Full gRPC service names the kernel answers under (same handlers, different paths)."""
POLICY_UNAVAILABLE = "POLICY_UNAVAILABLE"
POLICY_STALE = "POLICY_STALE"

_CheckBehaviour = Callable[[Request, grpc.ServicerContext], Response]


@dataclass(frozen=True)
class ActivePolicy:
    """What one reference swap installs: the policy, its ListSnapshots id and its verification time."""

    policy: PolicySet
    snapshot_id: str
    verified_at: float


def refusal(rule: str, reason: str, snapshot: str = "") -> Response:
    """A DENY that names why the kernel cannot decide (``rule_id`` = ``rule``)."""
    return Response(
        decision=safety_pb2.DECISION_TYPE_DENY, reason=f"{rule}: {reason}", rule_id=rule, policy_snapshot=snapshot
    )


def _tenant_conflict(msg: Request, snapshot: str) -> Decision | None:
    """Two different tenants in one request is never a policy question: deny it outright."""
    if msg.tenant and msg.meta.tenant_id and msg.tenant != msg.meta.tenant_id:
        reason = f"tenant {msg.tenant!r} and meta.tenant_id {msg.meta.tenant_id!r} disagree"
        return Decision(kind=DecisionKind.DENY, rule_id="", reason=reason, snapshot=snapshot)
    return None


class SafetyKernelService:
    """The five SafetyKernel RPCs over whichever :class:`PolicySet` is installed.

    Check, Evaluate and Simulate return the same decision today (Simulate has no side effects
    to skip yet); Explain returns it too, with a human explanation as ``reason``.
    """

    def __init__(self, policy: PolicySet | None = None, *, max_age_s: float | None = None) -> None:
        self._active: ActivePolicy | None = None
        self.max_age_s = max_age_s
        """Fail closed (POLICY_STALE) when the active policy was not verified for this long; None = never."""
        self.unavailable_reason = "the kernel has no verified policy snapshot"
        self._on_install: list[Callable[[PolicySet], None]] = []
        self.audit: DecisionAuditLog | None = None
        """Where Check/Evaluate record every decision before answering (set by build_kernel)."""
        if policy is not None:
            self.install(policy)

    @property
    def policy(self) -> PolicySet | None:
        active = self._active
        return active.policy if active is not None else None

    @property
    def active(self) -> ActivePolicy | None:
        return self._active

    def install(self, policy: PolicySet, *, snapshot_id: str | None = None, verified_at: float | None = None) -> None:
        """Make ``policy`` the active snapshot (one reference swap: calls see old or new, never a mix).

        ``snapshot_id`` is what ListSnapshots answers (default: the policy's content id);
        ``verified_at`` is when its sources were last verified (default: now).
        """
        when = time.time() if verified_at is None else verified_at
        self._active = ActivePolicy(policy, snapshot_id or policy.snapshot_id, when)
        for callback in self._on_install:
            callback(policy)

    def mark_verified(self, at: float) -> None:
        """The active policy's sources were verified again at ``at`` (restarts the max-age clock)."""
        active = self._active
        if active is not None and at > active.verified_at:
            self._active = replace(active, verified_at=at)

    def on_install(self, callback: Callable[[PolicySet], None]) -> None:
        """Call ``callback`` for every snapshot installed from now on (and the current one, if any)."""
        self._on_install.append(callback)
        if self._active is not None:
            callback(self._active.policy)

    def is_stale(self, now: float | None = None) -> bool:
        active, max_age = self._active, self.max_age_s
        if active is None or max_age is None:
            return False
        return (time.time() if now is None else now) - active.verified_at > max_age

    def ready(self) -> bool:
        """Whether decisions come from a policy (not POLICY_UNAVAILABLE / POLICY_STALE refusals)."""
        return self._active is not None and not self.is_stale()

    def _current(self) -> PolicySet | Response:
        """The policy to decide with, or the refusal to answer instead (read once per call)."""
        active = self._active
        if active is None:
            return refusal(POLICY_UNAVAILABLE, self.unavailable_reason)
        if self.max_age_s is not None:
            age = time.time() - active.verified_at
            if age > self.max_age_s:
                limit = f"{self.max_age_s:g}s"
                reason = f"policy snapshot {active.snapshot_id} not re-verified for {age:.0f}s (max {limit})"
                return refusal(POLICY_STALE, reason, active.policy.snapshot_id)
        return active.policy

    def _explain(self, policy: PolicySet, msg: Request, context: grpc.ServicerContext) -> tuple[Decision, str]:
        try:
            conflict = _tenant_conflict(msg, policy.snapshot_id)
            if conflict is not None:
                return conflict, conflict.reason
            explanation: Explanation = policy.explain(policy_request_from_wire(msg))
            return explanation.decision, explanation.summary()
        except Exception as exc:  # never let a bug look like an answer: the caller fails closed
            log.exception("policy evaluation failed for job %r topic %r", msg.job_id, msg.topic)
            context.abort(grpc.StatusCode.INTERNAL, f"policy evaluation failed: {exc}")

    def _evaluate(self, policy: PolicySet, msg: Request, context: grpc.ServicerContext) -> Decision:
        try:
            conflict = _tenant_conflict(msg, policy.snapshot_id)
            return conflict if conflict is not None else policy.evaluate(policy_request_from_wire(msg))
        except Exception as exc:  # never let a bug look like an answer: the caller fails closed
            log.exception("policy evaluation failed for job %r topic %r", msg.job_id, msg.topic)
            context.abort(grpc.StatusCode.INTERNAL, f"policy evaluation failed: {exc}")

    def _decide(self, msg: Request, context: grpc.ServicerContext, *, audited: bool) -> Response:
        """Check/Evaluate take the fast path; only Explain builds the per-rule trace.

        ``audited`` decisions are written to the hash-chained decision audit before they are
        answered; if that write fails, anything but a deny becomes a deny (AUDIT_UNAVAILABLE).
        """
        current = self._current()
        if isinstance(current, Response):
            return self._audited(msg, current) if audited else current
        decision = self._evaluate(current, msg, context)
        if audited:
            decision = self._audited(msg, decision)
        log.debug(
            "decision %s rule %r for job %r topic %r", decision.kind, decision.rule_id, msg.job_id, msg.topic
        )
        context.set_trailing_metadata(decision_trailers(decision))
        return response_from_decision(decision)

    def _audited(self, msg: Request, decision: _D) -> _D:
        return decision if self.audit is None else audited_decision(self.audit, msg, decision)

    def Check(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._decide(request, context, audited=True)

    def Evaluate(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._decide(request, context, audited=True)

    def Simulate(self, request: Request, context: grpc.ServicerContext) -> Response:
        """Evaluate with no side effects: never audited."""
        return self._decide(request, context, audited=False)

    def Explain(self, request: Request, context: grpc.ServicerContext) -> Response:
        current = self._current()
        if isinstance(current, Response):
            return current
        decision, explanation = self._explain(current, request, context)
        context.set_trailing_metadata(decision_trailers(decision))
        return response_from_decision(decision, reason=explanation)

    def ListSnapshots(
        self, request: safety_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> safety_pb2.ListSnapshotsResponse:
        """``v<version>:<sha256 prefix>`` of the active snapshot; empty when none is loaded."""
        active = self._active
        return safety_pb2.ListSnapshotsResponse(snapshots=[active.snapshot_id] if active is not None else [])

    def generic_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        """One generic handler per service name in :data:`SERVICE_NAMES`, sharing these methods."""

        def check_like(behaviour: _CheckBehaviour) -> grpc.RpcMethodHandler[Request, Response]:
            return grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=safety_pb2.PolicyCheckRequest.FromString,
                response_serializer=safety_pb2.PolicyCheckResponse.SerializeToString,
            )

        # Values differ in message types (Check-like vs ListSnapshots), hence Any here.
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Check": check_like(self.Check),
            "Evaluate": check_like(self.Evaluate),
            "Explain": check_like(self.Explain),
            "Simulate": check_like(self.Simulate),
            "ListSnapshots": grpc.unary_unary_rpc_method_handler(
                self.ListSnapshots,
                request_deserializer=safety_pb2.ListSnapshotsRequest.FromString,
                response_serializer=safety_pb2.ListSnapshotsResponse.SerializeToString,
            ),
        }
        return [grpc.method_handlers_generic_handler(name, handlers) for name in SERVICE_NAMES]

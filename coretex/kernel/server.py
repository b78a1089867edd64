"""The safety kernel gRPC server: CAP ``SafetyKernel`` answered from a compiled policy snapshot.

One implementation is registered under both full service names, ``coretex.agent.v1.SafetyKernel``
and ``cordum.agent.v1.SafetyKernel`` (CAP v2 peers of either generation call one or the other;
the messages are byte-identical). The standard ``grpc.health.v1.Health`` service reports SERVING
only while a policy snapshot is installed: "no policy yet" must never look like a decision.

The server never starts without a snapshot: if the bundles of ``settings.policies_dir`` do not
load, :func:`build_kernel` raises and :func:`serve` logs the error and exits non-zero.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.errors import ConfigError, CoretexError, PolicyError
from coretex.policy import Decision, DecisionKind, Explanation, PolicyRequest, PolicySet
from coretex.settings import Settings, parse_listen

log = logging.getLogger("coretex.kernel")

SERVICE_NAMES = ("coretex.agent.v1.SafetyKernel", "cordum.agent.v1.SafetyKernel")
"""Full gRPC service names the kernel answers under (same handlers, different paths)."""
POLICY_SUFFIXES = (".yaml", ".yml")
STOP_GRACE_S = 5.0
"""How long in-flight calls may finish after SIGTERM/SIGINT."""

_WIRE_DECISION: dict[DecisionKind, safety_pb2.DecisionType] = {
    DecisionKind.ALLOW: safety_pb2.DECISION_TYPE_ALLOW,
    DecisionKind.DENY: safety_pb2.DECISION_TYPE_DENY,
    DecisionKind.REQUIRE_APPROVAL: safety_pb2.DECISION_TYPE_REQUIRE_HUMAN,
    DecisionKind.THROTTLE: safety_pb2.DECISION_TYPE_THROTTLE,
    DecisionKind.ALLOW_WITH_CONSTRAINTS: safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS,
}
_ACTOR_TYPES: dict[int, str] = {
    job_pb2.ACTOR_TYPE_HUMAN: "human",
    job_pb2.ACTOR_TYPE_SERVICE: "service",
}

Request = safety_pb2.PolicyCheckRequest
Response = safety_pb2.PolicyCheckResponse
_CheckBehaviour = Callable[[Request, grpc.ServicerContext], Response]


# --- wire <-> policy -----------------------------------------------------------------------------


def policy_request_from_wire(msg: Request) -> PolicyRequest:
    """CAP ``PolicyCheckRequest`` -> :class:`PolicyRequest`.

    The tenant is ``tenant``, else ``meta.tenant_id``; the actor is ``meta.actor_id``, else
    ``principal_id``; labels are ``meta.labels`` overlaid with the request's own ``labels``.
    """
    meta = msg.meta
    labels = dict(meta.labels)
    labels.update(msg.labels)
    return PolicyRequest(
        job_id=msg.job_id,
        topic=msg.topic,
        tenant=msg.tenant or meta.tenant_id,
        actor_id=meta.actor_id or msg.principal_id,
        actor_type=_ACTOR_TYPES.get(meta.actor_type, ""),
        capability=meta.capability,
        risk_tags=tuple(meta.risk_tags),
        requires=tuple(meta.requires),
        pack_id=meta.pack_id,
        labels=labels,
    )


def response_from_decision(decision: Decision, reason: str | None = None) -> Response:
    """:class:`Decision` -> CAP ``PolicyCheckResponse`` (``reason`` overrides the decision's)."""
    return Response(
        decision=_WIRE_DECISION.get(decision.kind, safety_pb2.DECISION_TYPE_DENY),
        reason=decision.reason if reason is None else reason,
        rule_id=decision.rule_id,
        policy_snapshot=decision.snapshot,
        approval_required=decision.kind is DecisionKind.REQUIRE_APPROVAL,
    )


def _tenant_conflict(msg: Request, snapshot: str) -> Decision | None:
    """Two different tenants in one request is never a policy question: deny it outright."""
    if msg.tenant and msg.meta.tenant_id and msg.tenant != msg.meta.tenant_id:
        reason = f"tenant {msg.tenant!r} and meta.tenant_id {msg.meta.tenant_id!r} disagree"
        return Decision(kind=DecisionKind.DENY, rule_id="", reason=reason, snapshot=snapshot)
    return None


# --- the service ---------------------------------------------------------------------------------


class SafetyKernelService:
    """The five SafetyKernel RPCs over whichever :class:`PolicySet` is installed.

    Check, Evaluate and Simulate return the same decision today (Simulate has no side effects
    to skip yet); Explain returns it too, with a human explanation as ``reason``.
    """

    def __init__(self, policy: PolicySet | None = None) -> None:
        self._policy = policy
        self._on_install: list[Callable[[PolicySet], None]] = []

    @property
    def policy(self) -> PolicySet | None:
        return self._policy

    def install(self, policy: PolicySet) -> None:
        """Make ``policy`` the active snapshot (one reference swap: calls see old or new, never a mix)."""
        self._policy = policy
        for callback in self._on_install:
            callback(policy)

    def on_install(self, callback: Callable[[PolicySet], None]) -> None:
        """Call ``callback`` for every snapshot installed from now on (and the current one, if any)."""
        self._on_install.append(callback)
        if self._policy is not None:
            callback(self._policy)

    def _active(self, context: grpc.ServicerContext) -> PolicySet:
        policy = self._policy
        if policy is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "no policy snapshot loaded")
        return policy

    def _explain(self, msg: Request, context: grpc.ServicerContext) -> tuple[Decision, str]:
        policy = self._active(context)
        try:
            conflict = _tenant_conflict(msg, policy.snapshot_id)
            if conflict is not None:
                return conflict, conflict.reason
            explanation: Explanation = policy.explain(policy_request_from_wire(msg))
            return explanation.decision, explanation.summary()
        except Exception as exc:  # never let a bug look like an answer: the caller fails closed
            log.exception("policy evaluation failed for job %r topic %r", msg.job_id, msg.topic)
            context.abort(grpc.StatusCode.INTERNAL, f"policy evaluation failed: {exc}")

    def _decide(self, msg: Request, context: grpc.ServicerContext) -> Response:
        decision, _ = self._explain(msg, context)
        log.debug(
            "decision %s rule %r for job %r topic %r", decision.kind, decision.rule_id, msg.job_id, msg.topic
        )
        return response_from_decision(decision)

    def Check(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._decide(request, context)

    def Evaluate(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._decide(request, context)

    def Simulate(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._decide(request, context)

    def Explain(self, request: Request, context: grpc.ServicerContext) -> Response:
        decision, explanation = self._explain(request, context)
        return response_from_decision(decision, reason=explanation)

    def ListSnapshots(
        self, request: safety_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> safety_pb2.ListSnapshotsResponse:
        return safety_pb2.ListSnapshotsResponse(snapshots=[self._active(context).snapshot_id])

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


# --- loading bundles ------------------------------------------------------------------------------


def load_policy_dir(directory: Path) -> PolicySet:
    """Compile every ``*.yaml`` / ``*.yml`` file of ``directory`` (sorted by name).

    Raise :class:`PolicyError` when the folder is missing, holds no bundle, or any bundle is bad:
    an empty policy is not a policy.
    """
    if not directory.is_dir():
        raise PolicyError(f"policies dir {str(directory)!r} does not exist or is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    if not files:
        raise PolicyError(f"policies dir {str(directory)!r} holds no *.yaml or *.yml bundle")
    sources = []
    for path in files:
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy bundle {str(path)!r}: cannot be read: {exc}") from exc
    return PolicySet.from_sources(sources)


# --- the server ------------------------------------------------------------------------------------


def _bind_address(listen: str) -> str:
    """``HOST:PORT`` -> a gRPC bind address; port 0 asks the OS for a free port (tests)."""
    host, sep, port = listen.rpartition(":")
    if sep and port == "0" and host:
        host = host.strip("[]")
        number = 0
    else:
        host, number = parse_listen(listen)
    return f"[{host}]:{number}" if ":" in host else f"{host}:{number}"


class KernelServer:
    """A built (not yet started) kernel: the gRPC server, its bound port and its services."""

    def __init__(self, policy: PolicySet, listen: str, max_workers: int = 16) -> None:
        self.service = SafetyKernelService()
        self.health = health.HealthServicer()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kernel-rpc")
        # so_reuseport off: a second kernel on a taken port must fail, not share it silently.
        self.server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers(self.service.generic_handlers())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = _bind_address(listen)
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            self._executor.shutdown(wait=False)
            raise ConfigError(f"kernel cannot listen on {listen}: {exc}") from exc
        if port == 0:
            self._executor.shutdown(wait=False)
            raise ConfigError(f"kernel cannot listen on {listen}")
        self.host = address.rpartition(":")[0]
        self.port: int = port
        self.service.on_install(lambda _policy: self._set_health(health_pb2.HealthCheckResponse.SERVING))
        self.service.install(policy)

    @property
    def address(self) -> str:
        """``HOST:PORT`` clients should dial (the real port when 0 was asked for)."""
        return f"{self.host}:{self.port}"

    @property
    def snapshot_id(self) -> str:
        policy = self.service.policy
        return policy.snapshot_id if policy is not None else ""

    def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def start(self) -> KernelServer:
        self.server.start()
        return self

    def stop(self, grace: float | None = STOP_GRACE_S) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then release threads."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> KernelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=0)


def build_kernel(settings: Settings, listen: str) -> KernelServer:
    """Load the bundles of ``settings.policies_dir`` and build a kernel bound to ``listen``.

    Raise :class:`PolicyError` (bad or missing bundles) or :class:`ConfigError` (bad address).
    """
    policy = load_policy_dir(Path(settings.policies_dir))
    return KernelServer(policy, listen)


def build_server(settings: Settings, listen: str) -> grpc.Server:
    """Like :func:`build_kernel` but only the ``grpc.Server`` (not started; stop it yourself)."""
    return build_kernel(settings, listen).server


def serve(settings: Settings, listen: str) -> None:
    """Run the kernel on ``listen`` until SIGTERM or SIGINT, then stop gracefully.

    Exit non-zero (``SystemExit(1)``) when the bundles do not load or the address cannot be bound:
    without a snapshot the kernel must not serve.
    """
    try:
        kernel = build_kernel(settings, listen)
    except CoretexError as exc:
        log.error("kernel not started: %s", exc)
        raise SystemExit(1) from exc
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("kernel received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        kernel.start()
        log.info("kernel listening on %s snapshot %s", kernel.address, kernel.snapshot_id)
        while not stop.wait(0.5):
            pass
    finally:
        kernel.stop(STOP_GRACE_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("kernel stopped")

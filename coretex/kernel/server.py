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
from collections.abc import Callable, Iterable
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.errors import ConfigError, CoretexError, PolicyError
from coretex.policy import (
    Budgets,
    Constraints,
    Decision,
    DecisionKind,
    DiffLimits,
    Explanation,
    FsMode,
    Network,
    PolicyRequest,
    PolicySet,
    RedactionLevel,
    Remediation,
    Sandbox,
)
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
#
# Constraints on the wire (CAP ``PolicyConstraints``) have no "unset" for scalars and lists and no
# network or filesystem mode, so the mapping is (constraints_from_wire inverts it exactly):
#
#   budgets / diff maxima     None <-> 0 (bundles cannot say 0)
#   tools / commands          None (no restriction) <-> []; () (nothing allowed) <-> [WIRE_NOTHING_ALLOWED]
#   sandbox.network           none -> isolated=true, network_allowlist=[]; egress-allowlist -> the hosts;
#                             any -> [WIRE_ANY_DESTINATION]; unset -> [] with isolated=false
#   sandbox.fs                ro -> WIRE_WHOLE_FS in fs_read_only, fs_read_write = the only writable paths;
#                             rw -> fs_read_write = [WIRE_WHOLE_FS]; unset -> neither
#   redaction_level           None <-> ""; an unknown level from a peer reads as strict (fail closed)
#
# Sub-messages are only set when they carry something, so "no constraints" is an unset field.

WIRE_NOTHING_ALLOWED = "<none>"
"""The one entry of an allowlist that allows nothing (an empty repeated field means "unset")."""
WIRE_ANY_DESTINATION = "*"
"""``network_allowlist`` entry for ``network: any``."""
WIRE_WHOLE_FS = "/"
"""Path entry that stands for the whole filesystem (``fs: ro`` / ``fs: rw``)."""

_WIRE_PRIORITY: dict[int, str] = {
    job_pb2.JOB_PRIORITY_INTERACTIVE: "interactive",
    job_pb2.JOB_PRIORITY_BATCH: "batch",
    job_pb2.JOB_PRIORITY_CRITICAL: "critical",
}


def policy_request_from_wire(msg: Request) -> PolicyRequest:
    """CAP ``PolicyCheckRequest`` -> :class:`PolicyRequest`.

    The tenant is ``tenant``, else ``meta.tenant_id``; the actor is ``meta.actor_id``, else
    ``principal_id``; labels are ``meta.labels`` overlaid with the request's own ``labels``;
    ``priority`` is the lower-cased ``JobPriority`` name (``""`` when unspecified).
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
        priority=_WIRE_PRIORITY.get(msg.priority, ""),
        estimated_cost=msg.estimated_cost,
    )


def _allowlist_to_wire(items: tuple[str, ...] | None) -> list[str]:
    if items is None:
        return []
    return list(items) if items else [WIRE_NOTHING_ALLOWED]


def _allowlist_from_wire(items: Iterable[str]) -> tuple[str, ...] | None:
    listed = list(items)
    return tuple(item for item in listed if item != WIRE_NOTHING_ALLOWED) if listed else None


def _sandbox_to_wire(sandbox: Sandbox) -> safety_pb2.SandboxProfile:
    if sandbox.network is Network.EGRESS_ALLOWLIST:
        network = list(sandbox.allowlist)
    else:
        network = [WIRE_ANY_DESTINATION] if sandbox.network is Network.ANY else []
    read_only = list(sandbox.read_only_paths)
    read_write: list[str] = []
    if sandbox.fs is FsMode.RO:
        read_only.append(WIRE_WHOLE_FS)
        read_write = list(sandbox.read_write_paths or ())
    elif sandbox.fs is FsMode.RW:
        read_write = [WIRE_WHOLE_FS]
    return safety_pb2.SandboxProfile(
        isolated=sandbox.isolated, network_allowlist=network, fs_read_only=read_only, fs_read_write=read_write
    )


def _sandbox_from_wire(msg: safety_pb2.SandboxProfile) -> Sandbox:
    hosts = list(msg.network_allowlist)
    if WIRE_ANY_DESTINATION in hosts:
        network: Network | None = Network.ANY
    elif hosts:
        network = Network.EGRESS_ALLOWLIST
    else:
        network = Network.NONE if msg.isolated else None
    read_only = [path for path in msg.fs_read_only if path != WIRE_WHOLE_FS]
    read_write = [path for path in msg.fs_read_write if path != WIRE_WHOLE_FS]
    fs: FsMode | None = None
    if WIRE_WHOLE_FS in msg.fs_read_only or read_write:  # listed writable paths limit writes: fail closed
        fs = FsMode.RO
    elif WIRE_WHOLE_FS in msg.fs_read_write:
        fs = FsMode.RW
    return Sandbox(
        isolated=msg.isolated,
        network=network,
        allowlist=tuple(hosts) if network is Network.EGRESS_ALLOWLIST else (),
        fs=fs,
        read_only_paths=tuple(read_only),
        read_write_paths=tuple(read_write) if fs is FsMode.RO else None,
    )


def constraints_to_wire(constraints: Constraints) -> safety_pb2.PolicyConstraints:
    """:class:`Constraints` -> CAP ``PolicyConstraints`` (mapping in the comment above)."""
    level = constraints.redaction_level
    msg = safety_pb2.PolicyConstraints(redaction_level=level.value if level is not None else "")
    budgets = constraints.budgets
    if budgets != Budgets():
        msg.budgets.CopyFrom(
            safety_pb2.BudgetConstraints(
                max_runtime_ms=budgets.max_runtime_ms or 0,
                max_retries=budgets.max_retries or 0,
                max_artifact_bytes=budgets.max_artifact_bytes or 0,
                max_concurrent_jobs=budgets.max_concurrent_jobs or 0,
            )
        )
    if constraints.sandbox != Sandbox():
        msg.sandbox.CopyFrom(_sandbox_to_wire(constraints.sandbox))
    if constraints.tools is not None or constraints.commands is not None:
        msg.toolchain.CopyFrom(
            safety_pb2.ToolchainConstraints(
                allowed_tools=_allowlist_to_wire(constraints.tools),
                allowed_commands=_allowlist_to_wire(constraints.commands),
            )
        )
    diff = constraints.diff
    if diff != DiffLimits():
        msg.diff.CopyFrom(
            safety_pb2.DiffConstraints(
                max_files=diff.max_files or 0, max_lines=diff.max_lines or 0, deny_path_globs=list(diff.deny_paths)
            )
        )
    return msg


def constraints_from_wire(msg: safety_pb2.PolicyConstraints) -> Constraints:
    """CAP ``PolicyConstraints`` -> :class:`Constraints` (the inverse of :func:`constraints_to_wire`)."""
    budgets, diff = msg.budgets, msg.diff
    level = msg.redaction_level
    try:
        redaction = RedactionLevel(level) if level else None
    except ValueError:
        redaction = RedactionLevel.STRICT  # a level we do not know: the strictest we do
    return Constraints(
        budgets=Budgets(
            max_runtime_ms=budgets.max_runtime_ms or None,
            max_retries=budgets.max_retries or None,
            max_artifact_bytes=budgets.max_artifact_bytes or None,
            max_concurrent_jobs=budgets.max_concurrent_jobs or None,
        ),
        sandbox=_sandbox_from_wire(msg.sandbox),
        tools=_allowlist_from_wire(msg.toolchain.allowed_tools),
        commands=_allowlist_from_wire(msg.toolchain.allowed_commands),
        diff=DiffLimits(
            max_files=diff.max_files or None, max_lines=diff.max_lines or None, deny_paths=tuple(diff.deny_path_globs)
        ),
        redaction_level=redaction,
    )


def remediation_to_wire(remediation: Remediation) -> safety_pb2.PolicyRemediation:
    return safety_pb2.PolicyRemediation(
        id=remediation.id,
        title=remediation.title,
        summary=remediation.summary,
        replacement_topic=remediation.replacement_topic,
        replacement_capability=remediation.replacement_capability,
        add_labels=dict(remediation.add_labels),
        remove_labels=list(remediation.remove_labels),
    )


def response_from_decision(decision: Decision, reason: str | None = None) -> Response:
    """:class:`Decision` -> CAP ``PolicyCheckResponse`` (``reason`` overrides the decision's).

    ``approval_required`` is set for require_approval (wire ``REQUIRE_HUMAN``); constraints are sent
    whenever the decision has any (allow_with_constraints always; require_approval and throttle
    carry the limits that apply once the job runs); remediations go with deny and
    require_approval. Warnings (advisory matches, ``when`` errors) are appended to the reason,
    CAP having no field for them.
    """
    text = decision.reason if reason is None else reason
    if decision.warnings and reason is None:
        text += f" (warnings: {' | '.join(decision.warnings)})"
    response = Response(
        decision=_WIRE_DECISION.get(decision.kind, safety_pb2.DECISION_TYPE_DENY),
        reason=text,
        rule_id=decision.rule_id,
        policy_snapshot=decision.snapshot,
        approval_required=decision.approval_required,
        remediations=[remediation_to_wire(r) for r in decision.remediations],
    )
    if not decision.constraints.is_empty:
        response.constraints.CopyFrom(constraints_to_wire(decision.constraints))
    return response


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

    def _evaluate(self, msg: Request, context: grpc.ServicerContext) -> Decision:
        policy = self._active(context)
        try:
            conflict = _tenant_conflict(msg, policy.snapshot_id)
            return conflict if conflict is not None else policy.evaluate(policy_request_from_wire(msg))
        except Exception as exc:  # never let a bug look like an answer: the caller fails closed
            log.exception("policy evaluation failed for job %r topic %r", msg.job_id, msg.topic)
            context.abort(grpc.StatusCode.INTERNAL, f"policy evaluation failed: {exc}")

    def _decide(self, msg: Request, context: grpc.ServicerContext) -> Response:
        # Check/Evaluate take the fast path; only Explain builds the per-rule trace.
        decision = self._evaluate(msg, context)
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

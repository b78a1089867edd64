"""Client of the safety kernel, used by the scheduler before every dispatch.

Fail closed: *any* failure to get an answer (kernel down, deadline exceeded, bad address, closed
channel, server error) raises :class:`~coretex.errors.KernelUnavailableError`; callers turn it into
a deny, never into an allow. That holds for every RPC: :meth:`KernelClient.check` (the dispatch
gate), :meth:`~KernelClient.evaluate`, :meth:`~KernelClient.explain`, :meth:`~KernelClient.simulate`
and :meth:`~KernelClient.list_snapshots` (the policy API of the gateway).

CAP's ``PolicyCheckResponse`` carries only the deciding rule. A kernel may add the rest of the
decision as trailing metadata (:func:`decision_trailers` builds it, :class:`KernelAnswer` reads it):
``coretex-matched-rules`` and ``coretex-shadow-rules`` (comma-separated rule ids),
``coretex-enforcement`` and ``coretex-warnings`` (`` | ``-separated). Peers that send none are fine:
the answer then lists the deciding rule alone.

Fork safety: gRPC channels must not cross ``fork()``. The channel is created lazily, in the process
that first calls :meth:`KernelClient.check`, and a child process created by ``os.fork`` (Celery's
prefork pool) forgets any channel inherited from its parent and opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coretex.agent.v1 import safety_pb2
from coretex.errors import ConfigError, KernelUnavailableError
from coretex.kernel.breaker import CircuitBreaker
from coretex.policy import Decision, DecisionKind

SERVICE_PATH = "/coretex.agent.v1.SafetyKernel/"
CHECK_METHOD = SERVICE_PATH + "Check"
CHECK_LIKE_METHODS = ("Check", "Evaluate", "Explain", "Simulate")
LIST_SNAPSHOTS_METHOD = SERVICE_PATH + "ListSnapshots"

DECISION_KINDS_BY_WIRE: dict[int, DecisionKind] = {
    safety_pb2.DECISION_TYPE_ALLOW: DecisionKind.ALLOW,
    safety_pb2.DECISION_TYPE_DENY: DecisionKind.DENY,
    safety_pb2.DECISION_TYPE_REQUIRE_HUMAN: DecisionKind.REQUIRE_APPROVAL,
    safety_pb2.DECISION_TYPE_THROTTLE: DecisionKind.THROTTLE,
    safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS: DecisionKind.ALLOW_WITH_CONSTRAINTS,
}
"""Wire ``DecisionType`` -> policy spelling (``UNSPECIFIED`` has none: callers treat it as a deny)."""

MATCHED_RULES_TRAILER = "coretex-matched-rules"
SHADOW_RULES_TRAILER = "coretex-shadow-rules"
ENFORCEMENT_TRAILER = "coretex-enforcement"
WARNINGS_TRAILER = "coretex-warnings"
_MAX_TRAILER_CHARS = 4096

# Reconnect quickly after a kernel restart: with gRPC's default backoff (up to 120 s) a client
# would keep failing closed long after the kernel is back.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

ASK_AHEAD_THREADS = 8
"""Checks sent ahead at once per process; more wait for a free thread (each call is ~1 ms)."""

# grpc's classes are generic only in the type stubs, hence the string.
_Request = safety_pb2.PolicyCheckRequest
_Response = safety_pb2.PolicyCheckResponse
_Check: TypeAlias = "grpc.UnaryUnaryMultiCallable[_Request, _Response]"
_List: TypeAlias = "grpc.UnaryUnaryMultiCallable[safety_pb2.ListSnapshotsRequest, safety_pb2.ListSnapshotsResponse]"
_Trailers: TypeAlias = Sequence[tuple[str, str | bytes]]


def decision_trailers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """What a kernel may send as trailing metadata with ``decision`` (ASCII, bounded, never empty keys).

    The server calls ``context.set_trailing_metadata(decision_trailers(decision))``; gRPC metadata
    values must be printable ASCII, so anything else is escaped.
    """

    def ascii_text(text: str) -> str:
        return text.encode("ascii", "backslashreplace").decode("ascii")[:_MAX_TRAILER_CHARS]

    return (
        (MATCHED_RULES_TRAILER, ascii_text(",".join(decision.matched_rule_ids))),
        (SHADOW_RULES_TRAILER, ascii_text(",".join(decision.shadow_rule_ids))),
        (ENFORCEMENT_TRAILER, decision.enforcement.value),
        (WARNINGS_TRAILER, ascii_text(" | ".join(decision.warnings))),
    )


@dataclass(frozen=True)
class KernelAnswer:
    """A kernel response plus what its trailing metadata said about the rest of the decision."""

    response: safety_pb2.PolicyCheckResponse
    matched_rule_ids: tuple[str, ...]
    """Every effective matched rule; the deciding rule alone when the kernel sent no trailer."""
    shadow_rule_ids: tuple[str, ...] = ()
    enforcement: str = ""
    """``hard``/``soft``/``advisory``; ``""`` when the kernel did not say."""
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, response: safety_pb2.PolicyCheckResponse, trailers: _Trailers | None) -> KernelAnswer:
        meta = {key: value if isinstance(value, str) else value.decode("ascii", "replace")
                for key, value in (trailers or ())}
        matched = meta.get(MATCHED_RULES_TRAILER)
        if matched is None:
            rule_ids: tuple[str, ...] = (response.rule_id,) if response.rule_id else ()
        else:
            rule_ids = tuple(r for r in matched.split(",") if r)
        return cls(
            response=response,
            matched_rule_ids=rule_ids,
            shadow_rule_ids=tuple(r for r in meta.get(SHADOW_RULES_TRAILER, "").split(",") if r),
            enforcement=meta.get(ENFORCEMENT_TRAILER, ""),
            warnings=tuple(w for w in meta.get(WARNINGS_TRAILER, "").split(" | ") if w),
        )


class KernelClient:
    """Ask the kernel at ``addr`` (``HOST:PORT``) for decisions, each call bounded by ``timeout_s``.

    Safe to share between threads; one channel per process, opened on first use and reopened
    after :meth:`close`.
    """

    def __init__(self, addr: str, timeout_s: float) -> None:
        if not addr:
            raise ConfigError("kernel address is empty")
        if timeout_s <= 0:
            raise ConfigError(f"kernel timeout must be positive, got {timeout_s!r}")
        self.addr = addr
        self.timeout_s = float(timeout_s)
        self.breaker = CircuitBreaker()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channel: grpc.Channel | None = None
        self._askers: ThreadPoolExecutor | None = None
        """Threads that make the Checks sent ahead (:meth:`check_ahead`), started on first use."""
        self._check: _Check | None = None
        self._methods: dict[str, _Check] = {}
        self._list: _List | None = None
        _LIVE_CLIENTS.add(self)

    def __repr__(self) -> str:
        return f"KernelClient(addr={self.addr!r}, timeout_s={self.timeout_s})"

    def _forget_inherited_channel(self) -> None:
        # Runs in a fresh child: the parent's lock may be held by a thread that does not exist here,
        # and the parent's channel must be neither used nor closed (closing touches shared state).
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._askers = None
        self._channel = None
        self._check = None
        self._methods = {}
        self._list = None

    def _callable(self) -> _Check:
        if self._pid != os.getpid():  # forked without the at-fork hook (should not happen)
            self._forget_inherited_channel()
        with self._lock:
            if self._check is None:
                channel = grpc.insecure_channel(self.addr, options=_CHANNEL_OPTIONS)
                self._channel = channel
                self._methods = {
                    name: channel.unary_unary(
                        SERVICE_PATH + name,
                        request_serializer=safety_pb2.PolicyCheckRequest.SerializeToString,
                        response_deserializer=safety_pb2.PolicyCheckResponse.FromString,
                    )
                    for name in CHECK_LIKE_METHODS
                }
                self._list = channel.unary_unary(
                    LIST_SNAPSHOTS_METHOD,
                    request_serializer=safety_pb2.ListSnapshotsRequest.SerializeToString,
                    response_deserializer=safety_pb2.ListSnapshotsResponse.FromString,
                )
                self._check = self._methods["Check"]
            return self._check

    def _method(self, name: str) -> _Check:
        self._callable()
        with self._lock:
            method = self._methods.get(name)
        if method is None:  # closed concurrently: report it like any other lost channel
            raise ValueError("kernel channel closed")
        return method

    def _unavailable(self, exc: Exception) -> KernelUnavailableError:
        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            return KernelUnavailableError(f"KERNEL_UNAVAILABLE: {self.addr}: {name}: {exc.details() or 'no details'}")
        return KernelUnavailableError(f"KERNEL_UNAVAILABLE: {self.addr}: {exc}")

    def _ask(self, name: str, request: safety_pb2.PolicyCheckRequest) -> KernelAnswer:
        try:
            response, call = self._method(name).with_call(request, timeout=self.timeout_s, wait_for_ready=False)
            return KernelAnswer.of(response, call.trailing_metadata())
        except (grpc.RpcError, ValueError) as exc:  # ValueError: a channel closed under our feet
            raise self._unavailable(exc) from exc

    def check(self, request: safety_pb2.PolicyCheckRequest) -> safety_pb2.PolicyCheckResponse:
        """The kernel's decision for ``request``; :class:`KernelUnavailableError` if there is none.

        Behind a circuit breaker: after repeated failures calls fail at once until a trial succeeds.
        """
        self.breaker.before_call(self.addr)
        return self._checked(request)

    def check_ahead(
        self, request: safety_pb2.PolicyCheckRequest
    ) -> Callable[[], safety_pb2.PolicyCheckResponse]:
        """Send the Check for ``request`` now and return what waits for its answer (raising as
        :meth:`check` does), so the caller can do other work while the kernel decides. The call
        is made by one of a few long-lived threads: a gRPC future would start a thread per call."""
        self.breaker.before_call(self.addr)
        with self._lock:
            if self._askers is None:
                self._askers = ThreadPoolExecutor(ASK_AHEAD_THREADS, thread_name_prefix="kernel-ask")
            askers = self._askers
        pending = askers.submit(self._checked, request)
        return pending.result

    def _checked(self, request: safety_pb2.PolicyCheckRequest) -> safety_pb2.PolicyCheckResponse:
        try:
            call = self._callable()
            response = call(request, timeout=self.timeout_s, wait_for_ready=False)
        except grpc.RpcError as exc:
            self.breaker.failed()
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            raise KernelUnavailableError(
                f"KERNEL_UNAVAILABLE: {self.addr}: {name}: {exc.details() or 'no details'}"
            ) from exc
        except ValueError as exc:  # grpc raises ValueError for a channel closed under our feet
            self.breaker.failed()
            raise KernelUnavailableError(f"KERNEL_UNAVAILABLE: {self.addr}: {exc}") from exc
        self.breaker.succeeded()
        return response

    def evaluate(self, request: safety_pb2.PolicyCheckRequest) -> KernelAnswer:
        """The kernel's ``Evaluate`` answer (the decision point for the policy API)."""
        return self._ask("Evaluate", request)

    def explain(self, request: safety_pb2.PolicyCheckRequest) -> KernelAnswer:
        """The kernel's ``Explain`` answer: the decision with a human explanation as ``reason``."""
        return self._ask("Explain", request)

    def simulate(self, request: safety_pb2.PolicyCheckRequest) -> KernelAnswer:
        """The kernel's ``Simulate`` answer: a decision with no side effects (never audited)."""
        return self._ask("Simulate", request)

    def list_snapshots(self) -> list[str]:
        """Ids of the policy snapshots the kernel holds, active one first."""
        try:
            self._callable()
            with self._lock:
                method = self._list
            if method is None:
                raise ValueError("kernel channel closed")
            reply = method(safety_pb2.ListSnapshotsRequest(), timeout=self.timeout_s, wait_for_ready=False)
        except (grpc.RpcError, ValueError) as exc:
            raise self._unavailable(exc) from exc
        return list(reply.snapshots)

    def ready(self) -> bool:
        """Whether the kernel's gRPC health check answers SERVING within the timeout; never raises."""
        try:
            self._callable()
            assert self._channel is not None
            stub = health_pb2_grpc.HealthStub(self._channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout_s)
        except (grpc.RpcError, ValueError):
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        """Close the channel (if this process opened one); a later :meth:`check` opens a new one."""
        if self._pid != os.getpid():
            self._forget_inherited_channel()
            return
        with self._lock:
            channel, self._channel, self._check = self._channel, None, None
            self._methods, self._list = {}, None
            askers, self._askers = self._askers, None
        if askers is not None:
            askers.shutdown(wait=False)
        if channel is not None:
            channel.close()

    def __enter__(self) -> KernelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LIVE_CLIENTS: weakref.WeakSet[KernelClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_LIVE_CLIENTS):
        client._forget_inherited_channel()


os.register_at_fork(after_in_child=_after_fork_in_child)

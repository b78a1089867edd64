"""Client of the safety kernel, used by the scheduler before every dispatch.

Fail closed: *any* failure to get an answer (kernel down, deadline exceeded, bad address, closed
channel, server error) raises :class:`~coretex.errors.KernelUnavailableError`; callers turn it into
a deny, never into an allow.

Fork safety: gRPC channels must not cross ``fork()``. The channel is created lazily, in the process
that first calls :meth:`KernelClient.check`, and a child process created by ``os.fork`` (Celery's
prefork pool) forgets any channel inherited from its parent and opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coretex.agent.v1 import safety_pb2
from coretex.errors import ConfigError, KernelUnavailableError

CHECK_METHOD = "/coretex.agent.v1.SafetyKernel/Check"

# Reconnect quickly after a kernel restart: with gRPC's default backoff (up to 120 s) a client
# would keep failing closed long after the kernel is back.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# grpc's classes are generic only in the type stubs, hence the string.
_Request = safety_pb2.PolicyCheckRequest
_Response = safety_pb2.PolicyCheckResponse
_Check: TypeAlias = "grpc.UnaryUnaryMultiCallable[_Request, _Response]"


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
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channel: grpc.Channel | None = None
        self._check: _Check | None = None
        _LIVE_CLIENTS.add(self)

    def __repr__(self) -> str:
        return f"KernelClient(addr={self.addr!r}, timeout_s={self.timeout_s})"

    def _forget_inherited_channel(self) -> None:
        # Runs in a fresh child: the parent's lock may be held by a thread that does not exist here,
        # and the parent's channel must be neither used nor closed (closing touches shared state).
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channel = None
        self._check = None

    def _callable(self) -> _Check:
        if self._pid != os.getpid():  # forked without the at-fork hook (should not happen)
            self._forget_inherited_channel()
        with self._lock:
            if self._check is None:
                self._channel = grpc.insecure_channel(self.addr, options=_CHANNEL_OPTIONS)
                self._check = self._channel.unary_unary(
                    CHECK_METHOD,
                    request_serializer=safety_pb2.PolicyCheckRequest.SerializeToString,
                    response_deserializer=safety_pb2.PolicyCheckResponse.FromString,
                )
            return self._check

    def check(self, request: safety_pb2.PolicyCheckRequest) -> safety_pb2.PolicyCheckResponse:
        """The kernel's decision for ``request``; :class:`KernelUnavailableError` if there is none."""
        try:
            call = self._callable()
            return call(request, timeout=self.timeout_s, wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            raise KernelUnavailableError(
                f"KERNEL_UNAVAILABLE: {self.addr}: {name}: {exc.details() or 'no details'}"
            ) from exc
        except ValueError as exc:  # grpc raises ValueError for a channel closed under our feet
            raise KernelUnavailableError(f"KERNEL_UNAVAILABLE: {self.addr}: {exc}") from exc

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

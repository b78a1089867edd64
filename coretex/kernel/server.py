"""The safety kernel process: a gRPC server over a hot-reloaded, signed policy snapshot.

One implementation (:mod:`.service`) is registered under both full service names,
``coretex.agent.v1.SafetyKernel`` and ``cordum.agent.v1.SafetyKernel`` (CAP v2 peers of either
generation call one or the other; the messages are byte-identical). The standard
``grpc.health.v1.Health`` service reports SERVING only while decisions come from a verified,
fresh snapshot: "no policy yet" must never look like a decision.

The kernel starts even when its policy sources fail: it serves the last-known-good if one
verifies, else it is NOT READY (health NOT_SERVING, every decision DENY ``POLICY_UNAVAILABLE``)
and its reload thread keeps trying (:mod:`.reload`). Only a bad address or bad settings stop
:func:`serve` with a non-zero exit.

The CAP <-> policy conversions live in :mod:`.wire` and the RPCs in :mod:`.service`; both are
re-exported here for existing imports.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from coretex.errors import ConfigError, PolicyError
from coretex.kernel.audit import DecisionAuditLog
from coretex.kernel.reload import PolicyReloader
from coretex.kernel.service import SERVICE_NAMES, SafetyKernelService
from coretex.kernel.sources import POLICY_SUFFIXES, read_policy_files
from coretex.kernel.wire import (
    WIRE_ANY_DESTINATION,
    WIRE_NOTHING_ALLOWED,
    WIRE_WHOLE_FS,
    Request,
    Response,
    constraints_from_wire,
    constraints_to_wire,
    policy_request_from_wire,
    remediation_to_wire,
    response_from_decision,
)
from coretex.policy import PolicySet
from coretex.settings import Settings, parse_listen
from coretex.store._redis import connect

__all__ = [
    "POLICY_SUFFIXES",
    "SERVICE_NAMES",
    "STOP_GRACE_S",
    "WIRE_ANY_DESTINATION",
    "WIRE_NOTHING_ALLOWED",
    "WIRE_WHOLE_FS",
    "KernelServer",
    "Request",
    "Response",
    "SafetyKernelService",
    "build_kernel",
    "build_server",
    "constraints_from_wire",
    "constraints_to_wire",
    "load_policy_dir",
    "policy_request_from_wire",
    "remediation_to_wire",
    "response_from_decision",
    "serve",
]

log = logging.getLogger("coretex.kernel")

STOP_GRACE_S = 5.0
"""How long in-flight calls may finish after SIGTERM/SIGINT."""


def load_policy_dir(directory: Path) -> PolicySet:
    """Compile every ``*.yaml`` / ``*.yml`` file of ``directory`` (sorted by name), unverified.

    For tools and tests; the kernel itself loads through :mod:`.reload` (signatures, bundle
    tests, config-service bundles). Raise :class:`PolicyError` when the folder is missing, holds
    no bundle, or any bundle is bad: an empty policy is not a policy.
    """
    sources = read_policy_files(directory)
    if not sources:
        raise PolicyError(f"policies dir {str(directory)!r} holds no *.yaml or *.yml bundle")
    try:
        return PolicySet.from_sources((source.name, source.body.decode("utf-8")) for source in sources)
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policies dir {str(directory)!r}: a bundle is not UTF-8: {exc}") from exc


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
    """A built (not yet started) kernel: the gRPC server, its bound port, its services and reloader."""

    def __init__(
        self,
        policy: PolicySet | None,
        listen: str,
        max_workers: int = 16,
        *,
        service: SafetyKernelService | None = None,
    ) -> None:
        self.service = service or SafetyKernelService()
        self.health = health.HealthServicer()
        self.reloader: PolicyReloader | None = None
        self._serving: bool | None = None
        self._health_lock = threading.Lock()
        self.refresh_health()
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
        if policy is not None:
            self.service.install(policy)
            self.refresh_health()

    @property
    def address(self) -> str:
        """``HOST:PORT`` clients should dial (the real port when 0 was asked for)."""
        return f"{self.host}:{self.port}"

    @property
    def snapshot_id(self) -> str:
        """The content id decisions carry (``policy_snapshot``); empty while no policy is loaded."""
        policy = self.service.policy
        return policy.snapshot_id if policy is not None else ""

    def refresh_health(self) -> None:
        """SERVING exactly while the service decides from a fresh policy (called after every reload check)."""
        serving = self.service.ready()
        with self._health_lock:
            if serving == self._serving:
                return
            self._serving = serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *SERVICE_NAMES):
                self.health.set(name, status)

    def start(self) -> KernelServer:
        self.server.start()
        if self.reloader is not None:
            self.reloader.start()
        return self

    def stop(self, grace: float | None = STOP_GRACE_S) -> None:
        """Stop reloading, report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, release threads."""
        if self.reloader is not None:
            self.reloader.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> KernelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=0)


def build_kernel(settings: Settings, listen: str) -> KernelServer:
    """Build a kernel bound to ``listen`` with its first policy load done (not yet started).

    The first load runs here, synchronously: from the sources, else from a verified
    last-known-good, else the kernel starts NOT READY. :meth:`KernelServer.start` starts the
    reload thread. Raise :class:`ConfigError` for a bad address or bad policy source settings.
    """
    kernel = KernelServer(None, listen, settings.kernel_threads,
                          service=SafetyKernelService(max_age_s=settings.policy_max_age_s))
    client = connect(settings)
    kernel.service.audit = DecisionAuditLog(client, settings)
    try:
        kernel.reloader = PolicyReloader(
            kernel.service,
            settings,
            client,
            kernel_id=settings.kernel_id or f"{os.uname().nodename}:{kernel.port}",
            addr=kernel.address,
            on_state=kernel.refresh_health,
        )
        kernel.reloader.load_initial()
    except BaseException:
        client.close()
        kernel.reloader = None
        kernel.stop(grace=0)
        raise
    return kernel


def build_server(settings: Settings, listen: str) -> grpc.Server:
    """Like :func:`build_kernel` but only the ``grpc.Server`` (not started; stop it yourself).

    The policy of the first load stays: there is no reload thread (use :func:`build_kernel`).
    """
    kernel = build_kernel(settings, listen)
    if kernel.reloader is not None:
        kernel.reloader.stop()
        kernel.reloader = None
    return kernel.server


def serve(settings: Settings, listen: str) -> None:
    """Run the kernel on ``listen`` until SIGTERM or SIGINT, then stop gracefully.

    Exit non-zero (``SystemExit(1)``) only when the address cannot be bound or the settings are
    bad; failing policy sources leave the kernel running NOT READY (every decision DENY
    ``POLICY_UNAVAILABLE``) while it retries them.
    """
    try:
        kernel = build_kernel(settings, listen)
    except ConfigError as exc:
        log.error("kernel not started: %s", exc)
        raise SystemExit(1) from exc
    metrics = _start_metrics(settings.kernel_metrics_addr)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("kernel received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        kernel.start()
        _log_started(kernel)
        while not stop.wait(0.5):
            pass
    finally:
        kernel.stop(STOP_GRACE_S)
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("kernel stopped")


def _log_started(kernel: KernelServer) -> None:
    reloader = kernel.reloader
    sources = reloader.describe_sources() if reloader is not None else "no reload"
    status = reloader.status() if reloader is not None else None
    state = f"{status.status.value} {status.snapshot_id}".rstrip() if status is not None else ""
    if kernel.snapshot_id:
        log.info("kernel listening on %s snapshot %s (%s; policy from %s)", kernel.address, kernel.snapshot_id, state,
                 sources)
    else:
        reason = f"{status.stage}: {status.message}" if status is not None else ""
        log.error("kernel listening on %s NOT READY: every decision is DENY POLICY_UNAVAILABLE until a verified "
                  "policy loads from %s (%s)", kernel.address, sources, reason)


def _start_metrics(addr: str | None) -> WSGIServer | None:
    """Serve Prometheus metrics on ``addr`` (``HOST:PORT``) when set."""
    if not addr:
        return None
    host, port = parse_listen(addr)
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(f"kernel metrics cannot listen on {addr}: {exc}") from exc
    log.info("kernel metrics on http://%s/metrics", addr)
    return server

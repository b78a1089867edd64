"""The safety kernel adapter: a gRPC server over :mod:`coretex.policy` and its client.

- :func:`serve` runs ``coretex kernel --listen HOST:PORT`` until SIGTERM/SIGINT.
- :func:`build_kernel` / :func:`build_server` build a bound, not yet started server (tests).
- :class:`KernelClient` asks for decisions; every failure is :class:`KernelUnavailableError`
  and callers fail closed.
- :mod:`.reload` keeps the served policy on the newest signed, tested sources (files or URL +
  config-service bundles), with a last-known-good; :func:`read_kernel_statuses` reports each
  kernel's snapshot and readiness.
"""

from coretex.kernel.client import KernelClient
from coretex.kernel.server import (
    SERVICE_NAMES,
    KernelServer,
    SafetyKernelService,
    build_kernel,
    build_server,
    load_policy_dir,
    policy_request_from_wire,
    response_from_decision,
    serve,
)
from coretex.kernel.status import read_kernel_statuses

__all__ = [
    "SERVICE_NAMES",
    "KernelClient",
    "KernelServer",
    "SafetyKernelService",
    "build_kernel",
    "build_server",
    "load_policy_dir",
    "policy_request_from_wire",
    "read_kernel_statuses",
    "response_from_decision",
    "serve",
]

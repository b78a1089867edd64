"""The one exception tree of Coretex.

    CoretexError
    ├── ConfigError            bad settings, config files or overlays
    ├── EnvelopeError          bytes that are not a usable CAP BusPacket
    ├── PointerError           a malformed or foreign ctx:/res:/art: pointer
    ├── PolicyError            a policy bundle that cannot be loaded or evaluated
    ├── KernelUnavailableError the safety kernel could not be asked (callers fail closed)
    ├── StoreError             Redis said no, or is unreachable
    │   ├── NotFoundError      the record does not exist (or belongs to another tenant)
    │   └── IllegalTransitionError  a state change the lifecycle forbids
    └── RoutingError           no pool can take a topic

Third-party errors (redis, grpc, kombu) are translated at the adapter edge, ``raise ... from exc``,
so callers only ever catch Coretex errors.
"""

from __future__ import annotations


class CoretexError(Exception):
    """Root of every error Coretex raises on purpose."""

    code = "coretex_error"


class ConfigError(CoretexError):
    code = "config_error"


class EnvelopeError(CoretexError):
    code = "bad_envelope"


class PointerError(CoretexError):
    code = "bad_pointer"


class PolicyError(CoretexError):
    code = "policy_error"


class KernelUnavailableError(CoretexError):
    code = "KERNEL_UNAVAILABLE"


class StoreError(CoretexError):
    code = "store_error"


class NotFoundError(StoreError):
    code = "not_found"


class IllegalTransitionError(StoreError):
    code = "illegal_transition"


class RoutingError(CoretexError):
    code = "no_pool_mapping"

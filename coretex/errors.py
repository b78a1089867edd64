"""The one exception tree of Coretex. The roots live here; each leaf lives beside its concept.

    CoretexError
    ├── ConfigError                 bad settings, config files or overlays
    │   ├── ConfigInvalidError, ConfigConflictError, ConfigNotLoadedError     (config/errors.py)
    │   ├── InvalidSchemaIdError, SchemaInvalidError                          (model/schema.py)
    │   │   └── SchemaTooLargeError, UnresolvedRefError
    │   └── RedactionConfigError (also a SecretError)                         (secrets/refs.py)
    ├── EnvelopeError               bytes that are not a usable CAP BusPacket
    ├── PointerError                a malformed or foreign ctx:/res:/art: pointer
    ├── PolicyError                 a policy bundle that cannot be loaded or evaluated
    │   └── PolicyBundleInvalidError (config/errors.py), WhenExpressionError (policy/when.py)
    ├── KernelUnavailableError      the safety kernel could not be asked (callers fail closed)
    ├── StoreError                  Redis said no, or is unreachable
    │   ├── NotFoundError           the record does not exist (or belongs to another tenant)
    │   ├── IllegalTransitionError  a state change the lifecycle forbids
    │   ├── ArtifactTooLargeError, InvalidArtifactError, ArtifactCorruptError,
    │   │   ArtifactDecryptionError                                          (store/artifacts.py)
    │   ├── LockRequestError, LockNotHeldError, LockTimeoutError, LockQueueFullError (store/locks.py)
    │   ├── SchemaInUseError, SchemaLimitError                                (store/schemas.py)
    │   └── StoreTooNewError                                                  (store/migrations.py)
    ├── RoutingError                no pool can take a topic
    ├── SchemaViolationError        an instance does not match its JSON Schema (model/schema.py)
    ├── SecretError                 secret references and resolution          (secrets/refs.py)
    │   └── SecretRefError, SecretBackendUnavailableError, SecretAccessDeniedError, SecretNotFoundError
    └── HandlerError                a job handler's own failure with an error code (sdk/_worker.py)

Every class carries a machine-readable ``code``. Third-party errors (redis, grpc, kombu) are
translated at the adapter edge, ``raise ... from exc``, so callers only ever catch Coretex errors.
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

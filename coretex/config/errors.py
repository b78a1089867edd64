"""Errors of the config service, all under :class:`~coretex.errors.ConfigError`.

    ConfigError (coretex.errors)
    ├── ConfigInvalidError     a document or merged config fails its section schema (nothing written)
    ├── ConfigConflictError    other writers kept committing; the change was not applied
    └── ConfigNotLoadedError   no effective config has been committed yet
    PolicyError (coretex.errors)
    └── PolicyBundleInvalidError  a policy bundle that the kernel could not load (nothing written)
"""

from __future__ import annotations

from coretex.errors import ConfigError, PolicyError


class ConfigInvalidError(ConfigError):
    """Refused config: ``section``, JSON Pointer ``path`` inside it and ``reason`` say what is wrong.

    ``context`` names the config that failed: a document (``pack acme``) or an effective config
    (``effective config of tenant t1``), because a valid overlay can still break a tenant's merge.
    """

    code = "config_invalid"

    def __init__(self, section: str, path: str, reason: str, context: str = "") -> None:
        self.section = section
        self.path = path
        self.reason = reason
        self.context = context
        where = f"{context}: " if context else ""
        super().__init__(f"{where}section {section!r} at {path}: {reason}")


class ConfigConflictError(ConfigError):
    code = "config_conflict"


class ConfigNotLoadedError(ConfigError):
    code = "config_not_loaded"


class PolicyBundleInvalidError(PolicyError):
    code = "policy_bundle_invalid"

"""Artifact retention classes and the artifact store's limits (pure: parsed from a mapping, no I/O)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coretex.errors import ConfigError

DAY_S = 24 * 3600
KIB = 1024
MIB = 1024 * KIB
MIN_CHUNK_BYTES = 1 * KIB
MAX_CHUNK_BYTES = 64 * MIB

ENV_KEY = "CORETEX_ARTIFACT_KEY"
ENV_INTS = {
    "max_bytes": "CORETEX_ARTIFACT_MAX_BYTES",
    "chunk_bytes": "CORETEX_ARTIFACT_CHUNK_BYTES",
    "ttl_short_s": "CORETEX_ARTIFACT_TTL_SHORT",
    "ttl_standard_s": "CORETEX_ARTIFACT_TTL_STANDARD",
    "ttl_audit_s": "CORETEX_ARTIFACT_TTL_AUDIT",
}
"""Config field -> the environment variable that sets it (integers, bytes or seconds)."""


class Retention(StrEnum):
    """How long an artifact lives: temp logs are ``short``, evidence is ``audit``."""

    SHORT = "short"
    STANDARD = "standard"
    AUDIT = "audit"


@dataclass(frozen=True)
class ArtifactConfig:
    """Limits, retention and encryption of the artifact store (see :meth:`from_env` for the variables)."""

    ttl_short_s: int = DAY_S
    """Lifetime of ``short`` artifacts, seconds: ``CORETEX_ARTIFACT_TTL_SHORT``."""
    ttl_standard_s: int = 30 * DAY_S
    """Lifetime of ``standard`` artifacts, seconds: ``CORETEX_ARTIFACT_TTL_STANDARD``."""
    ttl_audit_s: int = 365 * DAY_S
    """Lifetime of ``audit`` artifacts, seconds (never shorter than standard): ``CORETEX_ARTIFACT_TTL_AUDIT``."""
    max_bytes: int = 16 * MIB
    """Largest artifact accepted from anyone; a policy may only lower it: ``CORETEX_ARTIFACT_MAX_BYTES``."""
    chunk_bytes: int = 256 * KIB
    """Largest single Redis value of an artifact: ``CORETEX_ARTIFACT_CHUNK_BYTES``."""
    encryption_key: bytes | None = field(default=None, repr=False)
    """32-byte AES-256-GCM key for encryption at rest, or None: ``CORETEX_ARTIFACT_KEY`` (base64)."""

    def __post_init__(self) -> None:
        for name, var in ENV_INTS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} ({var}) must be a positive integer, got {value!r}")
        if not MIN_CHUNK_BYTES <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(
                f"chunk_bytes ({ENV_INTS['chunk_bytes']}) must be {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}, "
                f"got {self.chunk_bytes}"
            )
        if not self.ttl_short_s <= self.ttl_standard_s <= self.ttl_audit_s:
            raise ConfigError(
                "retention TTLs must grow short <= standard <= audit, got "
                f"{self.ttl_short_s} / {self.ttl_standard_s} / {self.ttl_audit_s} s "
                f"({ENV_INTS['ttl_short_s']} / {ENV_INTS['ttl_standard_s']} / {ENV_INTS['ttl_audit_s']})"
            )
        if self.encryption_key is not None and len(self.encryption_key) != 32:
            raise ConfigError(f"encryption_key ({ENV_KEY}) must be 32 bytes, got {len(self.encryption_key)}")

    def ttl_for(self, retention: Retention) -> int:
        return {
            Retention.SHORT: self.ttl_short_s,
            Retention.STANDARD: self.ttl_standard_s,
            Retention.AUDIT: self.ttl_audit_s,
        }[retention]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ArtifactConfig:
        """Read the ``CORETEX_ARTIFACT_*`` variables; unset or empty ones keep their defaults.

        The key is 32 random bytes in standard base64 (``openssl rand -base64 32``). A bad value raises
        :class:`ConfigError` naming the variable (and never echoing the key).
        """
        values: dict[str, Any] = {}
        for name, var in ENV_INTS.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError as exc:
                    raise ConfigError(f"{var} must be an integer, got {raw!r}") from exc
        raw_key = env.get(ENV_KEY, "").strip()
        if raw_key:
            try:
                key = base64.b64decode(raw_key, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"{ENV_KEY} is not valid base64") from exc
            if len(key) != 32:
                raise ConfigError(f"{ENV_KEY} must decode to 32 bytes (AES-256), got {len(key)}")
            values["encryption_key"] = key
        return cls(**values)

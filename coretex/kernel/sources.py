"""Where the kernel's policy comes from: base files (or one URL) plus config-service bundles.

Every source is read as the exact bytes that were signed, with its signature text beside it:

==========  ==========================================  =======================================
kind        name (the bundle name in decisions)         signature
==========  ==========================================  =======================================
file        the file's path (``*.yaml`` / ``*.yml``)    ``<file>.sig`` next to it, if present
url         ``CORETEX_POLICY_URL``                      ``<url>.sig`` (404 = unsigned)
config      ``config:<bundle id>``                      first content line ``# coretex-signature:``
==========  ==========================================  =======================================

Files come from ``settings.policies_dir`` unless a URL is configured. Config-service bundles are
the enabled ones of ``<ns>:cfg:<scope>:<id>`` (``CORETEX_POLICY_CONFIG_SCOPE`` / ``_ID``, default
``system`` / ``policy``; only ``CORETEX_POLICY_CONFIG_KEY`` when set), read through
:class:`~coretex.config.policy_bundles.PolicyBundleStore`. Any read failure is a
:class:`PolicySourceError` (the ``fetch`` stage); judging the bytes is the pipeline's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from coretex.config.keys import ConfigKeys
from coretex.config.policy_bundles import PolicyBundleStore
from coretex.config.service import ConfigServiceOptions
from coretex.errors import ConfigError, PolicyError, StoreError
from coretex.policy.signing import split_embedded_signature
from coretex.settings import Settings

POLICY_SUFFIXES = (".yaml", ".yml")
SIGNATURE_SUFFIX = ".sig"
CONFIG_PREFIX = "config:"
URL_TIMEOUT_S = 5.0
URL_REFRESH_S = 10.0
"""A URL is fetched at most this often (success or failure), whatever the poll interval."""
MAX_SOURCE_BYTES = 1024 * 1024
_ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PolicySourceError(PolicyError):
    """A policy source could not be read (missing folder, unreachable URL or Redis)."""

    code = "policy_source_unavailable"


class SourceKind(StrEnum):
    FILE = "file"
    URL = "url"
    CONFIG = "config"


@dataclass(frozen=True)
class PolicySource:
    """One bundle as signed: its bytes, verbatim, and its signature text as stored."""

    name: str
    kind: SourceKind
    body: bytes = field(repr=False)
    signature: str | None = field(default=None, repr=False)
    """The signature JSON exactly as found; None = unsigned."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def to_record(self) -> dict[str, Any]:
        """JSON-ready form for the last-known-good (bytes as base64, untouched)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "body": base64.b64encode(self.body).decode("ascii"),
            "sha256": self.sha256,
            "signature": self.signature,
        }

    @classmethod
    def from_record(cls, data: Any) -> PolicySource:
        """Inverse of :meth:`to_record`; :class:`PolicySourceError` for anything malformed or altered."""
        try:
            body = base64.b64decode(data["body"], validate=True)
            source = cls(str(data["name"]), SourceKind(data["kind"]), body, data["signature"])
            expected = str(data["sha256"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise PolicySourceError(f"malformed policy source record: {exc!r}") from exc
        if source.signature is not None and not isinstance(source.signature, str):
            raise PolicySourceError(f"policy source record {source.name!r}: signature must be text")
        if source.sha256 != expected:
            raise PolicySourceError(f"policy source record {source.name!r}: content does not match its sha256")
        return source


@dataclass(frozen=True)
class _ScopedPolicyKeys(ConfigKeys):
    """The config keys with the policy hash at ``<ns>:cfg:<scope>:<id>`` (default ``system:policy``)."""

    scope: str = "system"
    doc_id: str = "policy"

    @property
    def policy(self) -> str:
        return self.document(self.scope, self.doc_id)


class PolicySources:
    """Reads every configured source; one instance per kernel (it caches the URL fetch)."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.policies_dir = Path(settings.policies_dir)
        self.url = settings.policy_url
        self.config_key = settings.policy_config_key
        self._store: PolicyBundleStore | None = None
        self.channel: str | None = None
        """Pub/sub channel announcing config-service bundle changes (None: config source disabled)."""
        if not settings.policy_config_disabled:
            for name, value in (("SCOPE", settings.policy_config_scope), ("ID", settings.policy_config_id)):
                if not _ADDRESS_RE.match(value):
                    raise ConfigError(f"CORETEX_POLICY_CONFIG_{name} must match {_ADDRESS_RE.pattern}, got {value!r}")
            keys = _ScopedPolicyKeys(settings.namespace, settings.policy_config_scope, settings.policy_config_id)
            options = ConfigServiceOptions()
            self._store = PolicyBundleStore(
                client, keys, history_maxlen=options.policy_history_maxlen, max_bytes=options.max_policy_bundle_bytes
            )
            self.channel = keys.policy_changed
        self._url_next = 0.0
        self._url_last: tuple[PolicySource, ...] | PolicySourceError = ()

    def describe(self) -> str:
        base = f"url {self.url}" if self.url else f"files of {self.policies_dir}"
        if self._store is None:
            return f"{base} (config service disabled)"
        key = f"bundle {self.config_key}" if self.config_key else "enabled bundles"
        return f"{base} + config-service {key}"

    def fetch(self) -> tuple[PolicySource, ...]:
        """Every source, base first; :class:`PolicySourceError` when any cannot be read or none exists."""
        base = self._fetch_url() if self.url else read_policy_files(self.policies_dir)
        sources = base + self._fetch_config()
        if not sources:
            where = self.url or str(self.policies_dir)
            raise PolicySourceError(f"no policy bundle in {where} nor in the config service (empty policy)")
        return sources

    def _fetch_config(self) -> tuple[PolicySource, ...]:
        if self._store is None:
            return ()
        try:
            bundles = self._store.list_bundles(enabled_only=True)
        except StoreError as exc:
            raise PolicySourceError(f"config-service policy bundles: {exc}") from exc
        if self.config_key is not None:
            bundles = [b for b in bundles if b.bundle_id == self.config_key]
        out = []
        for bundle in bundles:
            signature, body = split_embedded_signature(bundle.content)
            out.append(PolicySource(CONFIG_PREFIX + bundle.bundle_id, SourceKind.CONFIG, body, signature))
        return tuple(out)

    def _fetch_url(self) -> tuple[PolicySource, ...]:
        assert self.url is not None
        now = time.monotonic()
        if now >= self._url_next:
            self._url_next = now + URL_REFRESH_S
            try:
                self._url_last = (fetch_url_source(self.url),)
            except PolicySourceError as exc:
                self._url_last = exc
        if isinstance(self._url_last, PolicySourceError):
            raise self._url_last
        return self._url_last


def read_policy_files(directory: Path) -> tuple[PolicySource, ...]:
    """Every ``*.yaml`` / ``*.yml`` of ``directory`` (sorted by name) with its ``.sig``, if any.

    A folder that exists but holds no bundle gives no source (config-service bundles may be all
    there is); a missing folder is an error.
    """
    if not directory.is_dir():
        raise PolicySourceError(f"policies dir {str(directory)!r} does not exist or is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    sources = []
    for path in files:
        signature_path = path.with_name(path.name + SIGNATURE_SUFFIX)
        try:
            body = path.read_bytes()
            signature = signature_path.read_text(encoding="utf-8") if signature_path.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicySourceError(f"policy bundle {str(path)!r}: cannot be read: {exc}") from exc
        if len(body) > MAX_SOURCE_BYTES:
            raise PolicySourceError(f"policy bundle {str(path)!r}: larger than {MAX_SOURCE_BYTES} bytes")
        sources.append(PolicySource(str(path), SourceKind.FILE, body, signature))
    return tuple(sources)


def fetch_url_source(url: str, timeout_s: float = URL_TIMEOUT_S) -> PolicySource:
    """The bundle at ``url`` and its detached signature at ``<url>.sig`` (absent = unsigned)."""
    if not url.startswith(("http://", "https://")):
        raise PolicySourceError(f"CORETEX_POLICY_URL must be http(s), got {url!r}")
    body = _get(url, timeout_s)
    if body is None:
        raise PolicySourceError(f"policy URL {url}: 404 not found")
    signature = _get(url + SIGNATURE_SUFFIX, timeout_s)
    try:
        text = signature.decode("utf-8") if signature is not None else None
    except UnicodeDecodeError as exc:
        raise PolicySourceError(f"policy URL {url}{SIGNATURE_SUFFIX}: not UTF-8") from exc
    return PolicySource(url, SourceKind.URL, body, text)


def _get(url: str, timeout_s: float) -> bytes | None:
    """The body at ``url``, None on 404; :class:`PolicySourceError` for anything else that fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # scheme checked above: http(s) only
            data: bytes = response.read(MAX_SOURCE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return None
        raise PolicySourceError(f"policy URL {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PolicySourceError(f"policy URL {url}: {exc}") from exc
    if len(data) > MAX_SOURCE_BYTES:
        raise PolicySourceError(f"policy URL {url}: larger than {MAX_SOURCE_BYTES} bytes")
    return data

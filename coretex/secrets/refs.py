"""``secret://`` references: the only form in which a secret may travel through Coretex (spec 9).

    secret://<backend>/<path>[#<key>]

    secret://vault/kv/prod/db#password     Vault; resolved by a pack-provided resolver
    secret://k8s/<namespace>/<name>[#key]   Kubernetes Secret; resolved by a pack-provided resolver
    secret://env/<NAME>                     process environment; resolved by core's EnvSecretResolver

Any backend name of ``[a-z0-9][a-z0-9-]*`` is accepted (backends are pack territory). The path is
one or more ``/``-separated segments of ``[A-Za-z0-9_.-]`` (no empty, ``.`` or ``..`` segments);
the optional key is ``[A-Za-z0-9_.-]+``. The backends core knows get a stricter shape:

    env    exactly one segment, a POSIX variable name ``[A-Za-z_][A-Za-z0-9_]*``, no key
    k8s    exactly two segments: a DNS-label namespace and a DNS-subdomain name; optional key

Errors of this package (the lead folds them into coretex/errors.py later):

    CoretexError
    └── SecretError                       code secret_error
        ├── SecretRefError                 bad_secret_ref: not a well-formed secret:// reference
        ├── RedactionConfigError           bad_redaction_config (also a ConfigError): level or pattern
        ├── SecretBackendUnavailableError  secret_backend_unavailable: no resolver for the backend
        ├── SecretAccessDeniedError        secret_access_denied: policy / runner profile said no
        └── SecretNotFoundError            secret_not_found: the backend has no such secret

No message of these errors ever contains a secret value; a malformed reference is described, not
echoed, because a caller may have pasted a credential where a reference belongs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from coretex.errors import ConfigError, CoretexError

SCHEME = "secret://"
MAX_REF_LENGTH = 1024
MAX_SEGMENTS = 32

# Broad on purpose: what redaction removes and what detection counts as "a reference is present",
# well-formed or not. parse_secret_ref decides whether a candidate is a usable reference.
SECRET_REF_CANDIDATE = re.compile(r"secret://[^\s\"'`<>\\|,;(){}\[\]]*", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".:!?"

_BACKEND = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


class SecretError(CoretexError):
    """Root of the secrets package's errors."""

    code = "secret_error"


class SecretRefError(SecretError):
    code = "bad_secret_ref"


class RedactionConfigError(SecretError, ConfigError):
    code = "bad_redaction_config"


class SecretBackendUnavailableError(SecretError):
    code = "secret_backend_unavailable"


class SecretAccessDeniedError(SecretError):
    code = "secret_access_denied"


class SecretNotFoundError(SecretError):
    code = "secret_not_found"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A validated ``secret://backend/path[#key]``; its repr is safe to log (it names, never holds, a secret)."""

    backend: str
    path: str
    key: str | None = None

    def __post_init__(self) -> None:
        _check_shape(self.backend, self.path, self.key)

    @property
    def uri(self) -> str:
        suffix = f"#{self.key}" if self.key is not None else ""
        return f"{SCHEME}{self.backend}/{self.path}{suffix}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    def __str__(self) -> str:
        return self.uri


def parse_secret_ref(text: str) -> SecretRef:
    """Parse one reference; raise SecretRefError (without echoing ``text``) when it is malformed."""
    if not isinstance(text, str):
        raise SecretRefError(f"a secret reference must be a string, not {type(text).__name__}")
    if len(text) > MAX_REF_LENGTH:
        raise SecretRefError(f"secret reference longer than {MAX_REF_LENGTH} characters")
    if not text.startswith(SCHEME):
        raise SecretRefError(f"secret reference must start with {SCHEME!r}")
    body, hash_sign, key = text[len(SCHEME) :].partition("#")
    backend, slash, path = body.partition("/")
    if not slash:
        raise SecretRefError("secret reference needs secret://<backend>/<path>")
    return SecretRef(backend, path, key if hash_sign else None)


def find_secret_refs(value: object) -> list[SecretRef]:
    """Every well-formed reference in a JSON-like value (keys, values, refs inside longer text), deduplicated.

    Malformed candidates are skipped here; detection (``detect_secrets``) still counts them as present.
    """
    found: dict[SecretRef, None] = {}
    for _pointer, text in walk_strings(value):
        for candidate in SECRET_REF_CANDIDATE.findall(text):
            try:
                found.setdefault(parse_secret_ref(candidate.rstrip(_TRAILING_PUNCTUATION)))
            except SecretRefError:
                continue
    return list(found)


def walk_strings(value: object) -> Iterator[tuple[str, str]]:
    """Yield ``(json_pointer, text)`` for every string in a JSON-like value, dict keys included.

    A dict key is reported at the pointer of its member. Iterative, so nesting depth is no limit.
    """
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        pointer, item = stack.pop()
        if isinstance(item, str):
            yield pointer, item
        elif isinstance(item, Mapping):
            children: list[tuple[str, object]] = []
            for key, child in item.items():
                child_pointer = f"{pointer}/{escape_pointer_token(str(key))}"
                if isinstance(key, str):
                    children.append((child_pointer, key))
                children.append((child_pointer, child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{pointer}/{index}", child) for index, child in enumerate(item)]))


def escape_pointer_token(token: str) -> str:
    """RFC 6901 escaping of one reference token."""
    return token.replace("~", "~0").replace("/", "~1")


def _check_shape(backend: str, path: str, key: str | None) -> None:
    if not _BACKEND.fullmatch(backend):
        raise SecretRefError("secret backend must be 1..63 characters of [a-z0-9-], starting with a letter or digit")
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise SecretRefError(f"secret path has more than {MAX_SEGMENTS} segments")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise SecretRefError("secret path segments must be [A-Za-z0-9_.-]+ (no empty, '.' or '..' segments)")
    if key is not None and not _KEY.fullmatch(key):
        raise SecretRefError("secret key after '#' must be [A-Za-z0-9_.-]+")
    if backend == "env":
        _check_env(segments, key)
    elif backend == "k8s":
        _check_k8s(segments)


def _check_env(segments: list[str], key: str | None) -> None:
    if len(segments) != 1 or not _ENV_NAME.fullmatch(segments[0]):
        raise SecretRefError("secret://env/<NAME> takes one environment variable name [A-Za-z_][A-Za-z0-9_]*")
    if key is not None:
        raise SecretRefError("secret://env/<NAME> takes no #key")


def _check_k8s(segments: list[str]) -> None:
    if len(segments) != 2:
        raise SecretRefError("secret://k8s/<namespace>/<name> takes exactly a namespace and a name")
    namespace, name = segments
    if not _DNS_LABEL.fullmatch(namespace):
        raise SecretRefError("k8s namespace must be a DNS label (lowercase [a-z0-9-], at most 63)")
    if not _DNS_SUBDOMAIN.fullmatch(name):
        raise SecretRefError("k8s secret name must be a DNS subdomain (lowercase [a-z0-9.-], at most 253)")

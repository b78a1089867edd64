"""Turning a ``secret://`` reference into its value, only where policy allows it.

Core ships one backend, ``EnvSecretResolver`` (``secret://env/NAME``); Vault, Kubernetes and the
rest are pack territory and plug in through the ``SecretResolver`` protocol, combined with
``RoutingSecretResolver``.

Decision: resolvers return a ``SecretValue``, not a ``str``. Its ``repr``, ``str`` and ``format``
are masked and it refuses to be pickled, so a value that reaches a log line, an f-string, an
exception message or a Celery payload by accident shows ``***`` (or fails) instead of leaking;
``.reveal()`` is the one explicit way to the plain string, at the point of use.

Order of checks: backend, then permission, then lookup, so a caller that may not read a secret
cannot learn whether it exists. Access is fail-closed: a resolver built without an ``allowed``
predicate reads nothing (pass ``allow_all`` in tests and trusted tooling).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn, Protocol, SupportsIndex, runtime_checkable

from coretex.secrets.refs import (
    SecretAccessDeniedError,
    SecretBackendUnavailableError,
    SecretNotFoundError,
    SecretRef,
)

AccessPredicate = Callable[[SecretRef], bool]
"""True when the current job may read ``ref``; the SDK builds it from the job's policy constraints."""

MASK = "***"


class SecretValue:
    """A resolved secret: masked everywhere except ``reveal()``."""

    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: SecretRef | None = None) -> None:
        self._value = value
        self.ref = ref

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        where = self.ref.uri if self.ref is not None else "?"
        return f"SecretValue({where!r}, {MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled or copied; pass its secret:// reference instead")


@runtime_checkable
class SecretResolver(Protocol):
    def resolve(self, ref: SecretRef) -> SecretValue:
        """The value behind ``ref``; SecretBackendUnavailableError, SecretAccessDeniedError or SecretNotFoundError."""
        ...


def allow_all(ref: SecretRef) -> bool:
    """Predicate for tests and trusted tooling: every reference may be read."""
    return True


def allow_matching(patterns: Iterable[str]) -> AccessPredicate:
    """Predicate allowing refs whose URI matches one of ``patterns`` (fnmatch, e.g. ``secret://env/GITHUB_*``)."""
    allowed = tuple(patterns)

    def predicate(ref: SecretRef) -> bool:
        return any(fnmatch.fnmatchcase(ref.uri, pattern) for pattern in allowed)

    return predicate


def check_access(ref: SecretRef, allowed: AccessPredicate | None) -> None:
    """SecretAccessDeniedError unless ``allowed(ref)``; no predicate, or one that raises, denies."""
    if allowed is None:
        raise SecretAccessDeniedError(f"{ref.uri}: no access policy given, secrets are denied by default")
    try:
        permitted = allowed(ref)
    except Exception as exc:
        raise SecretAccessDeniedError(f"{ref.uri}: access check failed ({type(exc).__name__}); denied") from exc
    if permitted is not True:
        raise SecretAccessDeniedError(f"{ref.uri}: not allowed for this job")


class EnvSecretResolver:
    """Reads ``secret://env/NAME`` from ``environ`` (default: ``os.environ``, looked up at each call)."""

    backend = "env"

    def __init__(self, environ: Mapping[str, str] | None = None, allowed: AccessPredicate | None = None) -> None:
        self._environ = environ
        self._allowed = allowed

    def resolve(self, ref: SecretRef) -> SecretValue:
        if ref.backend != self.backend:
            raise SecretBackendUnavailableError(f"{ref.uri}: the env resolver reads only secret://env/ references")
        check_access(ref, self._allowed)
        environ = os.environ if self._environ is None else self._environ
        try:
            return SecretValue(environ[ref.path], ref)
        except KeyError:
            raise SecretNotFoundError(f"{ref.uri}: no such environment variable") from None


class RoutingSecretResolver:
    """Sends each reference to the resolver registered for its backend, after an optional access check."""

    def __init__(self, resolvers: Mapping[str, SecretResolver], allowed: AccessPredicate | None = None) -> None:
        self._resolvers = dict(resolvers)
        self._allowed = allowed

    def resolve(self, ref: SecretRef) -> SecretValue:
        resolver = self._resolvers.get(ref.backend)
        if resolver is None:
            known = ", ".join(sorted(self._resolvers)) or "none"
            raise SecretBackendUnavailableError(f"{ref.uri}: no resolver for backend {ref.backend!r} (have: {known})")
        if self._allowed is not None:
            check_access(ref, self._allowed)
        return resolver.resolve(ref)

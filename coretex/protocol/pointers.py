"""Typed values for the CAP pointer URIs that stand in for large payloads (spec 2.6 and 4.5).

We write the reference-implementation form ``redis://<kind>:<id>`` (Redis key ``<kind>:<id>``)
and also read the legacy CAP form ``redis://<kind>/<id>``. Kinds:

    ctx  job input           ContextPointer
    res  job output          ResultPointer
    art  logs, diffs, ...    ArtifactPointer

An id is 1..200 characters of ``[A-Za-z0-9._:-]``. Pointers are opaque names, never credentials:
the narrow alphabet keeps tokens, passwords and query strings out of them by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from coretex.errors import PointerError

SCHEME = "redis://"
MAX_ID_LENGTH = 200

_ID_CHARS = re.compile(r"[A-Za-z0-9._:-]+")
_URI = re.compile(r"(?P<kind>[^:/]*)(?P<sep>[:/])(?P<id>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Pointer:
    id: str
    kind: ClassVar[str]

    def __post_init__(self) -> None:
        _check_id(self.id)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.kind}:{self.id}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class ContextPointer(_Pointer):
    """Where a job's input lives (``JobRequest.context_ptr``)."""

    kind: ClassVar[str] = "ctx"


@dataclass(frozen=True, slots=True)
class ResultPointer(_Pointer):
    """Where a job's output lives (``JobResult.result_ptr``)."""

    kind: ClassVar[str] = "res"


@dataclass(frozen=True, slots=True)
class ArtifactPointer(_Pointer):
    """Where a job artifact lives (``JobResult.artifact_ptrs``)."""

    kind: ClassVar[str] = "art"


Pointer = ContextPointer | ResultPointer | ArtifactPointer
"""Any typed pointer, as returned by :func:`parse_pointer`."""

_P = TypeVar("_P", ContextPointer, ResultPointer, ArtifactPointer)

_KINDS: dict[str, type[ContextPointer] | type[ResultPointer] | type[ArtifactPointer]] = {
    cls.kind: cls for cls in (ContextPointer, ResultPointer, ArtifactPointer)
}


def parse_pointer(uri: str) -> Pointer:
    """Parse ``redis://<kind>:<id>`` or the legacy ``redis://<kind>/<id>`` into a typed pointer."""
    if not isinstance(uri, str):
        raise PointerError(f"a pointer must be a string, got {type(uri).__name__}")
    if not uri.startswith(SCHEME):
        raise PointerError(f"unknown pointer scheme in {uri!r}; expected {SCHEME}<kind>:<id>")
    match = _URI.fullmatch(uri, len(SCHEME))
    if match is None:
        raise PointerError(f"malformed pointer {uri!r}; expected {SCHEME}<kind>:<id>")
    pointer_type = _KINDS.get(match["kind"])
    if pointer_type is None:
        known = ", ".join(_KINDS)
        raise PointerError(f"unknown pointer kind {match['kind']!r} in {uri!r}; expected one of {known}")
    return pointer_type(match["id"])


def parse_context_pointer(uri: str) -> ContextPointer:
    """Parse a pointer that must be a context pointer (``ctx``)."""
    return _expect(parse_pointer(uri), ContextPointer)


def parse_result_pointer(uri: str) -> ResultPointer:
    """Parse a pointer that must be a result pointer (``res``)."""
    return _expect(parse_pointer(uri), ResultPointer)


def parse_artifact_pointer(uri: str) -> ArtifactPointer:
    """Parse a pointer that must be an artifact pointer (``art``)."""
    return _expect(parse_pointer(uri), ArtifactPointer)


def _expect(pointer: Pointer, wanted: type[_P]) -> _P:
    if not isinstance(pointer, wanted):
        raise PointerError(f"expected a pointer of kind {wanted.kind!r}, got {pointer.uri!r}")
    return pointer


def _check_id(pointer_id: object) -> None:
    if not isinstance(pointer_id, str):
        raise PointerError(f"a pointer id must be a string, got {type(pointer_id).__name__}")
    if not pointer_id:
        raise PointerError("empty pointer id")
    if len(pointer_id) > MAX_ID_LENGTH:
        raise PointerError(f"pointer id is {len(pointer_id)} characters long; the limit is {MAX_ID_LENGTH}")
    if _ID_CHARS.fullmatch(pointer_id) is None:
        bad = next(char for char in pointer_id if _ID_CHARS.fullmatch(char) is None)
        raise PointerError(f"pointer id {pointer_id!r} contains {bad!r}; allowed are A-Z a-z 0-9 . _ : -")

"""The one CEL environment of Coretex (cel-python), shared by policy ``when`` clauses and workflow
conditions and templates: one standard, safe, non-Turing-complete language, never ``eval``.

Building an Environment builds the CEL parser (and raises the recursion limit), so it is built
once, lazily; compiling goes through :func:`compiling`, because the parser is not thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import celpy

_lock = threading.Lock()
_environment: celpy.Environment | None = None


@contextmanager
def compiling() -> Iterator[celpy.Environment]:
    """The shared environment, held exclusively while the caller compiles."""
    global _environment
    with _lock:
        if _environment is None:
            _environment = celpy.Environment()
        yield _environment


def position(line: int | None, column: int | None) -> str:
    """Where in an expression a problem is, as error messages say it."""
    return f"line {line or '?'}, column {column or '?'}"

"""JSON Merge Patch (RFC 7386), pure: no I/O, inputs never mutated.

A patch that is an object merges into the target key by key: ``null`` deletes the key, an object
merges recursively, anything else (string, number, bool, array) replaces. A patch that is not an
object replaces the target whole. Arrays are never merged element-wise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` with ``patch`` applied (RFC 7386 section 2); neither argument is modified."""
    return _apply(copy.deepcopy(dict(target) if isinstance(target, Mapping) else target), patch)


def _apply(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch on a ``target`` this module owns (a private copy), so it may change in place."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = target if isinstance(target, dict) else {}  # a non-object target is replaced
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply(result.get(key), value)
    return result


def merge_layers(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply ``layers`` in order onto an empty object: later layers win."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _apply(merged, layer)
    return merged

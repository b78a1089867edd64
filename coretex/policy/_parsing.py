"""Strict YAML reading for policy bundles: one loader, one way to name a place, one check per type.

Every check raises :class:`~coretex.errors.PolicyError` through :meth:`Where.fail`, whose message
names the bundle, the item (``rules[3] (id 'x')`` or ``tests[0] (name 'y')``) and the field, so an
operator can fix the file without guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

import yaml

from coretex.errors import PolicyError

E = TypeVar("E", bound=StrEnum)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the default constructor report it
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(name: str, text: str) -> Any:
    """Parse ``text`` safely (no arbitrary objects, no duplicate keys); errors name the bundle."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy bundle {name!r}: not valid YAML: {exc}") from exc


class Where:
    """Names the place an error is about: bundle, item (rule or test, index and id) and field."""

    def __init__(self, source: str, section: str | None = None, index: int | None = None) -> None:
        self.source, self.section, self.index = source, section, index
        self.label: str | None = None
        """The item's id (rules) or name (tests), once known."""

    def item(self, label: str) -> None:
        self.label = label

    def fail(self, field: str, problem: str, error: type[PolicyError] = PolicyError) -> NoReturn:
        where = f"policy bundle {self.source!r}"
        if self.section is not None:
            item = f"{self.section}[{self.index}]"
            if self.label is not None:
                item += f" ({'id' if self.section == 'rules' else 'name'} {self.label!r})"
            where += f", {item}"
        raise error(f"{where}, field {field!r}: {problem}")


def check_keys(data: Mapping[Any, Any], allowed: frozenset[str], where: Where, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            field = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{key!r}"
            where.fail(field, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def mapping(value: Any, where: Where, field: str, allowed: frozenset[str], *, non_empty: bool = True) -> dict[str, Any]:
    """A mapping whose keys are all in ``allowed`` (and, by default, with at least one of them)."""
    if not isinstance(value, dict):
        where.fail(field, f"must be a mapping with keys from {', '.join(sorted(allowed))}, got {value!r}")
    check_keys(value, allowed, where, f"{field}.")
    if non_empty and not value:
        where.fail(field, f"needs at least one of {', '.join(sorted(allowed))}")
    return value


def string(value: Any, where: Where, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        where.fail(field, f"must be a non-empty string, got {value!r}")
    return value


def optional_string(data: Mapping[str, Any], key: str, where: Where, prefix: str) -> str:
    """``data[key]`` as a string, or ``""`` when absent (an explicit value must still be non-empty)."""
    return string(data[key], where, f"{prefix}{key}") if key in data else ""


def string_list(value: Any, where: Where, field: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        wanted = "a list of strings" if allow_empty else "a non-empty list of strings"
        where.fail(field, f"must be {wanted}, got {value!r}")
    return tuple(string(item, where, f"{field}[{i}]") for i, item in enumerate(value))


def string_map(value: Any, where: Where, field: str) -> tuple[tuple[str, str], ...]:
    """A non-empty ``{string: string}`` mapping as sorted pairs; YAML scalars like ``true`` must be quoted."""
    if not isinstance(value, dict) or not value:
        where.fail(field, f"must be a non-empty mapping of strings to strings, got {value!r}")
    pairs = []
    for key, item in value.items():
        name = string(key, where, f"{field} key")
        if not isinstance(item, str):
            where.fail(f"{field}.{name}", f"must be a string (quote YAML values like true or 3), got {item!r}")
        pairs.append((name, item))
    return tuple(sorted(pairs))


def boolean(value: Any, where: Where, field: str) -> bool:
    if not isinstance(value, bool):
        where.fail(field, f"must be true or false, got {value!r}")
    return value


def bounded_int(value: Any, where: Where, field: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        where.fail(field, f"must be an integer from {minimum} to {maximum}, got {value!r}")
    return value


def choice(value: Any, kind: type[E], where: Where, field: str) -> E:
    expected = ", ".join(member.value for member in kind)
    if not isinstance(value, str):
        where.fail(field, f"must be one of {expected}, got {value!r}")
    try:
        return kind(value)
    except ValueError:
        where.fail(field, f"unknown value {value!r} (expected one of {expected})")

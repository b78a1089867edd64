"""Execution constraints a rule attaches to a job, and how several of them merge.

Written in a rule as::

    constraints:
      budgets: {max_runtime_ms: 60000, max_retries: 2, max_artifact_bytes: 1048576, max_concurrent_jobs: 4}
      sandbox:
        isolated: true
        network: egress-allowlist          # none | egress-allowlist | any
        allowlist: [api.example.com]       # only with egress-allowlist
        fs: ro                             # ro | rw: access to the whole filesystem
        read_only_paths: [/etc]            # always read-only
        read_write_paths: [/tmp]           # with fs ro (or no fs): the only writable paths
      tools: [git, go]                     # allowlist; [] = no tool at all
      commands: [make]                     # allowlist; [] = no command at all
      diff: {max_files: 10, max_lines: 500, deny_paths: ["secrets/**"]}
      redaction_level: strict              # none | standard | strict

Merging is "most restrictive wins" and is commutative and associative (property-tested), so the
result does not depend on rule or bundle order:

- budgets and diff maxima: the smallest set value (unset means no cap);
- allowlists (tools, commands, writable paths, network egress): the intersection, where unset
  means "no restriction" and an empty list means "nothing allowed";
- deny lists (diff ``deny_paths``, ``read_only_paths``): the union;
- sandbox: isolated if any says so; network ``none`` < ``egress-allowlist`` < ``any`` < unset;
  fs ``ro`` < ``rw`` < unset; redaction ``none`` < ``standard`` < ``strict`` (unset is weakest).

Normal forms (applied on construction, so equal meanings compare equal): lists are sorted and
de-duplicated; ``network: none`` implies ``isolated`` (no network can only be enforced inside a
sandbox); an isolated sandbox without a network setting gets ``network: none`` (a sandbox is
closed unless an allowlist opens it); an egress allowlist that merged down to nothing becomes
``network: none``; writable paths imply ``fs: ro`` for everything else and ``fs: ro`` without
them means nothing is writable (``read_write_paths`` is ``()``); a path listed read-only is never
also writable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from coretex.policy._parsing import (
    INT32_MAX,
    INT64_MAX,
    Where,
    boolean,
    bounded_int,
    choice,
    mapping,
    string_list,
)


class Network(StrEnum):
    """How much network a job gets, strictest first."""

    NONE = "none"
    EGRESS_ALLOWLIST = "egress-allowlist"
    ANY = "any"


class FsMode(StrEnum):
    """The default access to the filesystem, strictest first."""

    RO = "ro"
    RW = "rw"


class RedactionLevel(StrEnum):
    """How much the worker must redact from logs and results, weakest first."""

    NONE = "none"
    STANDARD = "standard"
    STRICT = "strict"


_NETWORK_RANK = {Network.NONE: 0, Network.EGRESS_ALLOWLIST: 1, Network.ANY: 2, None: 3}
_FS_RANK = {FsMode.RO: 0, FsMode.RW: 1, None: 2}
_REDACTION_RANK = {None: -1, RedactionLevel.NONE: 0, RedactionLevel.STANDARD: 1, RedactionLevel.STRICT: 2}


def _norm(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items)))


def _norm_optional(items: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if items is None else _norm(items)


def _min_set(a: int | None, b: int | None) -> int | None:
    """The smaller cap; an unset cap never wins over a set one."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _intersect(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Allowlist intersection; ``None`` means no restriction, ``()`` means nothing allowed."""
    if a is None:
        return b
    return a if b is None else _norm(set(a) & set(b))


def _cap_covers(strict: int | None, loose: int | None) -> bool:
    return loose is None or (strict is not None and strict <= loose)


def _allowlist_covers(strict: tuple[str, ...] | None, loose: tuple[str, ...] | None) -> bool:
    return loose is None or (strict is not None and set(strict) <= set(loose))


@dataclass(frozen=True, slots=True)
class Budgets:
    """Execution caps; ``None`` means no cap. CAP: ``BudgetConstraints``."""

    max_runtime_ms: int | None = None
    """Wall-clock cap in milliseconds."""
    max_retries: int | None = None
    """Retries after the first attempt (at least 1: CAP cannot carry 0, it means "unset" there)."""
    max_artifact_bytes: int | None = None
    """Total artifact bytes the job may store."""
    max_concurrent_jobs: int | None = None
    """Jobs of this kind that may run at the same time."""

    def merge(self, other: Budgets) -> Budgets:
        return Budgets(*(_min_set(getattr(self, f.name), getattr(other, f.name)) for f in fields(Budgets)))

    def at_least_as_strict_as(self, other: Budgets) -> bool:
        return all(_cap_covers(getattr(self, f.name), getattr(other, f.name)) for f in fields(Budgets))


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Where and how the job runs. CAP: ``SandboxProfile`` (see the kernel's wire mapping)."""

    isolated: bool = False
    """Run in an isolated sandbox (a container or VM, per runner)."""
    network: Network | None = None
    """Network access; ``None`` means no restriction was set."""
    allowlist: tuple[str, ...] = ()
    """Egress destinations (hosts), only with ``network: egress-allowlist``."""
    fs: FsMode | None = None
    """Filesystem access; ``None`` means no restriction was set. ``ro`` always comes with ``read_write_paths``."""
    read_only_paths: tuple[str, ...] = ()
    """Paths that are always read-only (a deny-write list: merged by union)."""
    read_write_paths: tuple[str, ...] | None = None
    """The only writable paths under ``fs: ro`` (an allowlist: ``()`` = nothing); ``None`` unless ``fs`` is ro."""

    def __post_init__(self) -> None:
        network = self.network
        allowlist = _norm(self.allowlist) if network is Network.EGRESS_ALLOWLIST else ()
        if network is Network.EGRESS_ALLOWLIST and not allowlist:
            network = Network.NONE
        if network is None and self.isolated:
            network = Network.NONE
        read_only = _norm(self.read_only_paths)
        fs, read_write = self.fs, self.read_write_paths
        if read_write is not None:
            fs = FsMode.RO  # writes are limited to the listed paths: everything else is read-only
        elif fs is FsMode.RO:
            read_write = ()
        if read_write is not None:
            read_write = _norm(set(read_write) - set(read_only))
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "isolated", self.isolated or network is Network.NONE)
        object.__setattr__(self, "allowlist", allowlist)
        object.__setattr__(self, "read_only_paths", read_only)
        object.__setattr__(self, "read_write_paths", read_write)

    def merge(self, other: Sandbox) -> Sandbox:
        network = min(self.network, other.network, key=lambda n: _NETWORK_RANK[n])
        allowlist: tuple[str, ...] = ()
        if network is Network.EGRESS_ALLOWLIST:
            lists = [s.allowlist for s in (self, other) if s.network is Network.EGRESS_ALLOWLIST]
            allowlist = _norm(set(lists[0]).intersection(*lists[1:]))
        return Sandbox(
            isolated=self.isolated or other.isolated,
            network=network,
            allowlist=allowlist,
            fs=min(self.fs, other.fs, key=lambda f: _FS_RANK[f]),
            read_only_paths=self.read_only_paths + other.read_only_paths,
            read_write_paths=_intersect(self.read_write_paths, other.read_write_paths),
        )

    def at_least_as_strict_as(self, other: Sandbox) -> bool:
        if other.isolated and not self.isolated:
            return False
        if _NETWORK_RANK[self.network] > _NETWORK_RANK[other.network]:
            return False
        if self.network is other.network is Network.EGRESS_ALLOWLIST and not set(self.allowlist) <= set(
            other.allowlist
        ):
            return False
        return (
            _FS_RANK[self.fs] <= _FS_RANK[other.fs]
            and set(self.read_only_paths) >= set(other.read_only_paths)
            and _allowlist_covers(self.read_write_paths, other.read_write_paths)
        )


@dataclass(frozen=True, slots=True)
class DiffLimits:
    """Change-set limits for jobs that modify code or files. CAP: ``DiffConstraints``."""

    max_files: int | None = None
    """Most files one change may touch."""
    max_lines: int | None = None
    """Most lines one change may add or remove."""
    deny_paths: tuple[str, ...] = ()
    """Globs of paths a change must not touch."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "deny_paths", _norm(self.deny_paths))

    def merge(self, other: DiffLimits) -> DiffLimits:
        return DiffLimits(
            max_files=_min_set(self.max_files, other.max_files),
            max_lines=_min_set(self.max_lines, other.max_lines),
            deny_paths=self.deny_paths + other.deny_paths,
        )

    def at_least_as_strict_as(self, other: DiffLimits) -> bool:
        return (
            _cap_covers(self.max_files, other.max_files)
            and _cap_covers(self.max_lines, other.max_lines)
            and set(self.deny_paths) >= set(other.deny_paths)
        )


@dataclass(frozen=True, slots=True)
class Constraints:
    """Everything a rule may impose on a job that is allowed to run. Empty means "no constraint"."""

    budgets: Budgets = Budgets()
    sandbox: Sandbox = Sandbox()
    tools: tuple[str, ...] | None = None
    """Tool allowlist (``None`` = no restriction, ``()`` = no tool at all)."""
    commands: tuple[str, ...] | None = None
    """Command allowlist (``None`` = no restriction, ``()`` = no command at all)."""
    diff: DiffLimits = DiffLimits()
    redaction_level: RedactionLevel | None = None
    """Least redaction the worker must apply; ``None`` means not set."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", _norm_optional(self.tools))
        object.__setattr__(self, "commands", _norm_optional(self.commands))

    @property
    def is_empty(self) -> bool:
        return self == NO_CONSTRAINTS

    def merge(self, other: Constraints) -> Constraints:
        """The most restrictive combination of ``self`` and ``other`` (commutative, associative)."""
        if other.is_empty:
            return self
        if self.is_empty:
            return other
        return Constraints(
            budgets=self.budgets.merge(other.budgets),
            sandbox=self.sandbox.merge(other.sandbox),
            tools=_intersect(self.tools, other.tools),
            commands=_intersect(self.commands, other.commands),
            diff=self.diff.merge(other.diff),
            redaction_level=max(self.redaction_level, other.redaction_level, key=lambda r: _REDACTION_RANK[r]),
        )

    def at_least_as_strict_as(self, other: Constraints) -> bool:
        """True when every limit of ``other`` is matched or tightened by ``self``."""
        return (
            self.budgets.at_least_as_strict_as(other.budgets)
            and self.sandbox.at_least_as_strict_as(other.sandbox)
            and _allowlist_covers(self.tools, other.tools)
            and _allowlist_covers(self.commands, other.commands)
            and self.diff.at_least_as_strict_as(other.diff)
            and _REDACTION_RANK[self.redaction_level] >= _REDACTION_RANK[other.redaction_level]
        )

    def canonical(self) -> dict[str, Any]:
        """The set fields only, as plain JSON values (for snapshot ids and explanations)."""
        out: dict[str, Any] = {}
        for part in ("budgets", "sandbox", "diff"):
            value, unset = getattr(self, part), getattr(NO_CONSTRAINTS, part)
            values = {
                f.name: _plain(getattr(value, f.name))
                for f in fields(value)
                if getattr(value, f.name) != getattr(unset, f.name)
            }
            if values:
                out[part] = values
        for name in ("tools", "commands"):
            if getattr(self, name) is not None:
                out[name] = list(getattr(self, name))
        if self.redaction_level is not None:
            out["redaction_level"] = self.redaction_level.value
        return out


NO_CONSTRAINTS = Constraints()
"""The empty constraint set: merging with it changes nothing."""


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def merge_all(items: Iterable[Constraints]) -> Constraints:
    """Merge any number of constraint sets (order does not matter)."""
    merged = NO_CONSTRAINTS
    for item in items:
        merged = merged.merge(item)
    return merged


# --- parsing ---------------------------------------------------------------------------------------

_KEYS = frozenset({"budgets", "sandbox", "tools", "commands", "diff", "redaction_level"})
_BUDGET_LIMITS = {
    "max_runtime_ms": INT64_MAX,
    "max_retries": INT32_MAX,
    "max_artifact_bytes": INT64_MAX,
    "max_concurrent_jobs": INT32_MAX,
}
_SANDBOX_KEYS = frozenset({"isolated", "network", "allowlist", "fs", "read_only_paths", "read_write_paths"})
_DIFF_LIMITS = {"max_files": INT32_MAX, "max_lines": INT32_MAX}


def _caps(value: Any, where: Where, field: str, limits: dict[str, int], extra: frozenset[str]) -> dict[str, Any]:
    data = mapping(value, where, field, frozenset(limits) | extra)
    # 0 is rejected on purpose: CAP carries these as plain proto3 integers, where 0 means "unset".
    return {
        key: bounded_int(data[key], where, f"{field}.{key}", minimum=1, maximum=limit)
        for key, limit in limits.items()
        if key in data
    }


def _paths(value: Any, where: Where, field: str, *, allow_empty: bool) -> tuple[str, ...]:
    paths = string_list(value, where, field, allow_empty=allow_empty)
    for i, path in enumerate(paths):
        if path.rstrip("/") == "":
            where.fail(f"{field}[{i}]", "use 'fs: ro' or 'fs: rw' for the whole filesystem, not '/'")
    return paths


def _parse_sandbox(value: Any, where: Where, field: str) -> Sandbox:
    data = mapping(value, where, field, _SANDBOX_KEYS)
    network = choice(data["network"], Network, where, f"{field}.network") if "network" in data else None
    allowlist: tuple[str, ...] = ()
    if network is Network.EGRESS_ALLOWLIST:
        if "allowlist" not in data:
            where.fail(f"{field}.allowlist", "is required with network: egress-allowlist")
        allowlist = string_list(data["allowlist"], where, f"{field}.allowlist")
        if "*" in allowlist:
            where.fail(f"{field}.allowlist", "'*' is not a destination: use network: any")
    elif "allowlist" in data:
        where.fail(f"{field}.allowlist", "is only allowed with network: egress-allowlist")
    fs = choice(data["fs"], FsMode, where, f"{field}.fs") if "fs" in data else None
    if fs is FsMode.RW and "read_write_paths" in data:
        where.fail(f"{field}.read_write_paths", "limits writes to these paths, so it needs fs: ro (or no fs)")
    return Sandbox(
        isolated=boolean(data["isolated"], where, f"{field}.isolated") if "isolated" in data else False,
        network=network,
        allowlist=allowlist,
        fs=fs,
        read_only_paths=(
            _paths(data["read_only_paths"], where, f"{field}.read_only_paths", allow_empty=False)
            if "read_only_paths" in data
            else ()
        ),
        read_write_paths=(
            _paths(data["read_write_paths"], where, f"{field}.read_write_paths", allow_empty=True)
            if "read_write_paths" in data
            else None
        ),
    )


def parse_constraints(value: Any, where: Where, field: str = "constraints") -> Constraints:
    """Validate a rule's ``constraints`` mapping (unknown keys, wrong types and zero caps are errors)."""
    data = mapping(value, where, field, _KEYS)
    diff = DiffLimits()
    if "diff" in data:
        caps = _caps(data["diff"], where, f"{field}.diff", _DIFF_LIMITS, frozenset({"deny_paths"}))
        has_deny = "deny_paths" in data["diff"]
        deny = string_list(data["diff"]["deny_paths"], where, f"{field}.diff.deny_paths") if has_deny else ()
        diff = DiffLimits(deny_paths=deny, **caps)
    return Constraints(
        budgets=Budgets(**_caps(data["budgets"], where, f"{field}.budgets", _BUDGET_LIMITS, frozenset()))
        if "budgets" in data
        else Budgets(),
        sandbox=_parse_sandbox(data["sandbox"], where, f"{field}.sandbox") if "sandbox" in data else Sandbox(),
        tools=string_list(data["tools"], where, f"{field}.tools", allow_empty=True) if "tools" in data else None,
        commands=(
            string_list(data["commands"], where, f"{field}.commands", allow_empty=True) if "commands" in data else None
        ),
        diff=diff,
        redaction_level=(
            choice(data["redaction_level"], RedactionLevel, where, f"{field}.redaction_level")
            if "redaction_level" in data
            else None
        ),
    )

"""Topic -> pool routing, purely from config (``config/pools.yaml``).

    pools:
      echo: {requires: [], description: "...", max_queue_depth: 1000}
    topics:
      job.echo: echo            # or a list of pools; keys may be globs such as job.sre.*

Placement hints live in their own label namespace (``placement/pool``); ordinary labels never
affect routing. An exact topic beats a glob; among globs the longest pattern wins. A job's ``requires`` must be
a subset of the pool's ``requires`` (its capabilities). No mapping, or no capable pool, raises
:class:`RoutingError` (error code ``no_pool_mapping``) with a message saying which.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from coretex.errors import ConfigError, RoutingError
from coretex.policy.constraints import Constraints, FsMode, Network, Sandbox

_POOL_NAME = "^[a-z0-9][a-z0-9_-]{0,62}$"
POOLS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["pools", "topics"],
    "properties": {
        "pools": {
            "type": "object",
            "propertyNames": {"pattern": _POOL_NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "requires": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "description": {"type": "string"},
                    "max_queue_depth": {"type": "integer", "minimum": 1},
                    "profile": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "isolated": {"type": "boolean"},
                            "network": {"enum": ["none", "egress-allowlist", "any"]},
                            "allowlist": {"type": "array", "items": {"type": "string", "minLength": 1}},
                            "fs": {"enum": ["ro", "rw"]},
                            "tools": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        },
                    },
                    "max_hold_s": {"type": "integer", "minimum": 1},
                    "max_in_flight": {"type": "integer", "minimum": 1},
                },
            },
        },
        "topics": {
            "type": "object",
            "additionalProperties": {
                "oneOf": [
                    {"type": "string", "pattern": _POOL_NAME},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _POOL_NAME}},
                ]
            },
        },
    },
}


@dataclass(frozen=True)
class Pool:
    name: str
    capabilities: frozenset[str]
    max_queue_depth: int | None = None
    """Backpressure: past this many waiting messages new jobs are held, then refused."""
    max_hold_s: int = 60
    """How long backpressure may hold a job before it fails with ``pool_overloaded``."""
    max_in_flight: int | None = None
    """Backpressure: at most this many of the pool's jobs DISPATCHED or RUNNING at once."""
    sandbox: Sandbox = Sandbox()
    """The runner profile the pool's workers enforce (no profile: no isolation, any network, rw)."""
    tools: tuple[str, ...] | None = None
    """Tools the pool's runners offer; ``None`` = not declared (any tool)."""

    def satisfies(self, constraints: Constraints | None) -> bool:
        """Whether this pool runs jobs at least as strictly as ``constraints`` demand."""
        if constraints is None:
            return True
        if not self.sandbox.at_least_as_strict_as(constraints.sandbox):
            return False
        if constraints.tools is not None:
            return self.tools is not None and set(self.tools) <= set(constraints.tools)
        return True


class PoolRouter:
    def __init__(self, pools: Mapping[str, Pool], topics: Mapping[str, tuple[str, ...]]) -> None:
        self.pools = dict(pools)
        self._exact = {t: p for t, p in topics.items() if not _is_glob(t)}
        self._globs = sorted(((t, p) for t, p in topics.items() if _is_glob(t)), key=lambda tp: -len(tp[0]))

    @classmethod
    def from_config(cls, doc: Any, source: str = "pools config") -> PoolRouter:
        errors = sorted(jsonschema.Draft202012Validator(POOLS_SCHEMA).iter_errors(doc), key=str)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            raise ConfigError(f"{source}: {where}: {errors[0].message}")
        pools = {
            name: _pool(name, spec or {})
            for name, spec in doc["pools"].items()
        }
        topics: dict[str, tuple[str, ...]] = {}
        for topic, target in doc["topics"].items():
            names = (target,) if isinstance(target, str) else tuple(target)
            unknown = [n for n in names if n not in pools]
            if unknown:
                raise ConfigError(f"{source}: topics/{topic}: unknown pool {unknown[0]!r}")
            topics[topic] = names
        return cls(pools, topics)

    @classmethod
    def from_file(cls, path: Path) -> PoolRouter:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.from_config(doc, str(path))

    def candidates(self, topic: str) -> tuple[str, ...]:
        if topic in self._exact:
            return self._exact[topic]
        for pattern, pools in self._globs:
            if fnmatch.fnmatchcase(topic, pattern):
                return pools
        return ()

    def route(
        self,
        topic: str,
        requires: Iterable[str] = (),
        preferred: str | None = None,
        constraints: Constraints | None = None,
    ) -> str:
        """The pool for ``topic`` whose capabilities cover ``requires``.

        ``preferred`` (the job's ``placement/pool`` hint) wins when it is one of the capable
        candidates; otherwise the first capable pool listed for the topic. A hint never makes a job
        unroutable: an unknown or incapable preferred pool is ignored.
        """
        needed = frozenset(requires)
        candidates = self.candidates(topic)
        if not candidates:
            raise RoutingError(f"no pool is mapped to topic {topic!r}")
        capable = [name for name in candidates if needed <= self.pools[name].capabilities]
        strict_enough = [name for name in capable if self.pools[name].satisfies(constraints)]
        if capable and not strict_enough:
            raise RoutingError(
                f"no pool mapped to topic {topic!r} runs as strictly as the policy demands "
                f"({_describe(constraints)}); candidates: {', '.join(capable)}"
            )
        if preferred in strict_enough:
            return preferred
        for name in strict_enough:
            return name
        raise RoutingError(
            f"no pool mapped to topic {topic!r} provides {sorted(needed)} "
            f"(candidates: {', '.join(candidates)})"
        )


def _is_glob(topic: str) -> bool:
    return any(c in topic for c in "*?[")


def profile_sandbox(profile: Mapping[str, Any]) -> Sandbox:
    """A runner profile (``isolated``, ``network``, ``allowlist``, ``fs``) as the policy's Sandbox type."""
    return Sandbox(
        isolated=bool(profile.get("isolated", False)),
        network=Network(profile["network"]) if profile.get("network") else None,
        allowlist=tuple(profile.get("allowlist", ())),
        fs=FsMode(profile["fs"]) if profile.get("fs") else None,
    )


def sandbox_profile(sandbox: Sandbox) -> dict[str, Any]:
    """The inverse of :func:`profile_sandbox`: what the dispatcher hands a worker in JobRequest.env."""
    return {"isolated": sandbox.isolated, "network": sandbox.network.value if sandbox.network else None,
            "allowlist": list(sandbox.allowlist), "fs": sandbox.fs.value if sandbox.fs else None}


def _pool(name: str, spec: Mapping[str, Any]) -> Pool:
    profile = spec.get("profile") or {}
    sandbox = profile_sandbox(profile)
    tools = tuple(profile["tools"]) if "tools" in profile else None
    return Pool(name, frozenset(spec.get("requires", ())), spec.get("max_queue_depth"), spec.get("max_hold_s", 60),
                spec.get("max_in_flight"), sandbox, tools)


def _describe(constraints: Constraints | None) -> str:
    if constraints is None:
        return "nothing"
    sandbox = constraints.sandbox
    parts = [f"isolated={sandbox.isolated}", f"network={sandbox.network or 'any'}", f"fs={sandbox.fs or 'rw'}"]
    if constraints.tools is not None:
        parts.append(f"tools={list(constraints.tools)}")
    return ", ".join(parts)

"""How long an attempt may run and how often a job may be retried.

From the live ``timeouts`` config (``default`` then the topic's entry: exact beats glob, longer
glob beats shorter), for the job's tenant, or the job's own values when its submitter gave them;
then tightened (never loosened) by the policy's ALLOW_WITH_CONSTRAINTS budgets.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coretex.agent.v1 import safety_pb2

DEFAULT_TIMEOUT_S = 300
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class JobBudget:
    timeout_s: int
    max_retries: int


def budget_for(
    timeouts: Mapping[str, Any],
    topic: str,
    constraints: safety_pb2.PolicyConstraints | None = None,
    requested: JobBudget | None = None,
) -> JobBudget:
    """``requested`` is the job's own (-1 retries / 0 timeout: not given); it replaces the topic's
    values, and only then does the policy tighten the result."""
    default = timeouts.get("default") or {}
    entry = _topic_entry(timeouts.get("topics") or {}, topic)
    timeout_s = int(entry.get("timeout_seconds", default.get("timeout_seconds", DEFAULT_TIMEOUT_S)))
    max_retries = int(entry.get("max_retries", default.get("max_retries", DEFAULT_MAX_RETRIES)))
    if requested is not None:
        timeout_s = requested.timeout_s or timeout_s
        max_retries = max_retries if requested.max_retries < 0 else requested.max_retries
    if constraints is not None and constraints.HasField("budgets"):
        budgets = constraints.budgets
        if budgets.max_runtime_ms > 0:  # proto3: 0 means "not set"
            timeout_s = min(timeout_s, max(1, math.ceil(budgets.max_runtime_ms / 1000)))
        if budgets.max_retries > 0:
            max_retries = min(max_retries, budgets.max_retries)
    return JobBudget(timeout_s, max_retries)


def _topic_entry(topics: Mapping[str, Any], topic: str) -> Mapping[str, Any]:
    if topic in topics:
        return topics[topic]  # type: ignore[no-any-return]
    globs = sorted((p for p in topics if any(c in p for c in "*?[")), key=len, reverse=True)
    for pattern in globs:
        if fnmatch.fnmatchcase(topic, pattern):
            return topics[pattern]  # type: ignore[no-any-return]
    return {}

"""Impact analysis: what a draft policy would decide differently on requests already seen.

Pure: the caller hands over ``(id, PolicyRequest)`` pairs (the gateway replays the decision
audit) and two compiled :class:`PolicySet` objects. Requests replayed from the audit carry
redacted label values (see :mod:`coretex.kernel.audit`), so a rule matching on such a value replays
as not matching.

:func:`with_drafts` builds the draft side: the current bundles, each draft replacing the bundle of
the same name or joining the set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coretex.policy.bundle import Bundle
from coretex.policy.decision import DecisionKind
from coretex.policy.evaluator import PRECEDENCE, PolicySet
from coretex.policy.request import PolicyRequest

_ORDER = {kind: i for i, kind in enumerate(PRECEDENCE)}


@dataclass(frozen=True)
class Transition:
    """Requests whose decision kind changed from ``before`` to ``after``."""

    before: DecisionKind
    after: DecisionKind
    count: int
    sample_ids: tuple[str, ...]
    """Up to ``sample`` request ids, in input order."""

    @property
    def label(self) -> str:
        """``ALLOW->DENY``."""
        return f"{self.before.value.upper()}->{self.after.value.upper()}"

    def canonical(self) -> dict[str, Any]:
        return {
            "transition": self.label,
            "before": self.before.value,
            "after": self.after.value,
            "count": self.count,
            "sample_ids": list(self.sample_ids),
        }


@dataclass(frozen=True)
class ImpactReport:
    """How ``draft`` decides the requests compared with ``current``."""

    current_snapshot: str
    draft_snapshot: str
    total: int
    unchanged: int
    """Requests with the same decision kind under both (possibly by another rule)."""
    rule_changed: int
    """Of the unchanged ones: those now decided by a different rule."""
    rule_changed_sample_ids: tuple[str, ...]
    transitions: tuple[Transition, ...]
    """One per (before, after) pair that occurred, strictest ``before`` first, then strictest ``after``."""

    @property
    def changed(self) -> int:
        return self.total - self.unchanged

    def count(self, before: DecisionKind, after: DecisionKind) -> int:
        return next((t.count for t in self.transitions if (t.before, t.after) == (before, after)), 0)

    def canonical(self) -> dict[str, Any]:
        return {
            "current_snapshot": self.current_snapshot,
            "draft_snapshot": self.draft_snapshot,
            "total": self.total,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "rule_changed": self.rule_changed,
            "rule_changed_sample_ids": list(self.rule_changed_sample_ids),
            "transitions": [t.canonical() for t in self.transitions],
        }


def impact(
    requests: Iterable[tuple[str, PolicyRequest]], current: PolicySet, draft: PolicySet, sample: int = 5
) -> ImpactReport:
    """Evaluate every request under ``current`` and ``draft`` and count what changed."""
    if sample < 0:
        raise ValueError(f"sample must not be negative, got {sample}")
    counts: dict[tuple[DecisionKind, DecisionKind], int] = {}
    samples: dict[tuple[DecisionKind, DecisionKind], list[str]] = {}
    total = unchanged = rule_changed = 0
    rule_samples: list[str] = []
    for request_id, request in requests:
        total += 1
        old, new = current.evaluate(request), draft.evaluate(request)
        if old.kind is new.kind:
            unchanged += 1
            if old.rule_id != new.rule_id:
                rule_changed += 1
                if len(rule_samples) < sample:
                    rule_samples.append(request_id)
            continue
        pair = (old.kind, new.kind)
        counts[pair] = counts.get(pair, 0) + 1
        ids = samples.setdefault(pair, [])
        if len(ids) < sample:
            ids.append(request_id)
    transitions = tuple(
        Transition(before, after, counts[(before, after)], tuple(samples[(before, after)]))
        for before, after in sorted(counts, key=lambda pair: (_ORDER[pair[0]], _ORDER[pair[1]]))
    )
    return ImpactReport(
        current_snapshot=current.snapshot_id,
        draft_snapshot=draft.snapshot_id,
        total=total,
        unchanged=unchanged,
        rule_changed=rule_changed,
        rule_changed_sample_ids=tuple(rule_samples),
        transitions=transitions,
    )


def with_drafts(bundles: Sequence[Bundle], drafts: Sequence[Bundle]) -> tuple[Bundle, ...]:
    """``bundles`` with each draft replacing the bundle of the same name (in place) or appended."""
    by_name = {draft.name: draft for draft in drafts}
    if len(by_name) != len(drafts):
        names = [d.name for d in drafts]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"draft bundle {duplicate!r} given twice")
    replaced = tuple(by_name.pop(bundle.name, bundle) for bundle in bundles)
    return replaced + tuple(draft for draft in drafts if draft.name in by_name)

"""Which rules can possibly match a request, found without looking at the others.

Each rule is filed under one key, chosen in this order:

1. ``topic prefix``: rules with ``topics`` are filed under the literal prefix of every glob (the
   text before the first ``*``, ``?`` or ``[``); a request looks up every prefix of its topic whose
   length some rule uses, so a glob with wildcards anywhere is still found;
2. ``tenant``, ``capability``, ``pack``, ``actor``: otherwise the first of ``tenants``,
   ``capabilities``, ``pack_ids``, ``actor_ids`` the rule lists, by exact value;
3. otherwise the rule is a candidate for every request.

Candidates are a superset of the matches: the evaluator still checks every condition. The cost
of a lookup depends on the number of distinct prefix lengths and on the candidates, not on the
number of unrelated rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Generic, TypeVar

from coretex.policy.bundle import Rule
from coretex.policy.match import literal_prefix
from coretex.policy.request import PolicyRequest

T = TypeVar("T")

_EXACT_KEYS = (
    ("tenants", "tenant", "tenant"),
    ("capabilities", "capability", "capability"),
    ("pack_ids", "pack_id", "pack"),
    ("actor_ids", "actor_id", "actor"),
)
TOPIC_PREFIX = "topic prefix"


class RuleIndex(Generic[T]):
    """Items (one per rule) filed by the rule's most selective indexable condition."""

    def __init__(self, items: Iterable[tuple[Rule, T]]) -> None:
        self._by_prefix: dict[str, list[T]] = defaultdict(list)
        exact: dict[str, dict[str, list[T]]] = {attr: defaultdict(list) for _, attr, _ in _EXACT_KEYS}
        self._always: list[T] = []
        self._keys: dict[str, str] = {}
        self._dedupe = False
        for rule, item in items:
            self._keys[rule.id] = self._file(rule, item, exact)
        self._prefix_lengths = sorted({len(prefix) for prefix in self._by_prefix})
        self._exact = [(attr, dict(table)) for attr, table in exact.items() if table]
        self._by_prefix = dict(self._by_prefix)

    def _file(self, rule: Rule, item: T, exact: dict[str, dict[str, list[T]]]) -> str:
        match = rule.match
        if match.topics:
            prefixes = {literal_prefix(pattern) for pattern in match.topics}
            self._dedupe |= len(prefixes) > 1
            for prefix in prefixes:
                self._by_prefix[prefix].append(item)
            return TOPIC_PREFIX
        for name, attr, key in _EXACT_KEYS:
            values = getattr(match, name)
            if values:
                for value in set(values):
                    exact[attr][value].append(item)
                return key
        self._always.append(item)
        return ""

    def key_of(self, rule_id: str) -> str:
        """What the rule is filed under (``""`` when it is a candidate for every request)."""
        return self._keys[rule_id]

    def candidates(self, request: PolicyRequest) -> list[T]:
        """Every item whose rule may match ``request`` (no duplicates, in no particular order)."""
        found = list(self._always)
        topic = request.topic
        by_prefix = self._by_prefix
        for length in self._prefix_lengths:
            if length > len(topic):
                break
            bucket = by_prefix.get(topic[:length])
            if bucket:
                found.extend(bucket)
        for attr, table in self._exact:
            bucket = table.get(getattr(request, attr))
            if bucket:
                found.extend(bucket)
        return list(dict.fromkeys(found)) if self._dedupe else found

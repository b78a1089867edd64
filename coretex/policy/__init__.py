"""The policy engine: bundles, compiled snapshots and decisions.

Purity rule: this package is part of the pure core. It never imports redis, celery, kombu, flask,
grpc or any Coretex adapter (store, kernel, scheduler, engine, gateway, sdk, cli), and it does no
I/O beyond parsing the bundle text it is handed. The gRPC server and client that expose it live
in :mod:`coretex.kernel`. A test imports this package in a fresh interpreter and checks which
modules got loaded.
"""

from coretex.policy.bundle import Bundle, Rule, RuleMatch, load_bundles, parse_bundle
from coretex.policy.decision import Decision, DecisionKind
from coretex.policy.evaluator import PRECEDENCE, Explanation, PolicySet, RuleHit, snapshot_id_of
from coretex.policy.request import PolicyRequest

__all__ = [
    "PRECEDENCE",
    "Bundle",
    "Decision",
    "DecisionKind",
    "Explanation",
    "PolicyRequest",
    "PolicySet",
    "Rule",
    "RuleHit",
    "RuleMatch",
    "load_bundles",
    "parse_bundle",
    "snapshot_id_of",
]

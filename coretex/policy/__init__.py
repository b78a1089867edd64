"""The policy engine: bundles, compiled snapshots, decisions, constraints and explanations.

Purity rule: this package is part of the pure core. It never imports redis, celery, kombu, flask,
grpc or any Coretex adapter (store, kernel, scheduler, engine, gateway, sdk, cli), and it does no
I/O beyond parsing the bundle text it is handed (third-party imports: yaml and celpy only). The
gRPC server and client that expose it live in :mod:`coretex.kernel`. A test imports this package
in a fresh interpreter and checks which modules got loaded.

Modules: :mod:`.bundle` (YAML -> rules), :mod:`.match` (conditions), :mod:`.when` (CEL),
:mod:`.constraints` (limits and their merge), :mod:`.index` (candidate lookup),
:mod:`.evaluator` (combining), :mod:`.explain` (traces), :mod:`.bundle_tests` (bundle self-tests).
"""

from coretex.policy.bundle import Bundle, Rule, load_bundles, parse_bundle
from coretex.policy.bundle_tests import BundleTest, BundleTestReport, TestFailure, bundle_test_report, run_bundle_tests
from coretex.policy.constraints import (
    NO_CONSTRAINTS,
    Budgets,
    Constraints,
    DiffLimits,
    FsMode,
    Network,
    RedactionLevel,
    Sandbox,
    merge_all,
)
from coretex.policy.decision import Decision, DecisionKind, Enforcement, Remediation
from coretex.policy.evaluator import PRECEDENCE, PolicySet, snapshot_id_of
from coretex.policy.explain import Explanation, RuleTrace
from coretex.policy.match import CriterionCheck, RuleMatch
from coretex.policy.request import PolicyRequest
from coretex.policy.when import WhenClause, WhenExpressionError

__all__ = [
    "NO_CONSTRAINTS",
    "PRECEDENCE",
    "Budgets",
    "Bundle",
    "BundleTest",
    "BundleTestReport",
    "Constraints",
    "CriterionCheck",
    "Decision",
    "DecisionKind",
    "DiffLimits",
    "Enforcement",
    "Explanation",
    "FsMode",
    "Network",
    "PolicyRequest",
    "PolicySet",
    "RedactionLevel",
    "Remediation",
    "Rule",
    "RuleMatch",
    "RuleTrace",
    "Sandbox",
    "TestFailure",
    "WhenClause",
    "WhenExpressionError",
    "bundle_test_report",
    "load_bundles",
    "merge_all",
    "parse_bundle",
    "run_bundle_tests",
    "snapshot_id_of",
]

"""Policy sources -> a compiled, tested :class:`PolicySet`, stage by stage.

    fetch (sources.py) -> verify -> parse -> compile -> test -> swap (reload.py)

Each stage either passes everything on or raises :class:`PolicyReloadError` naming itself, so an
operator reads "verify: config:secops/x: signature ... does not match" rather than a stack
trace. Nothing here swaps or reports: the reloader decides what a failure means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from coretex.errors import PolicyError
from coretex.kernel.sources import PolicySource
from coretex.policy import PolicySet, parse_bundle, run_bundle_tests
from coretex.policy.signing import PolicySignatureError, Signature, TrustedKeys, verify_bundle

MAX_TEST_FAILURES_SHOWN = 3


class Stage(StrEnum):
    """Where a reload failed (also the ``stage`` label of the failure metric and status)."""

    FETCH = "fetch"
    VERIFY = "verify"
    PARSE = "parse"
    COMPILE = "compile"
    TEST = "test"
    MAX_AGE = "max_age"
    """Not a pipeline stage: the active snapshot was not re-verified within CORETEX_POLICY_MAX_AGE_S."""


class PolicyReloadError(PolicyError):
    code = "policy_reload_failed"

    def __init__(self, stage: Stage, detail: str) -> None:
        super().__init__(f"{stage.value}: {detail}")
        self.stage = stage
        self.detail = detail


@dataclass(frozen=True)
class SignatureCheck:
    """How sources are verified: against ``trusted`` keys; unsigned ones only when ``allow_unsigned``."""

    trusted: TrustedKeys
    allow_unsigned: bool = False

    def verify(self, source: PolicySource) -> str | None:
        """The signer's key id, or None for an accepted unsigned source; raises at stage verify."""
        if source.signature is None:
            if self.allow_unsigned:
                return None
            raise PolicyReloadError(
                Stage.VERIFY, f"{source.name}: unsigned (signatures are required outside CORETEX_DEV_MODE)"
            )
        try:
            return verify_bundle(source.body, Signature.from_json(source.signature), self.trusted)
        except PolicySignatureError as exc:
            raise PolicyReloadError(Stage.VERIFY, f"{source.name}: {exc}") from exc


def build_policy(sources: Sequence[PolicySource], check: SignatureCheck) -> PolicySet:
    """Verify, parse, compile and test ``sources``; raise :class:`PolicyReloadError` at the first bad stage.

    Unexpected exceptions (a bug, not a bad bundle) are failures of their stage too: a reload
    must never take the kernel down or install something half-checked.
    """
    for source in sources:
        check.verify(source)
    bundles = []
    for source in sources:
        try:
            bundles.append(parse_bundle(source.name, source.body.decode("utf-8")))
        except Exception as exc:
            raise PolicyReloadError(Stage.PARSE, _describe(exc, source.name)) from exc
    try:
        policy = PolicySet(bundles)
    except Exception as exc:
        raise PolicyReloadError(Stage.COMPILE, _describe(exc)) from exc
    try:
        failures = run_bundle_tests(policy)
    except Exception as exc:
        raise PolicyReloadError(Stage.TEST, _describe(exc)) from exc
    if failures:
        shown = "; ".join(f.message for f in failures[:MAX_TEST_FAILURES_SHOWN])
        more = len(failures) - MAX_TEST_FAILURES_SHOWN
        raise PolicyReloadError(Stage.TEST, shown + (f" (and {more} more failing tests)" if more > 0 else ""))
    return policy


def _describe(exc: Exception, name: str = "") -> str:
    if isinstance(exc, PolicyError):
        return str(exc)  # already names the bundle, rule and field
    prefix = f"{name}: " if name else ""
    return f"{prefix}{type(exc).__name__}: {exc}"


def merged_sha256(policy: PolicySet) -> str:
    """sha256 (hex) of the canonical merged policy.

    The same canonical form as :func:`coretex.policy.snapshot_id_of`, whose 12-digit id is the
    prefix of this hash: decisions, not names, order or tests, make the hash.
    """
    canon = sorted(json.dumps(b.canonical(), sort_keys=True, separators=(",", ":")) for b in policy.bundles)
    return hashlib.sha256(("[" + ",".join(canon) + "]").encode("utf-8")).hexdigest()

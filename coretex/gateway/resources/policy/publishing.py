"""Drafts and going live: what the kernel would compile, with drafts in it, and the one path to publish.

The *active* bundles are read exactly as the kernel reads them (:class:`~coretex.kernel.sources.
PolicySources`: base files or URL, plus the enabled config-service bundles, named ``<file path>``
and ``config:<bundle id>``), so a simulation here compiles what the kernel compiles. A draft
with id ``X`` replaces ``config:X``, or the base file whose name is ``X`` (``base.yaml``), or
joins the set.

Every change that makes a bundle live — publish, ``PUT`` with ``enabled: true``, rollback — goes
through :func:`go_live`: the resulting snapshot must compile and pass every bundle's tests (the
kernel's own reload stages), unsigned content is signed with ``CORETEX_POLICY_SIGNING_KEY``
(content already carrying a ``# coretex-signature:`` line is stored as it is; without a key,
unsigned content is refused unless ``CORETEX_DEV_MODE``), the content is stored enabled as a new
revision (exactly the bytes that were checked), and the change is recorded in the policy audit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from flask import current_app

from coretex.errors import PolicyError
from coretex.gateway.auth import Principal
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem
from coretex.kernel.audit import DecisionAuditLog, PolicyChange, PolicyChangeLog
from coretex.kernel.signing_keys import load_private_key
from coretex.kernel.sources import CONFIG_PREFIX, PolicySourceError, PolicySources
from coretex.policy import Bundle, PolicySet, bundle_test_report, parse_bundle
from coretex.policy.impact import with_drafts
from coretex.policy.signing import sign_embedded, split_embedded_signature
from coretex.services import Services

_WHERE = re.compile(r", (rules|tests)\[(\d+)\](?: \((?:id|name) '([^']*)'\))?, field '([^']*)':")
_EXTENSION = "coretex.policy.publishing"


@dataclass(frozen=True)
class _Extension:
    sources: PolicySources
    decisions: DecisionAuditLog
    changes: PolicyChangeLog


def _extension() -> _Extension:
    found = current_app.extensions.get(_EXTENSION)
    if found is None:
        services = current_services()
        found = _Extension(
            PolicySources(services.settings, services.redis),  # one per app: it caches URL fetches
            DecisionAuditLog(services.redis, services.settings),
            PolicyChangeLog(services.redis, services.settings),
        )
        current_app.extensions[_EXTENSION] = found
    return cast(_Extension, found)


def decision_log() -> DecisionAuditLog:
    return _extension().decisions


def change_log() -> PolicyChangeLog:
    return _extension().changes


# ---- composing ------------------------------------------------------------------------------------
def problem_of(exc: PolicyError, field: str) -> Problem:
    """A 422 naming the bundle field at fault, e.g. ``content.rules[2].decision`` (rule id in the detail)."""
    where = _WHERE.search(str(exc))
    key = field if where is None else f"{field}.{where.group(1)}[{where.group(2)}].{where.group(4)}"
    return Problem(422, str(exc), code="policy_bundle_invalid", errors={key: [str(exc)]})


def parse_content(name: str, content: str, field: str) -> Bundle:
    try:
        return parse_bundle(name, content)
    except PolicyError as exc:
        raise problem_of(exc, field) from exc


def compile_policy(bundles: Sequence[Bundle], field: str) -> PolicySet:
    try:
        return PolicySet(bundles)
    except PolicyError as exc:
        raise problem_of(exc, field) from exc


def active_bundles() -> list[Bundle]:
    """The bundles the kernel compiles now (503 when a source cannot be read)."""
    try:
        sources = _extension().sources.fetch()
    except PolicySourceError as exc:
        raise Problem(503, f"the active policy sources cannot be read: {exc}",
                      code="policy_source_unavailable") from exc
    bundles = []
    for source in sources:
        try:
            bundles.append(parse_bundle(source.name, source.body.decode("utf-8")))
        except (PolicyError, UnicodeDecodeError) as exc:  # the kernel refuses it too: say so
            raise Problem(409, f"the active policy does not load: {exc}", code="active_policy_invalid") from exc
    return bundles


def draft_name(bundle_id: str, active: Sequence[Bundle]) -> str:
    """The bundle name a draft id replaces: a base file of that name, else ``config:<id>``."""
    for bundle in active:
        if not bundle.name.startswith(CONFIG_PREFIX) and bundle_id in (bundle.name, Path(bundle.name).name):
            return bundle.name
    return CONFIG_PREFIX + bundle_id


def parse_drafts(items: Sequence[Mapping[str, str]], active: Sequence[Bundle], field: str = "bundles") -> list[Bundle]:
    """``[{id, content}]`` -> bundles named as they would be in the kernel (422 on bad content)."""
    ids = [item["id"] for item in items]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise Problem(422, f"draft bundle {duplicate!r} given twice", code="validation_error",
                      errors={field: [f"duplicate id {duplicate!r}"]})
    return [parse_content(draft_name(item["id"], active), item["content"], f"{field}[{i}].content")
            for i, item in enumerate(items)]


def with_draft_contents(active: Sequence[Bundle], contents: Mapping[str, str], field: str) -> PolicySet:
    """The active policy with config-service bundle ``id -> content`` drafts in it."""
    drafts = [parse_content(CONFIG_PREFIX + bundle_id, text, field) for bundle_id, text in contents.items()]
    return compile_policy(with_drafts(active, drafts), field)


# ---- going live -----------------------------------------------------------------------------------
def content_for_publish(services: Services, content: str) -> str:
    """``content`` as it must be stored to be loaded: signed when it is not (see the module docstring)."""
    signature, _ = split_embedded_signature(content)
    if signature is not None:
        return content  # signed by whoever wrote it; the kernel verifies it against its trusted keys
    settings = services.settings
    if settings.policy_signing_key is None:
        if settings.dev_mode:
            return content
        raise Problem(422, "the bundle is unsigned and the gateway has no CORETEX_POLICY_SIGNING_KEY: sign it "
                           "(coretexctl policy sign) or configure the key; the kernel would refuse it",
                      code="policy_bundle_unsigned", errors={"content": ["unsigned"]})
    return sign_embedded(content, load_private_key(settings.policy_signing_key))


def _check_tests(policy: PolicySet) -> None:
    failures = bundle_test_report(policy).failures
    if failures:
        raise Problem(422, f"the resulting policy fails {len(failures)} bundle test(s); nothing was changed",
                      code="bundle_tests_failed", errors={"tests": [f.message for f in failures]})


def go_live(
    services: Services, principal: Principal, *, action: str, contents: Mapping[str, str], message: str,
    field: str, details: Mapping[str, Mapping[str, Any]] | None = None,
) -> PolicyChange:
    """Make config-service bundles ``id -> content`` live, or refuse with a 422 before writing anything."""
    active = active_bundles()
    before = compile_policy(active, field)
    after = with_draft_contents(active, contents, field)
    _check_tests(after)
    final = {bundle_id: content_for_publish(services, text) for bundle_id, text in contents.items()}
    recorded: dict[str, dict[str, Any]] = {}
    for bundle_id, text in final.items():
        stored = services.config.put_policy_bundle(bundle_id, text, principal.name, message, enabled=True)
        signed = split_embedded_signature(stored.content)[0] is not None
        recorded[bundle_id] = {**(details or {}).get(bundle_id, {}), "revision": stored.revision,
                               "sha256": stored.sha256, "signed": signed}
    return change_log().record(action=action, actor=principal.name, role=principal.role, message=message,
                               bundle_ids=list(recorded), before_snapshot=before.snapshot_id,
                               after_snapshot=after.snapshot_id, details=recorded)


def withdraw(services: Services, principal: Principal, bundle_id: str, content: str, message: str) -> PolicyChange:
    """Store ``content`` disabled for a live bundle: it leaves the snapshot (recorded as ``withdraw``)."""
    active = active_bundles()
    before = compile_policy(active, "content")
    remaining = [b for b in active if b.name != CONFIG_PREFIX + bundle_id]
    after = compile_policy(remaining, "content")
    _check_tests(after)
    stored = services.config.put_policy_bundle(bundle_id, content, principal.name, message, enabled=False)
    return change_log().record(action="withdraw", actor=principal.name, role=principal.role, message=message,
                               bundle_ids=[bundle_id], before_snapshot=before.snapshot_id,
                               after_snapshot=after.snapshot_id,
                               details={bundle_id: {"revision": stored.revision, "sha256": stored.sha256}})


def change_view(change: PolicyChange) -> dict[str, Any]:
    return {
        "id": change.id, "change_id": change.change_id, "time": change.time, "action": change.action,
        "actor": change.actor, "role": change.role, "message": change.message, "bundle_ids": list(change.bundle_ids),
        "before_snapshot": change.before_snapshot, "after_snapshot": change.after_snapshot, "details": change.details,
    }

"""The policy API: ask the kernel, try drafts, manage bundles, read the audits.

The kernel stays the one decision point: ``evaluate``, ``explain``, ``simulate`` (without drafts)
and ``snapshots`` are gRPC calls to it, and an unreachable kernel is a 503. Only work on *drafts*
is evaluated here, in the gateway: ``simulate`` with ``bundles``, ``bundles/{id}/simulate``,
``impact`` and the checks before anything goes live compile the *active* bundles, read as the
kernel reads them, with the drafts replacing or joining them (:mod:`.publishing`). Nothing here
is audited as a decision, and nothing but PUT, publish and rollback writes.

Bundle lifecycle (the config service keeps one content per bundle, so a live bundle has no
separate draft slot):

- ``PUT /bundles/{id}`` of a new or draft bundle stores a *draft* (disabled: not in the snapshot);
- ``POST /publish`` makes drafts live; ``PUT`` with ``enabled: true`` changes a bundle live;
  ``POST /rollback`` puts an older content back live as a new revision (history stays
  append-only). All three test, sign and audit the change (:func:`.publishing.go_live`);
- ``PUT`` with ``enabled: false`` on a live bundle withdraws it (audited as ``withdraw``);
  without ``enabled`` it is refused (409): a live bundle is never taken out by an edit. Review
  a change to a live bundle with ``POST /bundles/{id}/simulate {content}`` and ``POST /impact``.

The policy audit ``<ns>:audit:policy`` records who, when, why and the snapshot ids before and
after. Writing needs the ``secops`` role, taken from the API key only (``X-Principal-Role`` is
never read).

Bundle ids contain ``/``: write it as ``~`` in the path segment (``secops~workflows``), or give
``-`` as the segment and the id in the ``bundle_id`` query parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask.views import MethodView

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.config.errors import PolicyBundleInvalidError
from coretex.config.policy_bundles import PolicyBundle, PolicyBundleChange
from coretex.errors import ConfigError, NotFoundError
from coretex.gateway.auth import ADMIN, READ_ROLES, SECOPS, Principal, require_role
from coretex.gateway.blueprint import Blueprint, F
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem, error_ref
from coretex.gateway.resources.policy import schemas as s
from coretex.gateway.resources.policy.publishing import (
    active_bundles,
    change_log,
    change_view,
    compile_policy,
    decision_log,
    go_live,
    parse_drafts,
    with_draft_contents,
    withdraw,
)
from coretex.kernel.client import DECISION_KINDS_BY_WIRE, KernelAnswer
from coretex.kernel.wire import constraints_from_wire, policy_request_from_wire
from coretex.policy import Decision
from coretex.policy.impact import impact, with_drafts
from coretex.services import Services

POLICY_WRITE_ROLES = frozenset({SECOPS})
"""Who may change, publish and roll back bundles."""
ALL_TENANT_ROLES = frozenset({ADMIN, SECOPS})
"""Who may evaluate for other tenants, read every tenant's decisions and replay them."""
_ACTOR_TYPES = {"human": job_pb2.ACTOR_TYPE_HUMAN, "service": job_pb2.ACTOR_TYPE_SERVICE}
_PRIORITIES = {
    "interactive": job_pb2.JOB_PRIORITY_INTERACTIVE,
    "batch": job_pb2.JOB_PRIORITY_BATCH,
    "critical": job_pb2.JOB_PRIORITY_CRITICAL,
}

blp = Blueprint("policy", __name__, url_prefix="/api/v1/policy",
                description="Policy decisions, explanations, simulations, bundles and their audit")

_ERRORS = {code: error_ref(code) for code in (401, 403, 404, 409, 422, 503)}


def _errors(*codes: int) -> Callable[[F], F]:
    """Document the problem responses ``codes`` of one view."""

    def decorate(view: F) -> F:
        for code in codes:
            view = blp.alt_response(code, response=_ERRORS[code])(view)
        return view

    return decorate


# ---- asking the kernel ----------------------------------------------------------------------------
@blp.route("/evaluate")
class Evaluate(MethodView):
    @blp.arguments(s.PolicyRequestSchema)
    @blp.response(200, s.PolicyDecisionSchema)
    @_errors(401, 403, 422, 503)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The kernel's decision for a request (not a job: nothing is submitted)."""
        request = wire_request(body, require_role(READ_ROLES))
        return answer_view(current_services().kernel.evaluate(request))


@blp.route("/explain")
class Explain(MethodView):
    @blp.arguments(s.PolicyRequestSchema)
    @blp.response(200, s.PolicyExplanationSchema)
    @_errors(401, 403, 422, 503)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The kernel's decision and its explanation: which rule decided, on which observed values."""
        request = wire_request(body, require_role(READ_ROLES))
        answer = current_services().kernel.explain(request)
        return answer_view(answer) | {"explanation": answer.response.reason}


@blp.route("/simulate")
class Simulate(MethodView):
    @blp.arguments(s.SimulateSchema)
    @blp.response(200, s.PolicySimulationSchema)
    @_errors(401, 403, 422, 503)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """A decision with no side effects: from the kernel, or against draft ``bundles`` in the gateway."""
        principal = require_role(READ_ROLES)
        request = wire_request(body, principal)
        services = current_services()
        if not body.get("bundles"):
            answer = services.kernel.simulate(request)
            return answer_view(answer) | {"explanation": answer.response.reason, "evaluated_by": "kernel"}
        active = active_bundles()
        policy = compile_policy(with_drafts(active, parse_drafts(body["bundles"], active)), "bundles")
        explanation = policy.explain(policy_request_from_wire(request))
        return decision_view(explanation.decision) | {"explanation": explanation.render(),
                                                       "evaluated_by": "gateway-draft"}


@blp.route("/snapshots")
class Snapshots(MethodView):
    @blp.response(200, s.SnapshotsSchema)
    @_errors(401, 503)
    def get(self) -> dict[str, Any]:
        """The policy snapshot(s) the kernel holds, active first."""
        require_role(READ_ROLES)
        snapshots = current_services().kernel.list_snapshots()
        return {"active": snapshots[0] if snapshots else "", "snapshots": snapshots}


# ---- bundles ------------------------------------------------------------------------------------
@blp.route("/bundles")
class Bundles(MethodView):
    @blp.response(200, s.BundleSummarySchema(many=True))
    @_errors(401)
    def get(self) -> list[dict[str, Any]]:
        """Every config-service bundle, sorted by id; drafts have ``enabled`` false."""
        require_role(READ_ROLES)
        return [bundle_view(b, content=False) for b in current_services().config.list_policy_bundles()]


@blp.route("/bundles/<segment>")
class OneBundle(MethodView):
    @blp.arguments(s.BundleQuerySchema, location="query")
    @blp.response(200, s.BundleSchema)
    @_errors(401, 404, 422)
    def get(self, query: dict[str, Any], segment: str) -> dict[str, Any]:
        """One bundle with its content."""
        require_role(READ_ROLES)
        return bundle_view(current_services().config.get_policy_bundle(bundle_id_of(segment, query)))

    @blp.arguments(s.BundleQuerySchema, location="query")
    @blp.arguments(s.PutBundleSchema)
    @blp.response(200, s.BundleSchema)
    @_errors(401, 403, 409, 422)
    def put(self, query: dict[str, Any], body: dict[str, Any], segment: str) -> dict[str, Any]:
        """Store new content: a draft, or live with ``enabled: true``; 422 names the rule and field at fault."""
        principal = require_role(POLICY_WRITE_ROLES)
        bundle_id = bundle_id_of(segment, query)
        services = current_services()
        content, enabled = body["content"], body.get("enabled")
        live = _is_live(services, bundle_id)
        with_draft_contents(active_bundles(), {bundle_id: content}, "content")  # parses, compiles with the rest
        with _store_refusals():
            if enabled:
                go_live(services, principal, action="publish", contents={bundle_id: content},
                        message=body["message"], field="content")
            elif live and enabled is None:
                raise Problem(409, f"bundle {bundle_id!r} is published: send enabled=true to change it live "
                                   "(tested, signed, audited) or enabled=false to withdraw it; try drafts with the "
                                   "simulate endpoints first", code="bundle_published")
            elif live:
                withdraw(services, principal, bundle_id, content, body["message"])
            else:
                services.config.put_policy_bundle(bundle_id, content, principal.name, body["message"], enabled=False)
        return bundle_view(services.config.get_policy_bundle(bundle_id))


@blp.route("/bundles/<segment>/simulate")
class SimulateBundle(MethodView):
    @blp.arguments(s.BundleQuerySchema, location="query")
    @blp.arguments(s.BundleSimulateSchema)
    @blp.response(200, s.BundleSimulationSchema)
    @_errors(401, 403, 404, 422)
    def post(self, query: dict[str, Any], body: dict[str, Any], segment: str) -> dict[str, Any]:
        """Each request's decision under the active policy and with this bundle's draft in it."""
        principal = require_role(READ_ROLES)
        bundle_id = bundle_id_of(segment, query)
        services = current_services()
        content = body["content"] if "content" in body else services.config.get_policy_bundle(bundle_id).content
        active = active_bundles()
        current = compile_policy(active, "bundle")
        candidate = with_draft_contents(active, {bundle_id: content}, "content")
        results = []
        for index, item in enumerate(body["requests"]):
            request = policy_request_from_wire(wire_request(item, principal))
            before, after = current.evaluate(request), candidate.evaluate(request)
            results.append({"index": index, "topic": request.topic, "before": outcome_view(before),
                            "after": outcome_view(after), "changed": before.kind is not after.kind})
        return {"bundle_id": bundle_id, "current_snapshot": current.snapshot_id,
                "draft_snapshot": candidate.snapshot_id, "changed": sum(r["changed"] for r in results),
                "results": results}


# ---- publish and rollback -----------------------------------------------------------------------
@blp.route("/publish")
class Publish(MethodView):
    @blp.arguments(s.PublishSchema)
    @blp.response(200, s.PolicyChangeSchema)
    @_errors(401, 403, 404, 409, 422)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Enable draft bundles, once the snapshot they make compiles and passes every bundle test."""
        principal = require_role(POLICY_WRITE_ROLES)
        services = current_services()
        stored = {b.bundle_id: b for b in services.config.list_policy_bundles()}
        wanted = body.get("bundle_ids") or [i for i, b in stored.items() if not b.enabled]
        missing = [i for i in wanted if i not in stored]
        if missing:
            raise NotFoundError(f"policy bundle(s) {', '.join(map(repr, missing))} not found")
        drafts = {i: stored[i].content for i in dict.fromkeys(wanted) if not stored[i].enabled}
        if not drafts:
            raise Problem(409, "nothing to publish: no draft (disabled) bundle among those named", code="no_drafts")
        change = go_live(services, principal, action="publish", contents=drafts, message=body["message"],
                         field="bundle_ids")
        return change_view(change)


@blp.route("/rollback")
class Rollback(MethodView):
    @blp.arguments(s.RollbackSchema)
    @blp.response(200, s.PolicyChangeSchema)
    @_errors(401, 403, 404, 409, 422)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Put an older content of a bundle back, live, as a new revision (history is never rewritten)."""
        principal = require_role(POLICY_WRITE_ROLES)
        services = current_services()
        bundle_id = body["bundle_id"]
        current = services.config.get_policy_bundle(bundle_id)
        target = rollback_target(services, current, body.get("revision"))
        details = {bundle_id: {"from_revision": current.revision, "restored_revision": target.revision}}
        change = go_live(services, principal, action="rollback", contents={bundle_id: target.content},
                         message=body["message"], field="revision", details=details)
        return change_view(change)


# ---- audits and impact ----------------------------------------------------------------------------
@blp.route("/audit")
class PolicyAudit(MethodView):
    @blp.arguments(s.PageQuerySchema, location="query")
    @blp.response(200, s.PolicyChangeSchema(many=True))
    @_errors(401, 422)
    def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Publishes, rollbacks and withdrawals of bundles, newest first (page with ``before``)."""
        require_role(READ_ROLES)
        limit, before = s.page_args(query)
        return [change_view(c) for c in change_log().read(limit, before)]


@blp.route("/decisions")
class Decisions(MethodView):
    @blp.arguments(s.DecisionsQuerySchema, location="query")
    @blp.response(200, s.DecisionRecordSchema(many=True))
    @_errors(401, 403, 422)
    def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Audited kernel decisions, newest first: the caller's tenant's (admin and secops: all, or ``tenant``)."""
        principal = require_role(READ_ROLES)
        tenant = query.get("tenant")
        if principal.role not in ALL_TENANT_ROLES:
            if tenant is not None and tenant != principal.tenant:
                raise Problem(403, f"role {principal.role!r} reads only the decisions of tenant {principal.tenant!r}",
                              code="forbidden")
            tenant = principal.tenant
        limit, before = s.page_args(query)
        return [dataclasses.asdict(r) | {"rule_ids": list(r.rule_ids)}
                for r in decision_log().read(limit, before, tenant)]


@blp.route("/impact")
class Impact(MethodView):
    @blp.arguments(s.ImpactSchema)
    @blp.response(200, s.ImpactReportSchema)
    @_errors(401, 403, 422)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replay the newest audited requests against the active policy and with the drafts: what changes."""
        require_role(ALL_TENANT_ROLES)
        active = active_bundles()
        current = compile_policy(active, "bundles")
        draft = compile_policy(with_drafts(active, parse_drafts(body["bundles"], active)), "bundles")
        replay = [(decision_id, policy_request_from_wire(request))
                  for decision_id, request in decision_log().recent_requests(body["limit"])]
        report = impact(replay, current, draft, sample=body["sample"])
        return report.canonical() | {"replayed": len(replay)}


# ---- helpers --------------------------------------------------------------------------------------
def wire_request(body: dict[str, Any], principal: Principal) -> safety_pb2.PolicyCheckRequest:
    """The ``PolicyCheckRequest`` a client would send for ``body``; the tenant defaults to the key's."""
    tenant = body.get("tenant") or principal.tenant
    if tenant != principal.tenant and principal.role not in ALL_TENANT_ROLES:
        raise Problem(403, f"tenant {tenant!r} is not the tenant of this API key", code="tenant_mismatch",
                      errors={"tenant": [f"must be {principal.tenant!r} for role {principal.role!r}"]})
    meta: dict[str, Any] = body.get("meta") or {}
    request = safety_pb2.PolicyCheckRequest(
        job_id=body.get("job_id", ""),
        topic=body["topic"],
        tenant=tenant,
        principal_id=principal.name,
        priority=_PRIORITIES.get(body.get("priority", ""), job_pb2.JOB_PRIORITY_UNSPECIFIED),
        estimated_cost=float(body.get("estimated_cost", 0.0)),
        meta=job_pb2.JobMetadata(
            tenant_id=tenant,
            actor_id=meta.get("actor_id") or principal.name,
            actor_type=_ACTOR_TYPES.get(meta.get("actor_type", ""), job_pb2.ACTOR_TYPE_UNSPECIFIED),
            capability=meta.get("capability", ""),
            risk_tags=list(meta.get("risk_tags", ())),
            requires=list(meta.get("requires", ())),
            pack_id=meta.get("pack_id", ""),
            labels=dict(meta.get("labels", {})),
        ),
    )
    request.labels.update(body.get("labels", {}))
    return request


def answer_view(answer: KernelAnswer) -> dict[str, Any]:
    response = answer.response
    kind = DECISION_KINDS_BY_WIRE.get(response.decision)
    constraints = constraints_from_wire(response.constraints).canonical() if response.HasField("constraints") else {}
    return {
        "decision": kind.value if kind is not None else "unspecified",
        "rule_id": response.rule_id,
        "matched_rules": list(answer.matched_rule_ids),
        "shadow_rules": list(answer.shadow_rule_ids),
        "constraints": constraints,
        "remediations": [
            {"id": r.id, "title": r.title, "summary": r.summary, "replacement_topic": r.replacement_topic,
             "replacement_capability": r.replacement_capability, "add_labels": dict(sorted(r.add_labels.items())),
             "remove_labels": list(r.remove_labels)}
            for r in response.remediations
        ],
        "reason": response.reason,
        "snapshot": response.policy_snapshot,
        "approval_required": response.approval_required,
        "enforcement": answer.enforcement,
        "warnings": list(answer.warnings),
    }


def decision_view(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.kind.value,
        "rule_id": decision.rule_id,
        "matched_rules": list(decision.matched_rule_ids),
        "shadow_rules": list(decision.shadow_rule_ids),
        "constraints": decision.constraints.canonical(),
        "remediations": [r.canonical() for r in decision.remediations],
        "reason": decision.reason,
        "snapshot": decision.snapshot,
        "approval_required": decision.approval_required,
        "enforcement": decision.enforcement.value,
        "warnings": list(decision.warnings),
    }


def outcome_view(decision: Decision) -> dict[str, str]:
    return {"decision": decision.kind.value, "rule_id": decision.rule_id, "reason": decision.reason}


def bundle_view(bundle: PolicyBundle, *, content: bool = True) -> dict[str, Any]:
    view = dataclasses.asdict(bundle) | {"path_id": bundle.bundle_id.replace("/", "~")}
    if not content:
        view.pop("content")
    return view


def bundle_id_of(segment: str, query: dict[str, Any]) -> str:
    """The bundle id from the path segment (``~`` for ``/``) or the ``bundle_id`` query parameter."""
    from_path = segment.replace("~", "/")
    from_query = query.get("bundle_id")
    if from_query is None:
        return from_path
    if segment not in ("-", from_query.replace("/", "~")) and from_path != from_query:
        raise Problem(422, f"path names bundle {from_path!r} but bundle_id is {from_query!r}",
                      code="validation_error", errors={"bundle_id": ["differs from the path segment (use '-' there)"]})
    return str(from_query)


def rollback_target(services: Services, current: PolicyBundle, revision: int | None) -> PolicyBundleChange:
    """The history entry whose content to restore (a ``put`` change)."""
    puts = [c for c in services.config.policy_bundle_history(current.bundle_id, limit=1000) if c.action == "put"]
    if revision is None:
        older = [c for c in puts if c.sha256 != current.sha256]
        if not older:
            raise NotFoundError(f"bundle {current.bundle_id!r} has no earlier content in its history")
        return older[0]
    if revision > current.revision:
        raise NotFoundError(f"bundle {current.bundle_id!r} has no revision {revision} yet (at {current.revision})")
    target = next((c for c in puts if c.revision <= revision), None)
    if target is None:
        raise NotFoundError(f"revision {revision} of bundle {current.bundle_id!r} is no longer in the history")
    if target.sha256 == current.sha256 and current.enabled:
        raise Problem(409, f"bundle {current.bundle_id!r} already has the content of revision {revision}",
                      code="nothing_to_roll_back")
    return target


def _is_live(services: Services, bundle_id: str) -> bool:
    try:
        return services.config.get_policy_bundle(bundle_id).enabled
    except NotFoundError:
        return False


@contextmanager
def _store_refusals() -> Iterator[None]:
    """The config service's refusals of a bundle write, as 422s naming the field."""
    try:
        yield
    except PolicyBundleInvalidError as exc:
        raise Problem(422, str(exc), code="policy_bundle_invalid", errors={"content": [str(exc)]}) from exc
    except ConfigError as exc:
        if type(exc) is not ConfigError:  # conflicts and the like keep their own mapping
            raise
        raise Problem(422, str(exc), code="invalid_bundle_id", errors={"bundle_id": [str(exc)]}) from exc

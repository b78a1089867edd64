"""The policy API (``/api/v1/policy``) and job remediation over a real kernel (gRPC, port 0) and a real
redis-server, through Flask's test client; and ``coretexctl policy test`` on bundle folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.cli.policy_cmds import policy
from coretex.gateway import create_app
from coretex.gateway.auth import new_api_key, write_key_file
from coretex.kernel import KernelServer, build_kernel, policy_request_from_wire
from coretex.kernel.audit import DecisionAuditLog
from coretex.kernel.client import KernelAnswer, decision_trailers
from coretex.kernel.signing_keys import load_private_key, write_keypair
from coretex.model.job import JobState
from coretex.policy import PolicySet, parse_bundle
from coretex.policy.signing import sign_bundle
from coretex.services import Services
from coretex.settings import Settings
from coretex.testing import eventually, free_port

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
BASE = """\
version: 1
default_decision: deny
rules:
  - id: allow-jobs
    match: {topics: ["job.*"]}
    decision: allow
    reason: jobs run
  - id: deny-danger
    match: {topics: ["job.danger.*"]}
    decision: deny
    reason: dangerous topics are blocked
    remediations:
      - id: use-safe-rm
        title: Use the safe remover
        replacement_topic: job.safe.rm
        replacement_capability: fs.trash
        add_labels: {dry_run: "true"}
        remove_labels: [force]
tests:
  - name: echo runs
    request: {topic: job.echo}
    expect: allow
"""
TEAM = """\
version: 1
rules:
  - id: gate-deploys
    match: {topics: ["job.deploy"], labels: {env: prod}}
    decision: require_approval
    reason: prod deploys need a human
tests:
  - name: prod deploys are gated
    request: {topic: job.deploy, labels: {env: prod}}
    expect: require_approval
"""
TEAM_V2 = TEAM.replace("require_approval\n    reason", "deny\n    reason").replace(
    "expect: require_approval", "expect: deny")
RETIRE_ECHO = """\
version: 1
rules:
  - id: retire-echo
    match: {topics: ["job.echo"]}
    decision: deny
    reason: echo is retired
"""
EXTRA = """\
version: 1
rules:
  - id: deny-other
    match: {topics: ["other.*"]}
    decision: deny
    reason: not ours
"""
PRINCIPALS = {
    "alice": ("acme", "submitter"),
    "vera": ("acme", "viewer"),
    "olga": ("acme", "operator"),
    "bob": ("globex", "submitter"),
    "root": ("ops", "admin"),
    "sec": ("ops", "secops"),
}


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policies")
    (directory / "base.yaml").write_text(BASE)
    return directory


@pytest.fixture
def kernel(settings: Settings, policies: Path) -> Iterator[KernelServer]:
    """A real kernel on this test's namespace: base files of ``policies`` + config-service bundles, unsigned."""
    server = build_kernel(replace(settings, policies_dir=policies, dev_mode=True), "127.0.0.1:0").start()
    yield server
    server.stop(grace=0)


@dataclass
class Api:
    client: FlaskClient
    services: Services
    settings: Settings
    keys: dict[str, str]
    kernel: KernelServer | None

    @property
    def snapshot(self) -> str:
        """Content id of the kernel's policy (what decisions carry)."""
        assert self.kernel is not None
        return self.kernel.snapshot_id

    def call(self, method: str, path: str, who: str | None = "alice", **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def ok(self, method: str, path: str, who: str = "alice", status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, who, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def put_bundle(self, bundle_id: str, content: str, **extra: Any) -> TestResponse:
        body = {"content": content, "message": f"update {bundle_id}", **extra}
        return self.call("PUT", f"/api/v1/policy/bundles/{bundle_id.replace('/', '~')}", "sec", json=body)

    def audit_log(self) -> DecisionAuditLog:
        return DecisionAuditLog(self.services.redis, self.settings)

    def kernel_decides(self, topic: str, decision: str, **labels: str) -> None:
        """Wait until the kernel (after its reload) gives ``decision`` for ``topic``."""
        body = {"topic": topic, "labels": labels}
        eventually(lambda: self.ok("POST", "/api/v1/policy/evaluate", "sec", json=body)["decision"] == decision,
                   timeout=20, message=f"kernel to {decision} {topic}")


def make_api(settings: Settings, tmp_path: Path, kernel_addr: str, kernel: KernelServer | None,
             **overrides: Any) -> Api:
    keys = {name: new_api_key() for name in PRINCIPALS}
    keys_file = tmp_path / f"api-keys-{new_api_key()[:8]}.yaml"
    write_key_file(keys_file, [{"name": n, "key": keys[n], "tenant": t, "role": r} for n, (t, r) in PRINCIPALS.items()])
    api_settings = replace(settings, api_keys_file=keys_file, kernel_addr=kernel_addr, **overrides)
    services = Services(api_settings)
    return Api(create_app(api_settings, services).test_client(), services, api_settings, keys, kernel)


def close(services: Services) -> None:
    if "app" in services.__dict__:
        services.app.close()
    services.close()


@pytest.fixture
def api(settings: Settings, tmp_path: Path, policies: Path, kernel: KernelServer) -> Iterator[Api]:
    made = make_api(settings, tmp_path, kernel.address, kernel, policies_dir=policies, dev_mode=True)
    yield made
    close(made.services)


@pytest.fixture
def api_without_kernel(settings: Settings, tmp_path: Path, policies: Path) -> Iterator[Api]:
    made = make_api(settings, tmp_path, f"127.0.0.1:{free_port()}", None, policies_dir=policies, dev_mode=True,
                    kernel_timeout_s=0.5)
    yield made
    close(made.services)


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["detail"]
    return body


def policy_keys(api: Api) -> dict[str, Any]:
    """Config and audit keys with their content (the kernel's own status keys change by themselves)."""
    raw = redis.Redis.from_url(api.settings.redis_url)
    try:
        keys = [k for k in raw.scan_iter(f"{api.settings.namespace}:*") if b":cfg:" in k or b":audit:" in k]
        return {k: raw.dump(k) for k in keys}
    finally:
        raw.close()


def seed_decisions(api: Api, items: list[tuple[str, str, dict[str, str]]]) -> list[str]:
    """Audit ``(topic, tenant, labels)`` requests with the decision of the base policy."""
    log = api.audit_log()
    base = PolicySet([parse_bundle("base", BASE), parse_bundle("team", TEAM)])
    ids = []
    for topic, tenant, labels in items:
        request = safety_pb2.PolicyCheckRequest(topic=topic, tenant=tenant, job_id=f"{topic}-{tenant}")
        request.meta.CopyFrom(job_pb2.JobMetadata(tenant_id=tenant, actor_id="seed"))
        request.labels.update(labels)
        ids.append(log.append(request, base.evaluate(policy_request_from_wire(request))))
    return ids


# ---- evaluate / explain / simulate / snapshots ---------------------------------------------------
def test_evaluate_asks_the_kernel(api: Api) -> None:
    allow = api.ok("POST", "/api/v1/policy/evaluate", json={"topic": "job.echo", "labels": {"a": "b"}})
    assert (allow["decision"], allow["rule_id"], allow["matched_rules"]) == ("allow", "allow-jobs", ["allow-jobs"])
    assert allow["snapshot"] == api.snapshot and allow["remediations"] == []
    assert allow["constraints"] == {} and allow["approval_required"] is False

    deny = api.ok("POST", "/api/v1/policy/evaluate", "vera",
                  json={"topic": "job.danger.rm", "meta": {"capability": "fs.delete", "risk_tags": ["prod"]},
                        "priority": "batch", "estimated_cost": 2.5})
    assert (deny["decision"], deny["rule_id"]) == ("deny", "deny-danger")
    assert deny["reason"] == "dangerous topics are blocked"
    (remedy,) = deny["remediations"]
    assert remedy["id"] == "use-safe-rm" and remedy["replacement_topic"] == "job.safe.rm"
    assert remedy["add_labels"] == {"dry_run": "true"} and remedy["remove_labels"] == ["force"]

    default = api.ok("POST", "/api/v1/policy/evaluate", json={"topic": "other.thing"})
    assert (default["decision"], default["rule_id"], default["matched_rules"]) == ("deny", "", [])


def test_evaluate_for_another_tenant_needs_admin_or_secops(api: Api) -> None:
    body = assert_problem(api.call("POST", "/api/v1/policy/evaluate", json={"topic": "job.echo", "tenant": "globex"}),
                          403)
    assert "tenant" in body["errors"]
    assert api.ok("POST", "/api/v1/policy/evaluate", "sec", json={"topic": "job.echo", "tenant": "globex"})


@pytest.mark.parametrize("body, field", [
    ({}, "topic"),
    ({"topic": "Not A Topic"}, "topic"),
    ({"topic": "job.echo", "priority": "urgent"}, "priority"),
    ({"topic": "job.echo", "meta": {"actor_type": "robot"}}, "meta.actor_type"),
    ({"topic": "job.echo", "estimated_cost": -1}, "estimated_cost"),
])
def test_bad_requests_are_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(api.call("POST", "/api/v1/policy/evaluate", json=body), 422)
    assert field in problem["errors"]


def test_explain_returns_the_kernels_explanation(api: Api) -> None:
    answer = api.ok("POST", "/api/v1/policy/explain", json={"topic": "job.danger.rm"})
    assert answer["decision"] == "deny" and answer["rule_id"] == "deny-danger"
    assert "deny-danger" in answer["explanation"] and "job.danger.rm" in answer["explanation"]
    assert "also matched" in answer["explanation"]  # allow-jobs matched too, and was outranked


def test_simulate_has_no_side_effects_with_or_without_drafts(api: Api) -> None:
    before = policy_keys(api)
    by_kernel = api.ok("POST", "/api/v1/policy/simulate", json={"topic": "job.echo"})
    assert (by_kernel["decision"], by_kernel["evaluated_by"]) == ("allow", "kernel")

    drafts = [{"id": "secops/retire", "content": RETIRE_ECHO}]
    drafted = api.ok("POST", "/api/v1/policy/simulate", json={"topic": "job.echo", "bundles": drafts})
    assert (drafted["decision"], drafted["rule_id"], drafted["evaluated_by"]) == ("deny", "retire-echo",
                                                                                  "gateway-draft")
    assert drafted["matched_rules"] == ["allow-jobs", "retire-echo"]
    assert drafted["snapshot"] == PolicySet([parse_bundle("b", BASE), parse_bundle("r", RETIRE_ECHO)]).snapshot_id
    assert "retire-echo" in drafted["explanation"]
    # A draft that replaces the base file by its name takes it out.
    replaced = api.ok("POST", "/api/v1/policy/simulate",
                      json={"topic": "job.danger.rm", "bundles": [{"id": "base.yaml", "content": RETIRE_ECHO}]})
    assert (replaced["decision"], replaced["rule_id"]) == ("deny", "")

    assert policy_keys(api) == before  # nothing written
    assert api.audit_log().read(10) == []


def test_simulate_with_a_bad_draft_is_422_naming_rule_and_field(api: Api) -> None:
    bad = RETIRE_ECHO.replace("decision: deny", "decision: maybe")
    problem = assert_problem(api.call("POST", "/api/v1/policy/simulate",
                                      json={"topic": "job.echo", "bundles": [{"id": "x", "content": bad}]}), 422)
    assert list(problem["errors"]) == ["bundles[0].content.rules[0].decision"]
    assert "retire-echo" in problem["detail"]


def test_snapshots_come_from_the_kernel(api: Api) -> None:
    assert api.kernel is not None and api.kernel.service.active is not None
    listed = api.kernel.service.active.snapshot_id  # v<version>:<hash>, the kernel's ListSnapshots
    assert api.ok("GET", "/api/v1/policy/snapshots", "vera") == {"active": listed, "snapshots": [listed]}


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/policy/evaluate", {"topic": "job.echo"}),
    ("POST", "/api/v1/policy/explain", {"topic": "job.echo"}),
    ("POST", "/api/v1/policy/simulate", {"topic": "job.echo"}),
    ("GET", "/api/v1/policy/snapshots", None),
])
def test_kernel_unreachable_is_503(api_without_kernel: Api, method: str, path: str, body: Any) -> None:
    problem = assert_problem(api_without_kernel.call(method, path, json=body), 503)
    assert problem["type"] == "urn:coretex:problem:KERNEL_UNAVAILABLE"


def test_kernel_trailers_carry_the_rest_of_a_decision() -> None:
    policy = PolicySet([parse_bundle("base", BASE), parse_bundle("team", TEAM)])
    decision = policy.evaluate(policy_request_from_wire(safety_pb2.PolicyCheckRequest(topic="job.danger.rm")))
    decision = replace(decision, warnings=("naïve warning", "second"))
    response = safety_pb2.PolicyCheckResponse(rule_id=decision.rule_id)
    answer = KernelAnswer.of(response, decision_trailers(decision))
    assert answer.matched_rule_ids == ("allow-jobs", "deny-danger") and answer.enforcement == "hard"
    assert answer.warnings == ("na\\xefve warning", "second")  # metadata is ASCII: escaped, not dropped
    assert KernelAnswer.of(response, None).matched_rule_ids == ("deny-danger",)  # a peer without trailers


# ---- bundles ------------------------------------------------------------------------------------
def test_put_stores_a_draft_readable_by_tilde_or_query(api: Api) -> None:
    response = api.put_bundle("secops/team", TEAM)
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = response.get_json()
    assert (stored["bundle_id"], stored["path_id"], stored["enabled"], stored["revision"]) == (
        "secops/team", "secops~team", False, 1)
    assert stored["author"] == "sec" and stored["message"] == "update secops/team"

    listed = api.ok("GET", "/api/v1/policy/bundles", "vera")
    assert [b["bundle_id"] for b in listed] == ["secops/team"] and "content" not in listed[0]
    assert api.ok("GET", "/api/v1/policy/bundles/secops~team", "vera")["content"] == TEAM
    assert api.ok("GET", "/api/v1/policy/bundles/-?bundle_id=secops/team", "vera")["content"] == TEAM
    assert_problem(api.call("GET", "/api/v1/policy/bundles/other~x?bundle_id=secops/team"), 422)
    assert_problem(api.call("GET", "/api/v1/policy/bundles/secops~nothing"), 404)

    live = api.put_bundle("secops/team", TEAM, enabled=True).get_json()
    assert (live["enabled"], live["revision"]) == (True, 2)
    api.kernel_decides("job.deploy", "require_approval", env="prod")

    # A published bundle is never taken out of the snapshot by a plain edit ...
    problem = assert_problem(api.put_bundle("secops/team", TEAM_V2), 409)
    assert problem["type"] == "urn:coretex:problem:bundle_published"
    assert api.ok("GET", "/api/v1/policy/bundles/secops~team")["revision"] == 2
    # ... only by an explicit, audited withdrawal.
    withdrawn = api.put_bundle("secops/team", TEAM_V2, enabled=False).get_json()
    assert (withdrawn["enabled"], withdrawn["content"]) == (False, TEAM_V2)
    actions = [(c["action"], c["actor"]) for c in api.ok("GET", "/api/v1/policy/audit")]
    assert actions == [("withdraw", "sec"), ("publish", "sec")]
    api.kernel_decides("job.deploy", "allow", env="prod")


@pytest.mark.parametrize("who", ["olga", "root", "alice"])
def test_only_secops_may_change_bundles_and_headers_cannot_claim_it(api: Api, who: str) -> None:
    forged = {"X-Principal-Role": "secops", "X-Tenant": "ops"}
    body = {"content": TEAM, "message": "sneaky"}
    assert_problem(api.call("PUT", "/api/v1/policy/bundles/secops~team", who, headers=forged, json=body), 403)
    assert_problem(api.call("POST", "/api/v1/policy/publish", who, headers=forged, json={"message": "x"}), 403)
    assert_problem(api.call("POST", "/api/v1/policy/rollback", who, headers=forged,
                            json={"bundle_id": "secops/team", "message": "x"}), 403)
    assert api.ok("GET", "/api/v1/policy/bundles", who) == []


def test_a_bad_bundle_is_422_naming_the_rule_and_field(api: Api) -> None:
    bad = TEAM.replace("decision: require_approval", "decision: perhaps")
    problem = assert_problem(api.put_bundle("secops/team", bad), 422)
    assert problem["type"] == "urn:coretex:problem:policy_bundle_invalid"
    assert list(problem["errors"]) == ["content.rules[0].decision"]
    assert "gate-deploys" in problem["detail"] and "perhaps" in problem["detail"]

    clash = assert_problem(api.put_bundle("secops/clash", RETIRE_ECHO.replace("retire-echo", "allow-jobs")), 422)
    assert "content.rules[0].id" in clash["errors"] and "allow-jobs" in clash["detail"]
    bad_id = assert_problem(api.put_bundle("secops/no spaces", TEAM), 422)
    assert "bundle_id" in bad_id["errors"]
    assert api.ok("GET", "/api/v1/policy/bundles", "sec") == []  # nothing was stored


def test_bundle_simulate_compares_current_and_draft(api: Api) -> None:
    api.put_bundle("secops/team", TEAM)  # a draft: not active yet
    requests = [{"topic": "job.deploy", "labels": {"env": "prod"}}, {"topic": "job.echo"}]
    result = api.ok("POST", "/api/v1/policy/bundles/secops~team/simulate", "vera", json={"requests": requests})
    assert result["current_snapshot"] == api.snapshot != result["draft_snapshot"]
    assert result["changed"] == 1
    first, second = result["results"]
    assert first["before"]["decision"] == "allow" and first["after"] == {
        "decision": "require_approval", "rule_id": "gate-deploys", "reason": "prod deploys need a human"}
    assert first["changed"] and not second["changed"]

    unsaved = api.ok("POST", "/api/v1/policy/bundles/secops~team/simulate", "vera",
                     json={"requests": requests[:1], "content": TEAM_V2})
    assert unsaved["results"][0]["after"]["decision"] == "deny"
    assert_problem(api.call("POST", "/api/v1/policy/bundles/secops~none/simulate", json={"requests": requests}), 404)


# ---- publish, rollback, audit -------------------------------------------------------------------
def test_publish_enables_drafts_and_is_audited(api: Api) -> None:
    api.put_bundle("secops/team", TEAM)
    assert_problem(api.call("POST", "/api/v1/policy/publish", "sec", json={}), 422)  # message is required

    before = api.snapshot  # read now: the kernel reloads within moments of the publish
    change = api.ok("POST", "/api/v1/policy/publish", "sec", json={"message": "gate prod deploys"})
    with_team = PolicySet([parse_bundle("b", BASE), parse_bundle("t", TEAM)]).snapshot_id
    assert (change["action"], change["actor"], change["role"], change["message"]) == (
        "publish", "sec", "secops", "gate prod deploys")
    assert change["bundle_ids"] == ["secops/team"]
    assert (change["before_snapshot"], change["after_snapshot"]) == (before, with_team)
    assert change["details"]["secops/team"] | {"sha256": None} == {"revision": 2, "signed": False, "sha256": None}
    assert change["time"] > 0
    assert api.ok("GET", "/api/v1/policy/bundles/secops~team")["enabled"] is True
    api.kernel_decides("job.deploy", "require_approval", env="prod")  # the kernel reloaded the published bundle
    assert api.snapshot == with_team

    (listed,) = api.ok("GET", "/api/v1/policy/audit", "vera")
    assert listed == change
    problem = assert_problem(api.call("POST", "/api/v1/policy/publish", "sec", json={"message": "again"}), 409)
    assert problem["type"] == "urn:coretex:problem:no_drafts"
    assert_problem(api.call("POST", "/api/v1/policy/publish", "sec",
                            json={"message": "x", "bundle_ids": ["secops/ghost"]}), 404)


def test_publish_refuses_drafts_whose_tests_fail(api: Api) -> None:
    broken = TEAM.replace("expect: require_approval", "expect: allow")
    api.put_bundle("secops/team", broken)
    problem = assert_problem(api.call("POST", "/api/v1/policy/publish", "sec", json={"message": "oops"}), 422)
    assert "prod deploys are gated" in problem["errors"]["tests"][0]
    assert api.ok("GET", "/api/v1/policy/bundles/secops~team")["enabled"] is False
    assert api.ok("GET", "/api/v1/policy/audit") == []


def test_rollback_restores_old_content_as_a_new_revision(api: Api) -> None:
    api.put_bundle("secops/team", TEAM, enabled=True)  # revision 1
    api.put_bundle("secops/team", TEAM_V2, enabled=True)  # revision 2
    change = api.ok("POST", "/api/v1/policy/rollback", "sec",
                    json={"bundle_id": "secops/team", "message": "v2 froze deploys by mistake"})
    snap = {name: PolicySet([parse_bundle("b", BASE), parse_bundle("t", text)]).snapshot_id
            for name, text in (("v1", TEAM), ("v2", TEAM_V2))}
    assert (change["action"], change["actor"], change["message"]) == ("rollback", "sec",
                                                                      "v2 froze deploys by mistake")
    assert (change["before_snapshot"], change["after_snapshot"]) == (snap["v2"], snap["v1"])
    assert change["details"]["secops/team"] | {"sha256": None} == {
        "from_revision": 2, "restored_revision": 1, "revision": 3, "signed": False, "sha256": None}
    bundle = api.ok("GET", "/api/v1/policy/bundles/secops~team")
    assert (bundle["content"], bundle["revision"], bundle["enabled"]) == (TEAM, 3, True)
    api.kernel_decides("job.deploy", "require_approval", env="prod")
    history = api.services.config.policy_bundle_history("secops/team")
    assert [c.revision for c in history] == [3, 2, 1]  # append-only

    again = api.ok("POST", "/api/v1/policy/rollback", "sec",
                   json={"bundle_id": "secops/team", "revision": 2, "message": "back to v2"})
    assert again["after_snapshot"] == snap["v2"]
    assert_problem(api.call("POST", "/api/v1/policy/rollback", "sec",
                            json={"bundle_id": "secops/team", "revision": 4, "message": "now"}), 409)
    assert_problem(api.call("POST", "/api/v1/policy/rollback", "sec",
                            json={"bundle_id": "secops/team", "revision": 9, "message": "future"}), 404)
    assert_problem(api.call("POST", "/api/v1/policy/rollback", "sec",
                            json={"bundle_id": "secops/ghost", "message": "x"}), 404)
    audit = api.ok("GET", "/api/v1/policy/audit?limit=1")
    assert [c["message"] for c in audit] == ["back to v2"]
    older = api.ok("GET", f"/api/v1/policy/audit?before={audit[0]['id']}")
    assert [(c["action"], c["message"]) for c in older] == [
        ("rollback", "v2 froze deploys by mistake"),
        ("publish", "update secops/team"),
        ("publish", "update secops/team"),
    ]


def test_publish_signs_bundles_for_a_kernel_that_requires_signatures(settings: Settings, tmp_path: Path) -> None:
    pair = write_keypair(tmp_path / "keys")
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(f'"{pair.key_id}": {pair.public_base64}\n')
    signed_dir = tmp_path / "signed-policies"
    signed_dir.mkdir()
    (signed_dir / "base.yaml").write_text(BASE)
    (signed_dir / "base.yaml.sig").write_text(sign_bundle(BASE.encode(), load_private_key(pair.private_path)).to_json())
    strict = replace(settings, policies_dir=signed_dir, policy_trusted_keys=trusted, dev_mode=False)
    kernel = build_kernel(strict, "127.0.0.1:0").start()
    try:
        signer = make_api(strict, tmp_path, kernel.address, kernel, policy_signing_key=pair.private_path)
        try:
            assert signer.put_bundle("secops/team", TEAM).status_code == 200
            change = signer.ok("POST", "/api/v1/policy/publish", "sec", json={"message": "signed on publish"})
            assert change["details"]["secops/team"]["signed"] is True
            stored = signer.ok("GET", "/api/v1/policy/bundles/secops~team")["content"]
            assert stored.startswith("# coretex-signature: ") and stored.endswith(TEAM)
            signer.kernel_decides("job.deploy", "require_approval", env="prod")  # the kernel verified it
        finally:
            close(signer.services)

        keyless = make_api(strict, tmp_path, kernel.address, kernel)
        try:
            assert keyless.put_bundle("secops/extra", EXTRA).status_code == 200
            problem = assert_problem(keyless.call("POST", "/api/v1/policy/publish", "sec", json={"message": "x"}), 422)
            assert problem["type"] == "urn:coretex:problem:policy_bundle_unsigned"
            assert keyless.ok("GET", "/api/v1/policy/bundles/secops~extra")["enabled"] is False
        finally:
            close(keyless.services)
    finally:
        kernel.stop(grace=0)


# ---- decisions and impact -------------------------------------------------------------------------
def test_decisions_are_scoped_to_the_callers_tenant(api: Api) -> None:
    seed_decisions(api, [("job.echo", "acme", {}), ("job.danger.rm", "globex", {}), ("job.deploy", "acme", {})])
    mine = api.ok("GET", "/api/v1/policy/decisions", "vera")
    assert [(d["topic"], d["tenant"]) for d in mine] == [("job.deploy", "acme"), ("job.echo", "acme")]
    assert set(mine[0]) >= {"decision_id", "rule_ids", "snapshot", "constraints", "request_hash", "hash"}
    assert "request" not in mine[0]
    assert len(api.ok("GET", "/api/v1/policy/decisions", "sec")) == 3
    assert [d["decision"] for d in api.ok("GET", "/api/v1/policy/decisions?tenant=globex", "root")] == ["deny"]
    assert_problem(api.call("GET", "/api/v1/policy/decisions?tenant=globex", "vera"), 403)
    assert api.ok("GET", "/api/v1/policy/decisions?tenant=acme&limit=1", "vera")[0]["topic"] == "job.deploy"


def test_impact_replays_audited_requests_against_drafts(api: Api) -> None:
    ids = seed_decisions(api, [("job.echo", "acme", {}), ("job.echo", "globex", {}),
                               ("job.deploy", "acme", {"env": "prod"}), ("job.danger.rm", "acme", {})])
    report = api.ok("POST", "/api/v1/policy/impact", "sec",
                    json={"bundles": [{"id": "secops/retire", "content": RETIRE_ECHO}]})
    assert (report["replayed"], report["total"], report["changed"], report["unchanged"]) == (4, 4, 2, 2)
    (transition,) = report["transitions"]
    assert (transition["transition"], transition["count"]) == ("ALLOW->DENY", 2)
    assert set(transition["sample_ids"]) == {ids[0], ids[1]}
    assert report["current_snapshot"] == api.snapshot

    limited = api.ok("POST", "/api/v1/policy/impact", "root",
                     json={"bundles": [{"id": "secops/retire", "content": RETIRE_ECHO}], "limit": 2})
    assert (limited["replayed"], limited["changed"]) == (2, 0)  # the two newest: deploy and rm
    assert_problem(api.call("POST", "/api/v1/policy/impact", "olga",
                            json={"bundles": [{"id": "x", "content": RETIRE_ECHO}]}), 403)
    assert_problem(api.call("POST", "/api/v1/policy/impact", "sec", json={"bundles": []}), 422)


# ---- remediation ------------------------------------------------------------------------------------
def denied_job(api: Api, who: str = "alice") -> str:
    body = {"topic": "job.danger.rm", "input": {"path": "/tmp/x"},
            "meta": {"labels": {"force": "yes", "team": "infra"}, "capability": "fs.delete"}}
    job_id: str = api.ok("POST", "/api/v1/jobs", who, status=202, json=body)["job_id"]
    api.services.jobs.transition(job_id, JobState.DENIED, note="safety_denied", error_code="safety_denied")
    return job_id


def test_remediation_submits_a_linked_job(api: Api) -> None:
    job_id = denied_job(api)
    receipt = api.ok("POST", f"/api/v1/jobs/{job_id}/remediate", "alice", status=202,
                     json={"remediation_id": "use-safe-rm"})
    assert (receipt["remediation_of"], receipt["remediation_id"], receipt["duplicate"]) == (
        job_id, "use-safe-rm", False)
    new = api.services.jobs.get(receipt["job_id"])
    assert (new.topic, new.tenant_id, new.trace_id) == ("job.safe.rm", "acme", receipt["trace_id"])
    assert receipt["state"] == new.state.value != JobState.PENDING.value  # through the pipeline already
    assert new.decision == "ALLOW"  # the kernel judged the remediated job afresh
    assert new.meta.capability == "fs.trash"
    assert new.meta.labels == {"team": "infra", "dry_run": "true", "remediation_of": job_id,
                               "remediation_id": "use-safe-rm"}
    assert api.services.pointers.get_json(new.context_ptr, "acme") == {"path": "/tmp/x"}

    again = api.ok("POST", f"/api/v1/jobs/{job_id}/remediate", "alice", json={"remediation_id": "use-safe-rm"})
    assert (again["job_id"], again["duplicate"]) == (receipt["job_id"], True)


def test_remediation_refusals(api: Api, api_without_kernel: Api) -> None:
    job_id = denied_job(api)
    unknown = assert_problem(api.call("POST", f"/api/v1/jobs/{job_id}/remediate",
                                      json={"remediation_id": "pray"}), 404)
    assert "use-safe-rm" in unknown["detail"]
    assert_problem(api.call("POST", f"/api/v1/jobs/{job_id}/remediate", "bob",
                            json={"remediation_id": "use-safe-rm"}), 404)  # another tenant's job
    assert_problem(api.call("POST", f"/api/v1/jobs/{job_id}/remediate", "vera",
                            json={"remediation_id": "use-safe-rm"}), 403)  # viewers do not submit
    pending = api.ok("POST", "/api/v1/jobs", status=202, json={"topic": "job.echo"})["job_id"]
    assert_problem(api.call("POST", f"/api/v1/jobs/{pending}/remediate", json={"remediation_id": "x"}), 409)
    assert_problem(api.call("POST", f"/api/v1/jobs/{job_id}/remediate", json={}), 422)
    assert_problem(api_without_kernel.call("POST", f"/api/v1/jobs/{job_id}/remediate",
                                           json={"remediation_id": "use-safe-rm"}), 503)


def test_openapi_documents_the_policy_api(api: Api) -> None:
    spec = api.client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/policy/evaluate", "/api/v1/policy/bundles/{segment}", "/api/v1/policy/publish",
                 "/api/v1/policy/impact", "/api/v1/jobs/{job_id}/remediate"):
        assert path in spec["paths"]
    put = spec["paths"]["/api/v1/policy/bundles/{segment}"]["put"]
    assert {"403", "422"} <= set(put["responses"])


# ---- coretexctl policy test ---------------------------------------------------------------------
def run_policy_test(directory: Path, *args: str) -> Any:
    return CliRunner().invoke(policy, ["test", str(directory), *args])


def test_policy_test_passes_and_reports_coverage(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "secops").mkdir()
    (tmp_path / "secops" / "team.yml").write_text(TEAM)
    table = run_policy_test(tmp_path)
    assert table.exit_code == 0, table.output
    assert "PASS" in table.output and "2/2 tests passed" in table.output and "deny-danger" in table.output

    result = run_policy_test(tmp_path, "-o", "json")
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["passed"] and report["tests"] == 2
    assert report["rules"] == {"allow-jobs": ["base.yaml: echo runs", "secops/team.yml: prod deploys are gated"],
                               "deny-danger": [], "gate-deploys": ["secops/team.yml: prod deploys are gated"]}
    assert report["uncovered_rule_ids"] == ["deny-danger"] and report["coverage"] == pytest.approx(2 / 3, abs=1e-3)


def test_policy_test_fails_on_a_failing_test_or_a_bad_bundle(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE.replace("expect: allow", "expect: deny"))
    failing = run_policy_test(tmp_path)
    assert failing.exit_code == 1 and "FAIL" in failing.output and "echo runs" in failing.output
    as_json = run_policy_test(tmp_path, "--output", "json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["failures"][0]["actual"] == "allow"

    (tmp_path / "base.yaml").write_text("version: 0\n")
    bad = run_policy_test(tmp_path)
    assert bad.exit_code == 1 and "version" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_policy_test(empty).exit_code == 1

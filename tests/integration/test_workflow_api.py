"""The workflow, run and schema REST API (and ``coretexctl workflows|runs``) on a real redis-server
and a real kernel (gRPC, in this process). No control worker runs: workflows of approval, condition,
notify and delay steps run inside the engine; a worker step's run stays running with its job
created, which is enough for the API's shape."""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from coretex.cli.ctl import main as coretexctl
from coretex.gateway import create_app
from coretex.gateway.auth import new_api_key, write_key_file
from coretex.kernel import KernelServer, build_kernel
from coretex.services import Services
from coretex.settings import Settings, load_settings
from coretex.testing import RedisServer, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"
MAX_INPUT = 4096
# name -> (tenant, role)
PRINCIPALS = {
    "alice": ("acme", "submitter"),
    "vera": ("acme", "viewer"),
    "olga": ("acme", "operator"),
    "otto": ("acme", "operator"),
    "sec": ("acme", "secops"),
    "bob": ("globex", "operator"),
    "root": ("ops", "admin"),
}
GATE = {
    "id": "gate",
    "name": "Gated notice",
    "steps": [
        {"id": "ok", "type": "approval", "approvers": ["operator"]},
        {"id": "tell", "type": "notify", "depends_on": ["ok"], "message": "approved"},
    ],
    "output": {"approved_by": "${steps.ok.output.approved_by}"},
}
INSTANT = {"id": "instant", "steps": [{"id": "tell", "type": "notify", "message": "hello ${input.who}"}]}


@pytest.fixture(scope="module")
def kernel(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelServer]:
    """One kernel for the module: the base policy plus a rule that denies ``workflow.forbidden-*``."""
    policies = tmp_path_factory.mktemp("policies")
    shutil.copy(REPO / "policies" / "base.yaml", policies / "base.yaml")
    (policies / "forbidden.yaml").write_text(yaml.safe_dump({"version": 1, "rules": [
        {"id": "deny-forbidden-workflows", "match": {"topics": ["workflow.forbidden-*"]}, "decision": "deny",
         "reason": "forbidden workflows never start"}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
    env.update({"CORETEX_REDIS_URL": redis_server.url, "CORETEX_NAMESPACE": "k" + uuid.uuid4().hex[:12]})
    settings = replace(load_settings(env), policies_dir=policies, dev_mode=True)
    server = build_kernel(settings, "127.0.0.1:0").start()
    yield server
    server.stop(grace=0)


@dataclass
class Api:
    client: FlaskClient
    services: Services
    settings: Settings
    keys: dict[str, str]

    def call(self, method: str, path: str, who: str | None = "olga", **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def ok(self, method: str, path: str, who: str = "olga", status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, who, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def save(self, document: dict[str, Any], who: str = "olga") -> dict[str, Any]:
        saved: dict[str, Any] = self.ok("POST", "/api/v1/workflows", who, status=201, json=document)
        return saved

    def start(self, workflow_id: str, who: str = "alice", **body: Any) -> str:
        run_id: str = self.ok("POST", f"/api/v1/workflows/{workflow_id}/runs", who, status=201, json=body)["run_id"]
        return run_id

    def run(self, run_id: str, who: str = "alice") -> dict[str, Any]:
        run: dict[str, Any] = self.ok("GET", f"/api/v1/runs/{run_id}", who)
        return run

    def step(self, run_id: str, step_id: str) -> dict[str, Any]:
        return next(s for s in self.run(run_id)["steps"] if s["id"] == step_id)


@pytest.fixture
def api(settings: Settings, tmp_path: Path, kernel: KernelServer) -> Iterator[Api]:
    keys = {name: new_api_key() for name in PRINCIPALS}
    keys_file = tmp_path / "api-keys.yaml"
    write_key_file(keys_file, [{"name": n, "key": keys[n], "tenant": t, "role": r}
                               for n, (t, r) in PRINCIPALS.items()])
    api_settings = replace(settings, api_keys_file=keys_file, kernel_addr=kernel.address, max_input_bytes=MAX_INPUT)
    services = Services(api_settings)
    try:
        yield Api(create_app(api_settings, services).test_client(), services, api_settings, keys)
    finally:
        if "app" in services.__dict__:
            services.app.close()
        services.close()


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["detail"] and body["title"]
    assert set(body) <= {"type", "title", "status", "detail", "errors"}
    return body


# ---- OpenAPI ----------------------------------------------------------------------------------
def test_the_openapi_document_lists_every_new_path(api: Api) -> None:
    spec = api.client.get("/api/v1/openapi.json").get_json()
    paths = spec["paths"]
    for path in ("/api/v1/workflows", "/api/v1/workflows/{workflow_id}", "/api/v1/workflows/{workflow_id}/versions",
                 "/api/v1/workflows/{workflow_id}/runs", "/api/v1/runs", "/api/v1/runs/{run_id}",
                 "/api/v1/runs/{run_id}/timeline", "/api/v1/runs/{run_id}/cancel", "/api/v1/runs/{run_id}/rerun",
                 "/api/v1/runs/{run_id}/steps/{step_id}/approve", "/api/v1/runs/{run_id}/steps/{step_id}/reject",
                 "/api/v1/schemas", "/api/v1/schemas/{schema_id}", "/api/v1/schemas/{schema_id}/versions"):
        assert path in paths, path
    start = paths["/api/v1/workflows/{workflow_id}/runs"]["post"]["responses"]
    assert {"200", "201", "401", "403", "404", "413", "422", "429", "503"} <= set(start)
    assert PROBLEM in start["422"]["content"] or start["422"].get("$ref")
    assert {"403", "404", "409"} <= set(paths["/api/v1/runs/{run_id}/steps/{step_id}/approve"]["post"]["responses"])


# ---- workflows --------------------------------------------------------------------------------
def test_save_is_versioned_and_an_unchanged_document_is_200(api: Api) -> None:
    first = api.save(GATE)
    assert (first["id"], first["version"], first["tenant"], first["saved_by"], first["created"]) == \
        ("gate", 1, "acme", "olga", True)
    assert first["document"]["steps"] == GATE["steps"]
    again = api.ok("POST", "/api/v1/workflows", json=GATE)
    assert (again["version"], again["created"]) == (1, False)
    second = api.save({**GATE, "name": "Gated notice, v2"})
    assert second["version"] == 2

    listed = api.ok("GET", "/api/v1/workflows", "vera")
    assert [(w["id"], w["version"], w["name"], w["steps"]) for w in listed] == [("gate", 2, "Gated notice, v2", 2)]
    assert api.ok("GET", "/api/v1/workflows/gate", "vera")["version"] == 2
    assert api.ok("GET", "/api/v1/workflows/gate?version=1", "vera")["document"]["name"] == "Gated notice"
    assert api.ok("GET", "/api/v1/workflows/gate/versions", "vera") == {"id": "gate", "versions": [1, 2], "latest": 2}
    assert_problem(api.call("GET", "/api/v1/workflows/gate?version=3", "vera"), 404)
    assert_problem(api.call("GET", "/api/v1/workflows/gate?version=0", "vera"), 422)
    assert_problem(api.call("GET", "/api/v1/workflows/nope", "vera"), 404)


def test_an_invalid_workflow_is_422_naming_every_problem_by_path(api: Api) -> None:
    document = {"id": "broken", "steps": [
        {"id": "build", "type": "worker"},                                   # no topic
        {"id": "ship", "type": "worker", "topic": "job.ship", "depends_on": ["nowhere"]},
        {"id": "check", "type": "condition", "expression": "input.x >"},     # does not compile
    ]}
    problem = assert_problem(api.call("POST", "/api/v1/workflows", json=document), 422)
    assert problem["type"] == "urn:coretex:problem:workflow_invalid"
    errors = problem["errors"]
    assert "/steps/0/topic" in errors and "/steps/1/depends_on" in errors, errors
    assert any(path.startswith("/steps/2") for path in errors), errors
    assert "nowhere" in " ".join(errors["/steps/1/depends_on"])

    shape = assert_problem(api.call("POST", "/api/v1/workflows", json={"id": "x", "steps": [{"id": "a",
                                                                                              "type": "teleport"}]}),
                           422)
    assert any(path.startswith("/steps/0") for path in shape["errors"]), shape
    missing = assert_problem(api.call("POST", "/api/v1/workflows", json={"name": "no id, no steps"}), 422)
    assert missing["errors"]
    assert_problem(api.call("POST", "/api/v1/workflows", json=[1, 2]), 422)
    assert api.ok("GET", "/api/v1/workflows") == []  # nothing was saved


def test_saving_needs_an_author_role_and_a_key(api: Api) -> None:
    assert_problem(api.call("POST", "/api/v1/workflows", None, json=GATE), 401)
    for who in ("alice", "vera", "sec"):
        assert assert_problem(api.call("POST", "/api/v1/workflows", who, json=GATE), 403)["type"] == \
            "urn:coretex:problem:forbidden"
    api.save(GATE, who="root")  # admin, in its own tenant
    assert [w["id"] for w in api.ok("GET", "/api/v1/workflows", "root")] == ["gate"]
    assert api.ok("GET", "/api/v1/workflows", "vera") == []


def test_workflows_and_runs_of_another_tenant_are_404_like_unknown_ones(api: Api) -> None:
    api.save(GATE)
    run_id = api.start("gate")
    assert_problem(api.call("GET", "/api/v1/workflows/gate", "bob"), 404)
    assert_problem(api.call("GET", "/api/v1/workflows/gate/versions", "bob"), 404)
    assert_problem(api.call("POST", "/api/v1/workflows/gate/runs", "bob", json={}), 404)
    for method, path, body in [
        ("GET", f"/api/v1/runs/{run_id}", None), ("GET", f"/api/v1/runs/{run_id}/timeline", None),
        ("POST", f"/api/v1/runs/{run_id}/cancel", {}), ("POST", f"/api/v1/runs/{run_id}/rerun", {}),
        ("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", {}),
    ]:
        foreign = assert_problem(api.call(method, path, "bob", json=body), 404)
        unknown = assert_problem(api.call(method, path.replace(run_id, str(uuid.uuid4())), "bob", json=body), 404)
        assert foreign["type"] == unknown["type"]
    assert api.ok("GET", "/api/v1/runs", "bob")["runs"] == []
    # an admin reads every tenant's runs, but never approves or reruns across tenants
    assert api.run(run_id, who="root")["tenant"] == "acme"
    assert api.ok("GET", f"/api/v1/runs/{run_id}/timeline", "root")["entries"]
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "root", json={}), 404)
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/rerun", "root", json={}), 404)
    assert api.run(run_id)["status"] == "waiting"


# ---- runs -------------------------------------------------------------------------------------
def test_start_get_and_the_timeline_a_page_at_a_time(api: Api) -> None:
    api.save(GATE)
    run_id = api.start("gate", input={"ticket": 7})
    run = api.run(run_id, who="vera")
    assert (run["status"], run["workflow_id"], run["workflow_version"], run["started_by"]) == \
        ("waiting", "gate", 1, "alice")
    assert run["input"] == {"ticket": 7} and run["dry_run"] is False and run["error"] is None
    assert run["rerun_of"] is None and run["output"] is None and isinstance(run["timers"], list)
    steps = {s["id"]: s for s in run["steps"]}
    assert [s["id"] for s in run["steps"]] == ["ok", "tell"]
    assert (steps["ok"]["type"], steps["ok"]["status"], steps["ok"]["approvals"]) == ("approval", "waiting", [])
    assert steps["tell"]["status"] == "pending" and steps["tell"]["job_id"] is None

    api.ok("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "otto", json={"reason": "fine"})
    everything = api.ok("GET", f"/api/v1/runs/{run_id}/timeline?limit=1000", "vera")
    assert everything["next_cursor"] is None and len(everything["entries"]) >= 3
    paged: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = api.ok("GET", f"/api/v1/runs/{run_id}/timeline?limit=2" + (f"&after={cursor}" if cursor else ""),
                      "vera")
        assert len(page["entries"]) <= 2
        paged += page["entries"]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert paged == everything["entries"]
    assert all({"id", "type"} <= set(e) for e in paged)
    approval = next(e for e in paged if e["type"] == "approval")
    assert (approval["by"], approval["reason"]) == ("otto", "fine")
    assert_problem(api.call("GET", f"/api/v1/runs/{run_id}/timeline?after=not-a-cursor", "vera"), 422)
    assert_problem(api.call("GET", f"/api/v1/runs/{run_id}/timeline?limit=0", "vera"), 422)


def test_a_worker_step_run_stays_running_with_its_job_created(api: Api) -> None:
    api.save({"id": "work", "steps": [{"id": "echo", "type": "worker", "topic": "job.echo",
                                       "input": {"n": "${input.n}"}}]})
    run_id = api.start("work", input={"n": 3})
    run = api.run(run_id)
    assert run["status"] == "running"
    step = run["steps"][0]
    assert step["status"] == "running" and step["attempt"] == 1 and step["job_id"]
    job = api.ok("GET", f"/api/v1/jobs/{step['job_id']}", "alice")
    assert job["topic"] == "job.echo"
    cancelled = api.ok("POST", f"/api/v1/runs/{run_id}/cancel", "alice", json={"reason": "enough"})
    assert cancelled["status"] == "cancelled"
    assert cancelled["steps"][0]["status"] == "cancelled"


def test_input_schema_violations_are_422_naming_each_pointer(api: Api) -> None:
    api.save({**INSTANT, "input_schema": {
        "type": "object", "required": ["who"],
        "properties": {"who": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}})
    problem = assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice",
                                      json={"input": {"who": 5, "count": 0}}), 422)
    assert problem["type"] == "urn:coretex:problem:schema_violation"
    assert set(problem["errors"]) == {"/input/who", "/input/count"}
    assert "/who" in problem["detail"]
    missing = assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice", json={"input": {}}), 422)
    assert "/input" in missing["errors"] and "who" in missing["errors"]["/input"][0]
    assert api.ok("GET", "/api/v1/runs", "alice")["runs"] == []
    assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice", json={"dry_run": "perhaps"}), 422)


def test_an_oversized_input_is_413_and_starts_nothing(api: Api) -> None:
    api.save(INSTANT)
    problem = assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice",
                                      json={"input": {"who": "x" * (MAX_INPUT + 1)}}), 413)
    assert problem["errors"] == {"input": [f"larger than {MAX_INPUT} bytes"]}
    limit = MAX_INPUT + 64 * 1024
    too_big = json.dumps({"input": {"who": "y" * (limit + 10)}})
    assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice", data=too_big,
                            content_type="application/json"), 413)
    assert api.ok("GET", "/api/v1/runs", "alice")["runs"] == []


def test_a_run_runs_to_its_end_inside_the_engine(api: Api) -> None:
    api.save(INSTANT)
    run = api.run(api.start("instant", input={"who": "you"}))
    assert run["status"] == "succeeded" and run["finished_at"]
    assert run["steps"][0]["status"] == "succeeded"


def test_the_same_idempotency_key_returns_the_first_run(api: Api) -> None:
    api.save(GATE)
    body = {"input": {}, "idempotency_key": "deploy-42"}
    first = api.ok("POST", "/api/v1/workflows/gate/runs", "alice", status=201, json=body)
    again = api.ok("POST", "/api/v1/workflows/gate/runs", "alice", status=200, json=body)
    assert (again["run_id"], again["duplicate"], first["duplicate"]) == (first["run_id"], True, False)
    other = api.ok("POST", "/api/v1/workflows/gate/runs", "alice", status=201, json={**body, "idempotency_key": "x"})
    assert other["run_id"] != first["run_id"]
    assert api.run(first["run_id"])["idempotency_key"] == "deploy-42"


def test_start_roles_versions_dry_run_and_unknown_workflows(api: Api) -> None:
    api.save(GATE)
    api.save({**GATE, "name": "v2"})
    assert_problem(api.call("POST", "/api/v1/workflows/gate/runs", "vera", json={}), 403)
    assert_problem(api.call("POST", "/api/v1/workflows/gate/runs", None, json={}), 401)
    assert_problem(api.call("POST", "/api/v1/workflows/nope/runs", "alice", json={}), 404)
    assert_problem(api.call("POST", "/api/v1/workflows/gate/runs", "alice", json={"version": 9}), 404)
    run = api.run(api.start("gate", version=1, dry_run=True))
    assert (run["workflow_version"], run["dry_run"]) == (1, True)


def test_a_run_the_kernel_denies_is_403_with_its_reason(api: Api) -> None:
    api.save({**INSTANT, "id": "forbidden-thing"})
    problem = assert_problem(api.call("POST", "/api/v1/workflows/forbidden-thing/runs", "alice", json={}), 403)
    assert problem["type"] == "urn:coretex:problem:run_denied"
    assert "deny-forbidden-workflows" in problem["detail"]


def test_the_tenants_run_limit_is_429(api: Api) -> None:
    api.services.config.set("tenant", "acme", {"limits": {"max_concurrent_runs": 1}}, author="t", message="m")
    api.save(GATE)
    api.start("gate")
    problem = assert_problem(api.call("POST", "/api/v1/workflows/gate/runs", "alice", json={}), 429)
    assert problem["type"] == "urn:coretex:problem:run_limit"


def test_runs_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    api.save(INSTANT)
    started = [api.start("instant", input={"who": str(i)}) for i in range(3)]
    first = api.ok("GET", "/api/v1/runs?limit=2", "vera")
    assert [r["run_id"] for r in first["runs"]] == started[:0:-1]
    assert first["runs"][0]["status"] == "succeeded" and first["next_before"] is not None
    rest = api.ok("GET", f"/api/v1/runs?limit=2&before={first['next_before']!r}", "vera")
    assert [r["run_id"] for r in rest["runs"]] == started[:1] and rest["next_before"] is None


# ---- approvals, cancel, rerun -----------------------------------------------------------------
def test_approval_through_http_with_separation_of_duties(api: Api) -> None:
    api.save(GATE)
    run_id = api.start("gate", who="olga")  # an operator starts it: only someone else may approve
    own = assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "olga", json={}), 403)
    assert own["type"] == "urn:coretex:problem:approval_refused" and "separation of duties" in own["detail"]
    role = assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "vera", json={}), 403)
    assert "operator" in role["detail"]
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", None, json={}), 401)
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/tell/approve", "otto", json={}), 404)
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/nope/approve", "otto", json={}), 404)

    run = api.ok("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "otto", json={"reason": "looks right"})
    assert run["status"] == "succeeded" and run["output"] == {"approved_by": ["otto"]}
    ok = next(s for s in run["steps"] if s["id"] == "ok")
    assert ok["status"] == "succeeded" and [a["by"] for a in ok["approvals"]] == ["otto"]
    late = assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/reject", "otto", json={}), 409)
    assert late["type"] == "urn:coretex:problem:not_waiting"


def test_reject_through_http_fails_the_run(api: Api) -> None:
    api.save(GATE)
    run_id = api.start("gate")
    run = api.ok("POST", f"/api/v1/runs/{run_id}/steps/ok/reject", "olga", json={"reason": "not today"})
    steps = {s["id"]: s for s in run["steps"]}
    assert run["status"] == "failed"
    assert steps["ok"]["status"] == "failed" and steps["tell"]["status"] == "blocked"
    assert [(a["by"], a["reason"]) for a in steps["ok"]["approvals"]] == [("olga", "not today")]


def test_cancel_a_waiting_run(api: Api) -> None:
    api.save(GATE)
    run_id = api.start("gate")
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/cancel", "vera", json={}), 403)
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/cancel", "alice"), 415)  # no JSON body
    run = api.ok("POST", f"/api/v1/runs/{run_id}/cancel", "alice", json={"reason": "changed my mind"})
    assert run["status"] == "cancelled" and run["finished_at"]
    again = api.ok("POST", f"/api/v1/runs/{run_id}/cancel", "alice", json={})
    assert again["status"] == "cancelled"
    kinds = [e["type"] for e in api.ok("GET", f"/api/v1/runs/{run_id}/timeline", "alice")["entries"]]
    assert kinds  # the cancel is recorded
    assert_problem(api.call("POST", f"/api/v1/runs/{run_id}/steps/ok/approve", "olga", json={}), 409)


def test_rerun_from_a_step_reuses_upstream_outputs(api: Api) -> None:
    api.save(GATE)
    first = api.start("gate")
    api.ok("POST", f"/api/v1/runs/{first}/steps/ok/approve", "olga", json={})
    assert_problem(api.call("POST", f"/api/v1/runs/{first}/rerun", "alice", json={"from_step": "nope"}), 422)
    assert_problem(api.call("POST", f"/api/v1/runs/{first}/rerun", "vera", json={}), 403)

    receipt = api.ok("POST", f"/api/v1/runs/{first}/rerun", "alice", status=201, json={"from_step": "tell"})
    assert receipt["rerun_of"] == first and receipt["run_id"] != first
    rerun = api.run(receipt["run_id"])
    assert (rerun["rerun_of"], rerun["rerun_from"], rerun["status"]) == (first, "tell", "succeeded")
    ok = next(s for s in rerun["steps"] if s["id"] == "ok")
    assert ok["reused_from"] == first and ok["status"] == "succeeded"

    whole = api.run(api.ok("POST", f"/api/v1/runs/{first}/rerun", "alice", status=201,
                           json={"dry_run": True})["run_id"])
    assert (whole["rerun_from"], whole["dry_run"], whole["status"]) == (None, True, "waiting")


# ---- schemas ----------------------------------------------------------------------------------
PERSON = {"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}}


def test_schemas_register_and_read(api: Api) -> None:
    first = api.ok("POST", "/api/v1/schemas/acme.person", status=201, json=PERSON)
    assert (first["id"], first["version"], first["created"], first["uri"]) == \
        ("acme.person", 1, True, "coretex:schema:acme.person@1")
    same = api.ok("POST", "/api/v1/schemas/acme.person", json=PERSON)
    assert (same["version"], same["created"]) == (1, False)
    second = api.ok("POST", "/api/v1/schemas/acme.person", status=201, json={**PERSON, "title": "person"})
    assert second["version"] == 2

    assert api.ok("GET", "/api/v1/schemas", "bob") == [{"id": "acme.person", "latest_version": 2}]
    latest = api.ok("GET", "/api/v1/schemas/acme.person", "vera")
    assert (latest["version"], latest["schema"]["title"], latest["refs"]) == (2, "person", [])
    assert api.ok("GET", "/api/v1/schemas/acme.person?version=1", "vera")["schema"] == PERSON
    assert api.ok("GET", "/api/v1/schemas/acme.person/versions", "vera")["versions"] == [1, 2]
    assert_problem(api.call("GET", "/api/v1/schemas/acme.person?version=3", "vera"), 404)
    assert_problem(api.call("GET", "/api/v1/schemas/acme.nobody", "vera"), 404)
    assert_problem(api.call("GET", "/api/v1/schemas/Not%20An%20Id", "vera"), 404)


def test_schema_registration_is_refused_with_the_reason(api: Api) -> None:
    assert_problem(api.call("POST", "/api/v1/schemas/acme.person", "alice", json=PERSON), 403)
    assert_problem(api.call("POST", "/api/v1/schemas/acme.person", None, json=PERSON), 401)
    bad_id = assert_problem(api.call("POST", "/api/v1/schemas/Acme!", json=PERSON), 422)
    assert "schema_id" in bad_id["errors"]
    invalid = assert_problem(api.call("POST", "/api/v1/schemas/acme.bad", json={"type": "thing"}), 422)
    assert invalid["type"] == "urn:coretex:problem:schema_invalid" and invalid["errors"]
    dangling = assert_problem(api.call("POST", "/api/v1/schemas/acme.bad",
                                       json={"$ref": "coretex:schema:acme.missing"}), 422)
    assert "acme.missing" in dangling["detail"]
    assert api.ok("GET", "/api/v1/schemas", "vera") == []


def test_a_workflow_naming_a_registered_schema_checks_its_input(api: Api) -> None:
    unknown = assert_problem(api.call("POST", "/api/v1/workflows", json={**INSTANT, "input_schema": "acme.person"}),
                             422)
    assert "/input_schema" in unknown["errors"]
    api.ok("POST", "/api/v1/schemas/acme.person", status=201, json=PERSON)
    api.save({**INSTANT, "input_schema": "acme.person@1"})
    problem = assert_problem(api.call("POST", "/api/v1/workflows/instant/runs", "alice", json={"input": {"who": 1}}),
                             422)
    assert list(problem["errors"]) == ["/input/who"]
    assert api.run(api.start("instant", input={"who": "me"}))["status"] == "succeeded"


# ---- coretexctl against a live gateway ----------------------------------------------------------
@pytest.fixture
def live_gateway(api: Api) -> Iterator[str]:
    """The same app served over real HTTP on a free port (a thread of this process)."""
    app = api.client.application
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _ctl(base: str, key: str, *args: str) -> Any:
    return CliRunner().invoke(coretexctl, ["--gateway", base, "--api-key", key, *args], catch_exceptions=False)


def test_coretexctl_workflows_and_runs(api: Api, live_gateway: str, tmp_path: Path) -> None:
    olga, alice = api.keys["olga"], api.keys["alice"]
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(yaml.safe_dump(GATE))
    applied = _ctl(live_gateway, olga, "workflows", "apply", str(gate_file), "-o", "json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.output)["version"] == 1
    instant_file = tmp_path / "instant.json"
    instant_file.write_text(json.dumps(INSTANT))
    assert _ctl(live_gateway, olga, "workflows", "apply", str(instant_file)).exit_code == 0
    listed = _ctl(live_gateway, alice, "workflows", "list", "-o", "json")
    assert sorted(w["id"] for w in json.loads(listed.output)) == ["gate", "instant"]
    assert json.loads(_ctl(live_gateway, alice, "workflows", "get", "gate", "-o", "json").output)["id"] == "gate"

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"id": "broken", "steps": [{"id": "a", "type": "worker"}]}))
    refused = _ctl(live_gateway, olga, "workflows", "apply", str(broken))
    assert refused.exit_code == 1 and "/steps/0/topic" in refused.output

    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps({"who": "ctl"}))
    done = _ctl(live_gateway, alice, "runs", "start", "instant", "--input", f"@{input_file}", "--wait", "-o", "json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["status"] == "succeeded"

    started = _ctl(live_gateway, alice, "runs", "start", "gate", "--idempotency-key", "k1", "-o", "json")
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.output)["run_id"]
    waiting = _ctl(live_gateway, alice, "runs", "start", "gate", "--wait", "--timeout", "1", "-o", "json")
    assert waiting.exit_code == 1  # still waiting for approval when the wait ended
    own = _ctl(live_gateway, alice, "runs", "approve", run_id, "ok")
    assert own.exit_code == 1 and "403" in own.output
    approved = _ctl(live_gateway, olga, "runs", "approve", run_id, "ok", "--reason", "fine", "-o", "json")
    assert approved.exit_code == 0 and json.loads(approved.output)["status"] == "succeeded"
    got = _ctl(live_gateway, alice, "runs", "get", run_id)
    assert got.exit_code == 0 and "succeeded" in got.output
    timeline = _ctl(live_gateway, alice, "runs", "timeline", run_id, "--page-size", "1", "-o", "json")
    entries = json.loads(timeline.output)
    assert timeline.exit_code == 0 and len(entries) >= 3 and len({e["id"] for e in entries}) == len(entries)
    runs = json.loads(_ctl(live_gateway, alice, "runs", "list", "-o", "json").output)
    assert run_id in [r["run_id"] for r in runs]
    rerun = _ctl(live_gateway, alice, "runs", "rerun", run_id, "--from-step", "tell", "-o", "json")
    assert rerun.exit_code == 0 and json.loads(rerun.output)["rerun_of"] == run_id
    second = json.loads(_ctl(live_gateway, alice, "runs", "start", "gate", "-o", "json").output)["run_id"]
    rejected = _ctl(live_gateway, olga, "runs", "reject", second, "ok", "-o", "json")
    assert json.loads(rejected.output)["status"] == "failed"
    third = json.loads(_ctl(live_gateway, alice, "runs", "start", "gate", "-o", "json").output)["run_id"]
    cancelled = _ctl(live_gateway, alice, "runs", "cancel", third, "--reason", "stop", "-o", "json")
    assert json.loads(cancelled.output)["status"] == "cancelled"

    assert _ctl(live_gateway, alice, "runs", "start", "gate", "--input", "{not json").exit_code == 2
    assert _ctl(live_gateway, alice, "runs", "get", "no-such-run").exit_code == 1
    assert _ctl(f"http://127.0.0.1:{free_port()}", alice, "runs", "list").exit_code == 3


def test_cancelling_a_steps_job_through_the_jobs_api_reaches_its_run_at_once(api: Api) -> None:
    workflow = api.save({"id": "one-job", "steps": [
        {"id": "work", "type": "worker", "topic": "job.echo", "input": {"x": 1}},
        {"id": "after", "type": "notify", "depends_on": ["work"], "message": "done"}]})
    run_id = api.start(workflow["id"])
    job_id = api.step(run_id, "work")["job_id"]
    assert job_id  # created, waiting for a control worker (none runs here)

    api.ok("POST", f"/api/v1/jobs/{job_id}/cancel", "alice", json={"reason": "not now"})

    run = api.run(run_id)  # no tick, no control worker: the cancel route told the run itself
    assert run["status"] == "failed"
    work = next(s for s in run["steps"] if s["id"] == "work")
    assert (work["status"], work["error"]["code"]) == ("cancelled", "job_cancelled")
    assert next(s for s in run["steps"] if s["id"] == "after")["status"] == "blocked"

"""The REST gateway on a real redis-server, through Flask's test client (no worker runs here:
submitted jobs stay PENDING with their message on the control queue)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from coretex.errors import ConfigError
from coretex.gateway import create_app
from coretex.gateway.auth import new_api_key, write_key_file
from coretex.model.dlq import DLQEntry
from coretex.model.job import JobState
from coretex.sdk import Worker
from coretex.sdk._heartbeats import HeartbeatSender
from coretex.services import Services
from coretex.settings import Settings
from coretex.store.timers import RETRY
from coretex.testing import eventually, free_port

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
# name -> (tenant, role)
PRINCIPALS = {
    "alice": ("acme", "submitter"),
    "vera": ("acme", "viewer"),
    "bob": ("globex", "operator"),
    "root": ("ops", "admin"),
}


@dataclass
class Gateway:
    app: Flask
    client: FlaskClient
    services: Services
    settings: Settings
    keys: dict[str, str]

    def call(self, method: str, path: str, who: str | None = "alice", **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def submit(self, body: dict[str, Any], who: str = "alice") -> TestResponse:
        return self.call("POST", "/api/v1/jobs", who, json=body)

    def queued(self) -> int:
        """Messages waiting on the control queue (kombu's Redis list, under our key prefix)."""
        return int(self.services.redis.llen(f"{self.settings.namespace}:celery:{self.settings.control_queue}"))

    def namespace_keys(self) -> set[str]:
        return set(self.services.redis.scan_iter(f"{self.settings.namespace}:*"))


def _close(services: Services) -> None:
    if "app" in services.__dict__:
        services.app.close()
    services.close()


@pytest.fixture
def gateway_settings(settings: Settings, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    keys = {name: new_api_key() for name in PRINCIPALS}
    keys_file = tmp_path / "api-keys.yaml"
    write_key_file(keys_file, [
        {"name": name, "key": keys[name], "tenant": tenant, "role": role}
        for name, (tenant, role) in PRINCIPALS.items()
    ])
    # A kernel address nobody listens on: status must report it down, quickly. No scheduler runs
    # here either: submits go to the control queue, where the tests play the scheduler by hand.
    gw_settings = replace(settings, api_keys_file=keys_file, max_input_bytes=4096,
                          kernel_addr=f"127.0.0.1:{free_port()}", kernel_timeout_s=0.5, queue_submits=True)
    return gw_settings, keys


@pytest.fixture
def gw(gateway_settings: tuple[Settings, dict[str, str]]) -> Iterator[Gateway]:
    gw_settings, keys = gateway_settings
    services = Services(gw_settings)
    app = create_app(gw_settings, services)
    try:
        yield Gateway(app, app.test_client(), services, gw_settings, keys)
    finally:
        _close(services)


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert body["status"] == status
    assert body["type"] == "about:blank" or body["type"].startswith("urn:coretex:problem:")
    assert body["title"] and body["detail"]
    assert set(body) <= {"type", "title", "status", "detail", "errors"}
    return body


def _job(gw: Gateway, job_id: str, who: str = "alice") -> dict[str, Any]:
    response = gw.call("GET", f"/api/v1/jobs/{job_id}", who)
    assert response.status_code == 200, response.get_data(as_text=True)
    job: dict[str, Any] = response.get_json()
    return job


# ---- authentication -------------------------------------------------------------------------
def test_no_key_is_401_with_a_challenge(gw: Gateway) -> None:
    response = gw.call("GET", "/api/v1/status", who=None)
    body = assert_problem(response, 401)
    assert body["type"] == "urn:coretex:problem:unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer not-a-key"},
    {"X-API-Key": "not-a-key"},
    {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    {"Authorization": "Bearer "},
])
def test_bad_credentials_are_401(gw: Gateway, headers: dict[str, str]) -> None:
    assert_problem(gw.call("GET", "/api/v1/status", who=None, headers=headers), 401)


def test_forged_identity_headers_are_never_trusted(gw: Gateway) -> None:
    forged = {"X-Principal-Role": "admin", "X-Tenant": "acme", "X-Principal-Name": "root"}
    assert_problem(gw.call("GET", "/api/v1/status", who=None, headers=forged), 401)
    # A viewer claiming to be an admin is still a viewer, of its own tenant.
    response = gw.call("POST", "/api/v1/jobs", "vera", headers=forged, json={"topic": "job.echo"})
    assert_problem(response, 403)
    job_id = gw.submit({"topic": "job.echo"}, who="bob").get_json()["job_id"]
    assert_problem(gw.call("GET", f"/api/v1/jobs/{job_id}", "vera", headers=forged), 404)


def test_x_api_key_header_authenticates(gw: Gateway) -> None:
    response = gw.call("GET", "/api/v1/status", who=None, headers={"X-API-Key": gw.keys["vera"]})
    assert response.status_code == 200


def test_no_key_file_refuses_every_api_request(settings: Settings, tmp_path: Path) -> None:
    bare = replace(settings, api_keys_file=tmp_path / "missing.yaml")
    services = Services(bare)
    try:
        client = create_app(bare, services).test_client()
        assert_problem(client.get("/api/v1/status", headers={"Authorization": "Bearer anything"}), 401)
        assert_problem(client.post("/api/v1/jobs", json={"topic": "job.echo"}), 401)
        assert_problem(client.get("/api/v1/nowhere"), 401)
        assert client.get("/health").status_code == 200
    finally:
        _close(services)


def test_a_malformed_key_file_fails_at_startup(settings: Settings, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text("keys:\n  - {name: x, sha256: nothex, tenant: t, role: admin}\n")
    with pytest.raises(ConfigError, match="sha256"):
        create_app(replace(settings, api_keys_file=keys_file), Services(settings))


# ---- submit and read ------------------------------------------------------------------------
def test_submit_creates_a_pending_job_with_its_input_behind_a_pointer(gw: Gateway) -> None:
    payload = {"message": "héllo", "n": [1, 2.5, None], "nested": {"ok": True}}
    response = gw.submit({"topic": "job.echo", "input": payload, "meta": {"labels": {"team": "a"},
                                                                          "risk_tags": ["read"]}})

    assert response.status_code == 202, response.get_data(as_text=True)
    receipt = response.get_json()
    assert set(receipt) == {"job_id", "trace_id", "duplicate", "state"} and receipt["duplicate"] is False
    assert receipt["state"] == "PENDING"
    job = _job(gw, receipt["job_id"])
    assert job["state"] == "PENDING"
    assert (job["topic"], job["tenant_id"], job["trace_id"]) == ("job.echo", "acme", receipt["trace_id"])
    assert job["result"] is None and job["decision"] is None and job["attempts"] == 0
    assert set(job) == {"job_id", "tenant_id", "topic", "state", "decision", "rule_id", "reason", "result_ptr",
                        "result", "error_code", "error_message", "attempts", "trace_id", "created_at",
                        "updated_at", "pool", "pending_reason", "progress"}
    record = gw.services.jobs.get(receipt["job_id"])
    assert gw.services.pointers.get_json(record.context_ptr, "acme") == payload
    assert record.meta.actor_id == "alice" and record.meta.labels == {"team": "a"}
    assert record.meta.risk_tags == ("read",)
    assert gw.queued() == 1  # handed to the scheduler


def test_a_gateway_dispatching_inline_runs_the_pipeline_before_answering(
    gateway_settings: tuple[Settings, dict[str, str]],
) -> None:
    gw_settings, keys = gateway_settings
    services = Services(replace(gw_settings, queue_submits=False))
    app = create_app(services.settings, services)
    try:
        gw = Gateway(app, app.test_client(), services, services.settings, keys)
        response = gw.submit({"topic": "job.echo", "input": {"n": 1}})

        assert response.status_code == 202, response.get_data(as_text=True)
        receipt = response.get_json()
        # Its kernel is down: the pipeline failed closed and holds the job, re-checking shortly.
        assert receipt["state"] == "SCHEDULED"
        job = _job(gw, receipt["job_id"])
        assert job["state"] == "SCHEDULED" and job["pending_reason"].startswith("kernel_unavailable")
        assert services.timers.due(RETRY, receipt["job_id"], 0) is not None
        assert gw.queued() == 0  # nothing was handed to a control worker
    finally:
        _close(services)


def test_input_defaults_to_an_empty_object(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]
    record = gw.services.jobs.get(job_id)
    assert gw.services.pointers.get_json(record.context_ptr, "acme") == {}


def test_history_lists_transitions(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]
    gw.services.jobs.transition(job_id, JobState.SCHEDULED, note="routed", pool="echo")

    response = gw.call("GET", f"/api/v1/jobs/{job_id}/history", "vera")

    assert response.status_code == 200
    history = response.get_json()
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [
        (None, "PENDING", "submitted"), ("PENDING", "SCHEDULED", "routed")]
    assert all(h["at"].startswith(time.strftime("%Y-", time.gmtime())) for h in history)


def test_a_succeeded_job_shows_its_result(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo", "input": {"x": 1}}).get_json()["job_id"]
    jobs, pointers = gw.services.jobs, gw.services.pointers
    jobs.transition(job_id, JobState.SCHEDULED, decision="ALLOW", rule_id="allow-all", pool="echo")
    jobs.transition(job_id, JobState.DISPATCHED)
    jobs.transition(job_id, JobState.RUNNING)
    pointer = pointers.put_result(job_id, "acme", {"echo": {"x": 1}})
    jobs.transition(job_id, JobState.SUCCEEDED, result_ptr=pointer.uri)

    job = _job(gw, job_id)

    assert job["state"] == "SUCCEEDED"
    assert job["result"] == {"echo": {"x": 1}}
    assert job["result_ptr"] == pointer.uri
    assert (job["decision"], job["rule_id"], job["pool"]) == ("ALLOW", "allow-all", "echo")
    assert job["updated_at"] >= job["created_at"]


def test_a_viewer_reads_but_may_not_submit(gw: Gateway) -> None:
    body = assert_problem(gw.submit({"topic": "job.echo"}, who="vera"), 403)
    assert body["type"] == "urn:coretex:problem:forbidden"
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]
    assert _job(gw, job_id, "vera")["job_id"] == job_id


# ---- tenancy --------------------------------------------------------------------------------
def test_a_foreign_tenant_in_meta_is_403(gw: Gateway) -> None:
    before = gw.namespace_keys()
    body = assert_problem(gw.submit({"topic": "job.echo", "meta": {"tenant_id": "globex"}}), 403)
    assert "globex" in body["detail"]
    assert gw.namespace_keys() == before
    assert gw.submit({"topic": "job.echo", "meta": {"tenant_id": "acme"}}).status_code == 202


def test_another_tenants_job_is_404_like_an_unknown_one(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]

    foreign = assert_problem(gw.call("GET", f"/api/v1/jobs/{job_id}", "bob"), 404)
    unknown = assert_problem(gw.call("GET", "/api/v1/jobs/no-such-job", "bob"), 404)

    assert foreign["type"] == unknown["type"] == "urn:coretex:problem:not_found"
    assert foreign["detail"].replace(job_id, "ID") == unknown["detail"].replace("no-such-job", "ID")
    assert_problem(gw.call("GET", f"/api/v1/jobs/{job_id}/history", "bob"), 404)
    assert_problem(gw.call("GET", "/api/v1/jobs/no-such-job/history"), 404)


def test_an_admin_reads_every_tenant(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]
    assert _job(gw, job_id, "root")["tenant_id"] == "acme"
    assert gw.call("GET", f"/api/v1/jobs/{job_id}/history", "root").status_code == 200


# ---- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field"), [
    ({}, "topic"),
    ({"input": {}}, "topic"),
    ({"topic": "Job Echo!"}, "topic"),
    ({"topic": ".echo"}, "topic"),
    ({"topic": "x" * 201}, "topic"),
    ({"topic": 7}, "topic"),
    ({"topic": "job.echo", "bogus": 1}, "bogus"),
    ({"topic": "job.echo", "input": None}, "input"),
    ({"topic": "job.echo", "meta": "acme"}, "meta"),
    ({"topic": "job.echo", "meta": {"tenant_id": 5}}, "meta.tenant_id"),
    ({"topic": "job.echo", "meta": {"risk_tags": "write"}}, "meta.risk_tags"),
    ({"topic": "job.echo", "meta": {"risk_tags": ["ok", 3]}}, "meta.risk_tags.1"),
    ({"topic": "job.echo", "meta": {"labels": {"a": 1}}}, "meta.labels.a.value"),
    ({"topic": "job.echo", "meta": {"labels": ["a"]}}, "meta.labels"),
    ({"topic": "job.echo", "meta": {"labels": {str(i): "v" for i in range(65)}}}, "meta.labels"),
    ({"topic": "job.echo", "meta": {"requires": ["gpu"] * 65}}, "meta.requires"),
    ({"topic": "job.echo", "meta": {"pack_id": "p" * 257}}, "meta.pack_id"),
    ({"topic": "job.echo", "meta": {"actor_type": "robot"}}, "meta.actor_type"),
    ({"topic": "job.echo", "meta": {"bogus": "x"}}, "meta.bogus"),
    ({"topic": "job.echo", "idempotency_key": "a", "meta": {"idempotency_key": "b"}}, "idempotency_key"),
])
def test_invalid_bodies_are_422_naming_the_field(gw: Gateway, body: dict[str, Any], field: str) -> None:
    before = gw.namespace_keys()
    problem = assert_problem(gw.submit(body), 422)
    assert problem["type"] == "urn:coretex:problem:validation_error"
    assert field in problem["errors"], problem
    assert all(isinstance(m, str) for messages in problem["errors"].values() for m in messages)
    assert gw.namespace_keys() == before


def test_missing_topic_message(gw: Gateway) -> None:
    problem = assert_problem(gw.submit({}), 422)
    assert problem["errors"] == {"topic": ["Missing data for required field."]}


def test_a_non_object_body_is_422(gw: Gateway) -> None:
    problem = assert_problem(gw.call("POST", "/api/v1/jobs", json=["job.echo"]), 422)
    assert "_schema" in problem["errors"]


@pytest.mark.parametrize(("raw", "field"), [
    ('{"topic": "job.echo", "input": {"x": NaN}}', "input"),
    ('{"topic": "job.echo", "input": {"x": -Infinity}}', "input"),
    ('{"topic": "job.echo", "input": "\\ud800"}', "input"),
    ('{"topic": "job.echo", "meta": {"actor_id": "\\udfff"}}', "meta.actor_id"),
    ('{"topic": "job.echo", "meta": {"labels": {"\\ud800": "x"}}}', "meta.labels.\ud800.key"),
])
def test_what_python_parses_but_json_storage_cannot_hold_is_422(gw: Gateway, raw: str, field: str) -> None:
    response = gw.call("POST", "/api/v1/jobs", data=raw, content_type="application/json")
    assert field in assert_problem(response, 422)["errors"]


def test_malformed_json_is_400(gw: Gateway) -> None:
    response = gw.call("POST", "/api/v1/jobs", data='{"topic": ', content_type="application/json")
    problem = assert_problem(response, 400)
    assert "JSON" in problem["detail"] and "errors" not in problem


def test_a_non_json_body_is_415(gw: Gateway) -> None:
    response = gw.call("POST", "/api/v1/jobs", data="topic=job.echo", content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415)


# ---- size limits ----------------------------------------------------------------------------
def test_an_oversized_input_is_413_and_changes_nothing(gw: Gateway) -> None:
    gw.submit({"topic": "job.echo"})
    before = gw.namespace_keys()
    queued = gw.queued()

    problem = assert_problem(gw.submit({"topic": "job.echo", "input": {"blob": "x" * 5000}}), 413)

    assert "input" in problem["detail"] and "4096" in problem["detail"]
    assert problem["errors"] == {"input": ["larger than 4096 bytes"]}
    assert gw.namespace_keys() == before
    assert gw.queued() == queued


def test_a_body_over_the_request_limit_is_413(gw: Gateway) -> None:
    before = gw.namespace_keys()
    limit = gw.app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"topic": "job.echo", "input": {"blob": "x" * limit}})

    problem = assert_problem(gw.call("POST", "/api/v1/jobs", data=body, content_type="application/json"), 413)

    assert str(limit) in problem["detail"]
    assert gw.namespace_keys() == before


def test_the_size_limit_counts_canonical_json(gw: Gateway) -> None:
    # Whitespace in the request does not count; the stored canonical form does.
    blob = "x" * (4096 - len('{"b":""}'))
    assert gw.submit({"topic": "job.echo", "input": {"b": blob}}).status_code == 202
    assert_problem(gw.submit({"topic": "job.echo", "input": {"b": blob + "x"}}), 413)


# ---- idempotency ----------------------------------------------------------------------------
def test_the_same_idempotency_key_returns_the_first_job(gw: Gateway) -> None:
    first = gw.submit({"topic": "job.echo", "idempotency_key": "order-1"})
    again = gw.submit({"topic": "job.echo", "input": {"other": True}, "idempotency_key": "order-1"})
    via_meta = gw.submit({"topic": "job.echo", "meta": {"idempotency_key": "order-1"}})

    assert first.status_code == 202 and first.get_json()["duplicate"] is False
    assert again.status_code == 200 and again.get_json() == {**first.get_json(), "duplicate": True}
    assert via_meta.status_code == 200 and via_meta.get_json()["job_id"] == first.get_json()["job_id"]
    assert gw.queued() == 1


def test_idempotency_keys_are_per_tenant(gw: Gateway) -> None:
    acme = gw.submit({"topic": "job.echo", "idempotency_key": "k"}, who="alice")
    globex = gw.submit({"topic": "job.echo", "idempotency_key": "k"}, who="bob")

    assert acme.status_code == globex.status_code == 202
    assert acme.get_json()["job_id"] != globex.get_json()["job_id"]
    assert _job(gw, globex.get_json()["job_id"], "bob")["tenant_id"] == "globex"


# ---- health and status ----------------------------------------------------------------------
def test_health_is_open_and_ok(gw: Gateway) -> None:
    response = gw.client.get("/health")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def _unreachable_redis(settings: Settings) -> Settings:
    url = f"redis://127.0.0.1:{free_port()}/0"
    return replace(settings, redis_url=url, broker_url=url)


def test_health_is_503_when_redis_is_down(gateway_settings: tuple[Settings, dict[str, str]]) -> None:
    down, keys = _unreachable_redis(gateway_settings[0]), gateway_settings[1]
    services = Services(down)
    try:
        client = create_app(down, services).test_client()
        problem = assert_problem(client.get("/health"), 503)
        assert "127.0.0.1" not in problem["detail"]  # no internals
        status = client.get("/api/v1/status", headers={"Authorization": f"Bearer {keys['vera']}"})
        assert status.status_code == 200
        assert status.get_json()["components"]["redis"]["ok"] is False
        assert_problem(client.get("/api/v1/jobs/x", headers={"Authorization": f"Bearer {keys['vera']}"}), 503)
    finally:
        _close(services)


def test_status_reports_components_and_pools(gw: Gateway) -> None:
    status = gw.call("GET", "/api/v1/status", "vera").get_json()

    assert status["namespace"] == gw.settings.namespace
    assert isinstance(status["version"], str) and status["version"]
    assert set(status["components"]) == {"redis", "kernel", "beat"}
    assert status["components"]["redis"] == {"ok": True, "detail": "PONG"}
    assert status["components"]["kernel"] == {"ok": False, "addr": gw.settings.kernel_addr, "instances": []}
    assert status["components"]["beat"] == {"ok": False, "last_tick_age_s": None}
    assert {"name": "echo", "capabilities": [], "queue": gw.settings.pool_queue("echo"), "live_workers": 0} in (
        status["pools"])


def test_status_sees_a_recent_beat_tick(gw: Gateway) -> None:
    beat_key = f"{gw.settings.namespace}:beat:last_tick"
    gw.services.redis.set(beat_key, repr(time.time() - 2))
    beat = gw.call("GET", "/api/v1/status", "vera").get_json()["components"]["beat"]
    assert beat["ok"] is True and 1.5 < beat["last_tick_age_s"] < 10

    gw.services.redis.set(beat_key, repr(time.time() - 30))
    beat = gw.call("GET", "/api/v1/status", "vera").get_json()["components"]["beat"]
    assert beat["ok"] is False and beat["last_tick_age_s"] >= 30


# ---- OpenAPI and the error shape ------------------------------------------------------------
def test_openapi_lists_paths_and_the_problem_schema(gw: Gateway) -> None:
    response = gw.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()

    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "Coretex" and spec["info"]["version"] == "v1"
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/history", "/api/v1/status",
            "/health"} <= set(spec["paths"])
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors"} <= set(problem["properties"])
    default_error = spec["components"]["responses"]["DEFAULT_ERROR"]
    assert default_error["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
    post = spec["paths"]["/api/v1/jobs"]["post"]
    assert {"200", "202", "401", "403", "413", "422"} <= set(post["responses"])
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/v1/nowhere", 404),
    ("GET", "/nowhere", 404),
    ("GET", "/api/v1/jobs", 405),
    ("DELETE", "/api/v1/jobs/abc", 405),
    ("POST", "/health", 405),
])
def test_routing_errors_are_problems(gw: Gateway, method: str, path: str, status: int) -> None:
    response = gw.call(method, path)
    assert assert_problem(response, status)["type"] == "about:blank"
    if status == 405:
        assert response.headers["Allow"]


def test_unexpected_errors_are_500_problems_without_internals(
    gateway_settings: tuple[Settings, dict[str, str]],
) -> None:
    gw_settings, keys = gateway_settings
    services = Services(gw_settings)
    app = create_app(gw_settings, services)

    def boom() -> str:
        raise RuntimeError("secret internals at redis://10.0.0.1")

    def config() -> str:
        raise ConfigError("password=hunter2 in system.yaml")

    app.add_url_rule("/api/v1/boom", view_func=boom)
    app.add_url_rule("/api/v1/config", view_func=config)
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    try:
        client = app.test_client()
        for path in ("/api/v1/boom", "/api/v1/config"):
            problem = assert_problem(client.get(path, headers=headers), 500)
            assert "secret" not in problem["detail"] and "hunter2" not in problem["detail"]
    finally:
        _close(services)


def test_a_broker_failure_surfaces_as_503(gateway_settings: tuple[Settings, dict[str, str]],
                                          redis_client: redis.Redis) -> None:
    gw_settings, keys = gateway_settings
    broken = replace(gw_settings, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    services = Services(broken)
    services.app.conf.broker_connection_timeout = 0.5
    services.app.conf.broker_transport_options = {"max_retries": 0}
    try:
        client = create_app(broken, services).test_client()
        response = client.post("/api/v1/jobs", json={"topic": "job.echo"},
                               headers={"Authorization": f"Bearer {keys['alice']}"})
        assert_problem(response, 503)
    finally:
        _close(services)


# ---- operator endpoints: cancel, dead letters, workers, pending reasons, tenant limits ----------

def test_cancel_ends_a_waiting_job_at_once_and_is_idempotent(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo", "input": {}}).get_json()["job_id"]

    cancelled = gw.call("POST", f"/api/v1/jobs/{job_id}/cancel", json={"reason": "changed my mind"})
    again = gw.call("POST", f"/api/v1/jobs/{job_id}/cancel", json={})

    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "CANCELLED"
    assert "changed my mind" in cancelled.get_json()["error_message"]
    assert again.status_code == 200 and again.get_json()["state"] == "CANCELLED"
    assert_problem(gw.call("POST", f"/api/v1/jobs/{job_id}/cancel", "vera", json={}), 403)  # viewers may not
    assert_problem(gw.call("POST", f"/api/v1/jobs/{job_id}/cancel", "bob", json={}), 404)  # other tenant


def test_pending_reason_is_shown_on_the_job(gw: Gateway) -> None:
    job_id = gw.submit({"topic": "job.echo"}).get_json()["job_id"]
    assert _job(gw, job_id)["pending_reason"] is None

    gw.services.jobs.note_pending(job_id, "pool_overloaded: pool echo has 9 queued jobs (limit 5)")

    assert _job(gw, job_id)["pending_reason"].startswith("pool_overloaded")
    assert any(e["reason"].startswith("pool_overloaded") for e in gw.call("GET", f"/api/v1/jobs/{job_id}/history")
               .get_json())


def _dead(gw: Gateway, who: str, topic: str = "job.echo") -> str:
    job_id: str = gw.submit({"topic": topic, "input": {"n": 1}}, who=who).get_json()["job_id"]
    record = gw.services.jobs.get(job_id)
    gw.services.dlq.add(DLQEntry(job_id, topic, record.tenant_id, "worker_lost", "gone", "RUNNING", 3, time.time()))
    return job_id


def test_dead_letters_are_listed_per_tenant_retried_and_deleted(gw: Gateway) -> None:
    mine, theirs = _dead(gw, "bob"), _dead(gw, "alice")

    listed = gw.call("GET", "/api/v1/dlq", "bob").get_json()
    assert [e["job_id"] for e in listed] == [mine]
    assert listed[0]["error_code"] == "worker_lost" and listed[0]["last_state"] == "RUNNING"
    assert_problem(gw.call("GET", f"/api/v1/dlq/{theirs}", "bob"), 404)
    assert_problem(gw.call("POST", f"/api/v1/dlq/{theirs}/retry", "alice", json={}), 403)  # submitters may not

    retried = gw.call("POST", f"/api/v1/dlq/{mine}/retry", "bob", json={})
    assert retried.status_code == 202 and retried.get_json()["retry_of"] == mine
    new = gw.services.jobs.get(retried.get_json()["job_id"])
    assert new.meta.labels["retry_of"] == mine and new.state.value == "PENDING"
    assert_problem(gw.call("GET", f"/api/v1/dlq/{mine}", "bob"), 404)  # retried: the entry is gone

    another = _dead(gw, "bob")
    assert gw.call("DELETE", f"/api/v1/dlq/{another}", "bob").status_code == 204
    assert_problem(gw.call("DELETE", f"/api/v1/dlq/{another}", "bob"), 404)


def test_live_workers_come_from_their_heartbeats(gw: Gateway) -> None:
    worker = Worker(pool="echo", capabilities=("git", "docker"), worker_id="echo@test-1")
    HeartbeatSender(lambda: gw.services, worker, concurrency=4).send()

    listed = gw.call("GET", "/api/v1/workers", "vera").get_json()

    assert listed == [{"worker_id": "echo@test-1", "pool": "echo", "capabilities": ["git", "docker"],
                       "active_jobs": 0, "max_parallel_jobs": 4, "cpu_load": listed[0]["cpu_load"]}]
    assert gw.call("GET", "/api/v1/workers?pool=other", "vera").get_json() == []


def test_a_tenant_input_limit_from_config_is_413_and_writes_nothing(gw: Gateway) -> None:
    gw.services.config.set("tenant", "acme", {"limits": {"max_input_bytes": 32}}, author="t", message="small plan")
    eventually(lambda: gw.services.live_config.snapshot.version == gw.services.config.version(), timeout=2,
               message="the live config to follow")
    before = gw.namespace_keys()

    problem = assert_problem(gw.submit({"topic": "job.echo", "input": {"blob": "x" * 64}}), 413)

    assert "limit is 32 bytes" in problem["detail"]
    assert gw.namespace_keys() == before
    assert gw.submit({"topic": "job.echo", "input": {"blob": "x" * 64}}, who="bob").status_code == 202

"""The hash-chained decision audit on a real redis-server: append, read, verify, tampering, trimming,
concurrent writers, the fail-closed wrapper and ``coretexctl audit verify``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.cli.policy_cmds import audit
from coretex.errors import StoreError
from coretex.kernel.audit import (
    GENESIS_HASH,
    DecisionAuditLog,
    PolicyChangeLog,
    audited_decision,
    chain_hash,
)
from coretex.policy import Decision, DecisionKind, PolicyRequest, PolicySet, parse_bundle
from coretex.settings import Settings
from coretex.store import connect
from coretex.testing import free_port

pytestmark = pytest.mark.integration

POLICY = PolicySet([parse_bundle("base", """
version: 1
rules:
  - id: allow-jobs
    match: {topics: ["job.*"]}
    decision: allow
    reason: jobs run
  - id: sandbox-repo
    match: {topics: ["job.repo.*"]}
    decision: allow_with_constraints
    reason: repo writes are sandboxed
    constraints: {diff: {max_files: 3}}
  - id: deny-danger
    match: {topics: ["job.danger.*"]}
    decision: deny
    reason: dangerous
""")])


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    conn = connect(settings)
    yield conn
    conn.close()


@pytest.fixture
def audit_log(client: redis.Redis, settings: Settings) -> DecisionAuditLog:
    return DecisionAuditLog(client, settings)


def wire(topic: str, tenant: str = "acme", job_id: str = "job-1", **labels: str) -> safety_pb2.PolicyCheckRequest:
    request = safety_pb2.PolicyCheckRequest(job_id=job_id, topic=topic, tenant=tenant, principal_id="alice")
    request.meta.CopyFrom(job_pb2.JobMetadata(tenant_id=tenant, actor_id="alice", capability="repo.write"))
    request.labels.update(labels)
    return request


def decide(request: safety_pb2.PolicyCheckRequest) -> Decision:
    return POLICY.evaluate(PolicyRequest(topic=request.topic, tenant=request.tenant, labels=dict(request.labels)))


def fill(audit_log: DecisionAuditLog, n: int) -> list[str]:
    ids = []
    for i in range(n):
        request = wire("job.echo", job_id=f"job-{i}")
        ids.append(audit_log.append(request, decide(request)))
    return ids


def stream_rows(client: redis.Redis, audit_log: DecisionAuditLog) -> list[tuple[str, dict[str, str]]]:
    return list(client.xrange(audit_log.stream.key))


# ---- writing and reading ------------------------------------------------------------------------
def test_record_carries_the_decision_and_a_replayable_redacted_request(audit_log: DecisionAuditLog) -> None:
    request = wire("job.repo.write", run_id="run-7", step_id="build", trace_id="tr-1",
                   api_token="ghp_" + "a" * 36)
    request.effective_config = b"{...}"
    decision = decide(request)
    decision_id = audit_log.append(request, decision, now=1000.5)

    (record,) = audit_log.read(10)
    assert record.decision_id == decision_id and uuid.UUID(decision_id).version == 4
    assert (record.decision, record.rule_id, record.rule_ids) == (
        "allow_with_constraints", "sandbox-repo", ("allow-jobs", "sandbox-repo"))
    assert record.constraints == {"diff": {"max_files": 3}}
    assert record.snapshot == POLICY.snapshot_id and record.enforcement == "hard"
    assert record.reason == "repo writes are sandboxed"
    assert (record.tenant, record.actor, record.job_id, record.topic) == ("acme", "alice", "job-1", "job.repo.write")
    assert (record.run_id, record.step_id, record.trace_id, record.time) == ("run-7", "build", "tr-1", 1000.5)
    assert record.request_hash == hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    assert record.seq == 1 and record.prev_hash == GENESIS_HASH

    stored = record.request_message()
    assert record.redacted and stored.labels["api_token"].startswith("[REDACTED:")
    assert "ghp_" not in base64.b64decode(record.request).decode("latin-1")
    assert stored.labels["run_id"] == "run-7" and stored.topic == "job.repo.write"
    assert stored.effective_config == b""  # not evaluated, not stored


def test_response_decisions_are_recorded_in_the_same_spelling(audit_log: DecisionAuditLog) -> None:
    response = safety_pb2.PolicyCheckResponse(decision=safety_pb2.DECISION_TYPE_REQUIRE_HUMAN, rule_id="gate",
                                              reason="needs a human", policy_snapshot="v1:abc")
    audit_log.append(wire("job.deploy"), response)
    (record,) = audit_log.read(1)
    assert (record.decision, record.rule_ids, record.snapshot, record.constraints) == (
        "require_approval", ("gate",), "v1:abc", {})
    assert not record.redacted


def test_read_is_newest_first_filters_by_tenant_and_pages(audit_log: DecisionAuditLog) -> None:
    for i in range(5):
        request = wire("job.echo", tenant="acme" if i % 2 == 0 else "globex", job_id=f"job-{i}")
        audit_log.append(request, decide(request))
    newest = audit_log.read(3)
    assert [r.job_id for r in newest] == ["job-4", "job-3", "job-2"]
    assert [r.job_id for r in audit_log.read(10, before=newest[-1].id)] == ["job-1", "job-0"]
    assert [r.job_id for r in audit_log.read(10, tenant="globex")] == ["job-3", "job-1"]
    assert audit_log.read(10, tenant="nobody") == []
    assert [i for i, _ in audit_log.recent_requests(2)] == [r.decision_id for r in newest[:2]]


# ---- verification ------------------------------------------------------------------------------
def test_an_untouched_chain_verifies(audit_log: DecisionAuditLog, client: redis.Redis) -> None:
    assert audit_log.verify().ok and audit_log.verify().checked == 0  # empty log
    fill(audit_log, 6)
    result = audit_log.verify()
    assert (result.ok, result.checked, result.anchor, result.trimmed) == (True, 6, GENESIS_HASH, 0)
    rows = stream_rows(client, audit_log)
    assert [int(f["seq"]) for _, f in rows] == [1, 2, 3, 4, 5, 6]
    assert all(chain_hash(f) == f["hash"] for _, f in rows)
    assert all(rows[i][1]["prev_hash"] == rows[i - 1][1]["hash"] for i in range(1, 6))
    partial = audit_log.verify(start=rows[2][0], limit=2)
    assert (partial.ok, partial.checked, partial.anchor) == (True, 2, rows[1][1]["hash"])


def test_deleting_a_middle_record_is_detected_and_named(audit_log: DecisionAuditLog, client: redis.Redis) -> None:
    ids = fill(audit_log, 5)
    rows = stream_rows(client, audit_log)
    client.xdel(audit_log.stream.key, rows[2][0])

    result = audit_log.verify()
    assert not result.ok and result.checked == 2
    assert result.first_bad_id == rows[3][0]
    assert "seq 3" in result.reason and "missing" in result.reason and ids[2] in result.reason


def test_an_edited_record_is_detected(audit_log: DecisionAuditLog, client: redis.Redis) -> None:
    fill(audit_log, 4)
    rows = stream_rows(client, audit_log)
    # Streams cannot be edited in place: delete the newest record and append a forged copy.
    stream_id, fields = rows[-1]
    client.xdel(audit_log.stream.key, stream_id)
    forged_id = client.xadd(audit_log.stream.key, {**fields, "decision": "deny", "reason": "forged"})

    result = audit_log.verify()
    assert not result.ok and result.first_bad_id == forged_id
    assert "edited" in result.reason


def test_an_edited_middle_record_moved_to_the_end_is_detected(audit_log: DecisionAuditLog,
                                                              client: redis.Redis) -> None:
    fill(audit_log, 4)
    rows = stream_rows(client, audit_log)
    client.xdel(audit_log.stream.key, rows[1][0])
    forged = {**rows[1][1], "decision": "allow"}
    forged["hash"] = chain_hash(forged)  # even a re-hashed forgery does not fit into the chain
    client.xadd(audit_log.stream.key, forged)

    result = audit_log.verify()
    assert not result.ok and result.first_bad_id == rows[2][0] and "seq 2" in result.reason


def test_reordered_records_are_detected(audit_log: DecisionAuditLog, client: redis.Redis) -> None:
    fill(audit_log, 4)
    rows = stream_rows(client, audit_log)
    for stream_id, _ in rows[2:]:
        client.xdel(audit_log.stream.key, stream_id)
    client.xadd(audit_log.stream.key, rows[3][1])
    client.xadd(audit_log.stream.key, rows[2][1])

    result = audit_log.verify()
    assert not result.ok and "seq 4" in result.reason


def test_deleting_the_oldest_or_newest_records_is_detected(audit_log: DecisionAuditLog, client: redis.Redis) -> None:
    fill(audit_log, 4)
    rows = stream_rows(client, audit_log)
    client.xdel(audit_log.stream.key, rows[-1][0])
    newest = audit_log.verify()
    assert not newest.ok and newest.first_bad_id == rows[-2][0] and "newest" in newest.reason

    client.xdel(audit_log.stream.key, rows[0][0])
    oldest = audit_log.verify()
    assert not oldest.ok and oldest.first_bad_id == rows[1][0] and "trimmed" in oldest.reason


def test_trimming_keeps_the_chain_verifiable(client: redis.Redis, settings: Settings) -> None:
    small = DecisionAuditLog(client, settings, maxlen=5)
    fill(small, 12)
    assert small.stream.length() == 5
    result = small.verify()
    assert (result.ok, result.checked, result.trimmed) == (True, 5, 7)
    rows = stream_rows(client, small)
    assert int(rows[0][1]["seq"]) == 8 and result.anchor == rows[0][1]["prev_hash"] != GENESIS_HASH
    # ... and trimming does not make a real deletion look like one.
    client.xdel(small.stream.key, rows[2][0])
    assert not small.verify().ok


def test_concurrent_writers_keep_one_chain(settings: Settings) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        conn = connect(settings)  # one client per thread, like separate kernel processes
        try:
            log = DecisionAuditLog(conn, settings)
            for i in range(6):
                request = wire("job.echo", job_id=f"w{n}-{i}")
                log.append(request, decide(request))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = connect(settings)
    try:
        log = DecisionAuditLog(conn, settings)
        result = log.verify()
        assert (result.ok, result.checked) == (True, 48)
        assert sorted(r.seq for r in log.read(100)) == list(range(1, 49))
        assert len({r.job_id for r in log.read(100)}) == 48
    finally:
        conn.close()


def test_one_log_shared_by_many_threads_writes_each_decision_once(audit_log: DecisionAuditLog) -> None:
    """Group commit inside one process (as a kernel's RPC threads share its log): every caller gets its
    own record back, batches chain to each other, and nobody waits for a later batch than its own."""
    per_thread, threads = 25, 8
    returned: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                request = wire("job.echo", job_id=f"t{n}-{i}")
                returned[request.job_id] = audit_log.append(request, decide(request))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    result = audit_log.verify()
    assert (result.ok, result.checked) == (True, per_thread * threads)
    records = audit_log.read(1000)
    assert sorted(r.seq for r in records) == list(range(1, per_thread * threads + 1))
    assert {r.job_id: r.decision_id for r in records} == returned


def test_a_lone_caller_never_waits_for_a_batch_to_fill(audit_log: DecisionAuditLog) -> None:
    audit_log.stream.gather_s = 30.0  # were a lone append to wait for company, this test would time out
    started = time.monotonic()
    fill(audit_log, 20)
    assert time.monotonic() - started < 10
    assert audit_log.verify().checked == 20


def test_appends_survive_a_killed_connection_and_flushed_scripts(audit_log: DecisionAuditLog,
                                                                 client: redis.Redis) -> None:
    fill(audit_log, 2)
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    client.script_flush()
    fill(audit_log, 2)
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    fill(audit_log, 2)
    result = audit_log.verify()
    assert (result.ok, result.checked) == (True, 6)


def test_a_retried_append_whose_first_reply_was_lost_is_not_written_twice(
    audit_log: DecisionAuditLog, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(audit_log, 1)
    real_read = redis.connection.AbstractConnection.read_response
    lost = []

    def read_then_lose(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = real_read(self, *args, **kwargs)  # the script ran and answered ...
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("connection reset after the reply was sent")  # ... but the answer is lost
        return reply

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", read_then_lose)
    request = wire("job.echo", job_id="once")
    decision_id = audit_log.append(request, decide(request))
    monkeypatch.undo()

    assert lost, "the failure was not injected"
    assert [r.job_id for r in audit_log.read(10)] == ["once", "job-0"]
    assert audit_log.read(1)[0].decision_id == decision_id
    assert audit_log.verify().ok


def test_policy_change_log_is_chained_too(client: redis.Redis, settings: Settings) -> None:
    changes = PolicyChangeLog(client, settings)
    first = changes.record(action="publish", actor="sec", role="secops", message="m1", bundle_ids=["secops/a"],
                           before_snapshot="v1:a", after_snapshot="v1:b", details={"secops/a": {"revision": 2}})
    changes.record(action="rollback", actor="sec", role="secops", message="m2", bundle_ids=["secops/a"],
                   before_snapshot="v1:b", after_snapshot="v1:a")
    newest = changes.read(10)
    assert [c.action for c in newest] == ["rollback", "publish"]
    assert newest[1] == first and first.details == {"secops/a": {"revision": 2}}
    assert changes.verify().ok and changes.verify().checked == 2


# ---- fail closed -----------------------------------------------------------------------------------
@pytest.fixture
def dead_audit(settings: Settings) -> Iterator[DecisionAuditLog]:
    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    conn = connect(dead)
    yield DecisionAuditLog(conn, dead)
    conn.close()


def test_audit_failure_turns_allow_and_approval_into_deny(dead_audit: DecisionAuditLog) -> None:
    request = wire("job.echo")
    with pytest.raises(StoreError):
        dead_audit.append(request, decide(request))
    allow = decide(request)
    denied = audited_decision(dead_audit, request, allow)
    assert denied.kind is DecisionKind.DENY and denied.reason.startswith("AUDIT_UNAVAILABLE")
    assert denied.snapshot == allow.snapshot

    approval = safety_pb2.PolicyCheckResponse(decision=safety_pb2.DECISION_TYPE_REQUIRE_HUMAN, rule_id="gate",
                                              policy_snapshot="v1:x")
    wire_denied = audited_decision(dead_audit, request, approval)
    assert wire_denied.decision == safety_pb2.DECISION_TYPE_DENY
    assert wire_denied.reason.startswith("AUDIT_UNAVAILABLE") and wire_denied.policy_snapshot == "v1:x"


def test_audit_failure_keeps_a_deny_as_it_was(dead_audit: DecisionAuditLog) -> None:
    request = wire("job.danger.rm")
    deny = decide(request)
    assert audited_decision(dead_audit, request, deny) is deny


def test_audited_decision_writes_and_passes_through(audit_log: DecisionAuditLog) -> None:
    request = wire("job.echo")
    allow = decide(request)
    assert audited_decision(audit_log, request, allow) is allow
    assert [r.rule_id for r in audit_log.read(5)] == ["allow-jobs"]


# ---- coretexctl audit verify -------------------------------------------------------------------
def run_verify(settings: Settings, *args: str) -> Any:
    env = {"CORETEX_REDIS_URL": settings.redis_url, "CORETEX_NAMESPACE": settings.namespace}
    env.update({k: None for k in os.environ if k.startswith("CORETEX_") and k not in env})
    return CliRunner().invoke(audit, ["verify", *args], env=env)


def test_cli_verify_exit_codes(audit_log: DecisionAuditLog, client: redis.Redis, settings: Settings) -> None:
    fill(audit_log, 3)
    intact = run_verify(settings, "-o", "json")
    assert intact.exit_code == 0, intact.output
    assert json.loads(intact.output) | {"anchor": None} == {
        "log": "decisions", "ok": True, "checked": 3, "first_bad_id": None, "reason": None, "trimmed": 0,
        "anchor": None}
    assert "intact" in run_verify(settings).output

    rows = stream_rows(client, audit_log)
    client.xdel(audit_log.stream.key, rows[1][0])
    broken = run_verify(settings)
    assert broken.exit_code == 1
    assert rows[2][0] in broken.output and "BROKEN" in broken.output
    as_json = run_verify(settings, "--output", "json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["first_bad_id"] == rows[2][0]

    assert run_verify(settings, "--log", "policy").exit_code == 0  # an empty policy audit is intact


def test_cli_verify_unreachable_redis_exits_3(settings: Settings) -> None:
    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    result = run_verify(dead)
    assert result.exit_code == 3 and "cannot read the audit log" in result.output

"""The safety kernel over real gRPC: in-process servers on port 0, and one real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coretex.agent.v1 import job_pb2, safety_pb2, safety_pb2_grpc
from coretex.errors import ConfigError, KernelUnavailableError
from coretex.kernel import KernelClient, KernelServer, build_kernel, build_server, serve
from coretex.kernel.audit import DecisionAuditLog
from coretex.settings import Settings, load_settings
from coretex.store import connect
from coretex.testing import RedisServer, eventually, free_port, wait_for_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE_POLICIES = REPO / "policies"
ALLOW = safety_pb2.DECISION_TYPE_ALLOW
DENY = safety_pb2.DECISION_TYPE_DENY


_REDIS_URL = ""


@pytest.fixture(scope="module", autouse=True)
def _redis(redis_server: RedisServer) -> None:
    """Kernels here talk to the session's redis-server (status, last-known-good), never to 6379."""
    global _REDIS_URL
    _REDIS_URL = redis_server.url


def kernel_env(policies_dir: Path) -> dict[str, str]:
    """Dev mode: the shipped policies/ are unsigned (tests/integration/test_kernel_reload.py covers signing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
    env.update({
        "CORETEX_POLICIES_DIR": str(policies_dir),
        "CORETEX_REDIS_URL": _REDIS_URL,
        "CORETEX_NAMESPACE": "kg" + uuid.uuid4().hex[:10],
        "CORETEX_DEV_MODE": "1",
    })
    return env


def kernel_settings(policies_dir: Path) -> Settings:
    return load_settings(kernel_env(policies_dir))


@pytest.fixture(scope="module")
def kernel(_redis: None) -> Iterator[KernelServer]:
    server = build_kernel(kernel_settings(BASE_POLICIES), "127.0.0.1:0").start()
    yield server
    server.stop(grace=0)


@pytest.fixture
def channel(kernel: KernelServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(kernel.address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.Channel) -> safety_pb2_grpc.SafetyKernelStub:
    return safety_pb2_grpc.SafetyKernelStub(channel)


def req(topic: str, tenant: str = "default", **fields: object) -> safety_pb2.PolicyCheckRequest:
    return safety_pb2.PolicyCheckRequest(**{"job_id": "job-1", **fields}, topic=topic, tenant=tenant)


# --- decisions over the wire ------------------------------------------------------------------------


def test_check_allows_platform_jobs(kernel: KernelServer, stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    resp = stub.Check(req("job.echo"), timeout=5)
    assert resp.decision == ALLOW
    assert resp.rule_id == "allow-platform-jobs"
    assert resp.reason == "platform jobs are allowed by default"
    assert resp.policy_snapshot == kernel.snapshot_id
    assert resp.policy_snapshot.startswith("v1:")


def test_check_denies_destructive_topics(stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    resp = stub.Check(req("job.danger.rm"), timeout=5)
    assert (resp.decision, resp.rule_id) == (DENY, "deny-destructive")
    assert resp.reason == "destructive topics are blocked by the base policy"
    assert not resp.approval_required


def test_unmatched_topic_gets_default_deny(stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    resp = stub.Check(req("other.topic"), timeout=5)
    assert (resp.decision, resp.rule_id, resp.reason) == (DENY, "", "no rule matched; default decision deny")


def test_all_five_rpcs_answer(kernel: KernelServer, stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    for method in (stub.Check, stub.Evaluate, stub.Simulate, stub.Explain):
        resp = method(req("job.danger.rm"), timeout=5)
        assert (resp.decision, resp.rule_id, resp.policy_snapshot) == (
            DENY,
            "deny-destructive",
            kernel.snapshot_id,
        )
    explained = stub.Explain(req("job.danger.rm"), timeout=5).reason
    assert (
        "deny-destructive" in explained
        and "'job.danger.*'" in explained
        and "allow-platform-jobs" in explained
    )
    snapshots = stub.ListSnapshots(safety_pb2.ListSnapshotsRequest(), timeout=5)
    [snapshot] = snapshots.snapshots  # v<version>:<sha256 prefix>; decisions carry the content id v1:<prefix>
    version, _, digest = snapshot.partition(":")
    assert version[0] == "v" and int(version[1:]) >= 1 and digest == kernel.snapshot_id.partition(":")[2]


def test_cordum_service_name_is_served(channel: grpc.Channel) -> None:
    check = channel.unary_unary(
        "/cordum.agent.v1.SafetyKernel/Check",
        request_serializer=safety_pb2.PolicyCheckRequest.SerializeToString,
        response_deserializer=safety_pb2.PolicyCheckResponse.FromString,
    )
    resp = check(req("job.echo"), timeout=5)
    assert (resp.decision, resp.rule_id) == (ALLOW, "allow-platform-jobs")
    listing = channel.unary_unary(
        "/cordum.agent.v1.SafetyKernel/ListSnapshots",
        request_serializer=safety_pb2.ListSnapshotsRequest.SerializeToString,
        response_deserializer=safety_pb2.ListSnapshotsResponse.FromString,
    )
    assert len(listing(safety_pb2.ListSnapshotsRequest(), timeout=5).snapshots) == 1


def test_unknown_service_name_is_unimplemented(channel: grpc.Channel) -> None:
    check = channel.unary_unary(
        "/cortex.agent.v1.SafetyKernel/Check",
        request_serializer=safety_pb2.PolicyCheckRequest.SerializeToString,
        response_deserializer=safety_pb2.PolicyCheckResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        check(req("job.echo"), timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_health_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "coretex.agent.v1.SafetyKernel", "cordum.agent.v1.SafetyKernel"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


# --- tenants and metadata ---------------------------------------------------------------------------


@pytest.fixture
def tenant_kernel(tmp_path: Path) -> Iterator[KernelServer]:
    (tmp_path / "tenants.yml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - id: acme-jobs\n"
        "    match: {topics: ['job.*'], tenants: [acme]}\n"
        "    decision: allow\n"
        "    reason: acme may run jobs\n"
    )
    (tmp_path / "notes.txt").write_text("not a bundle: ignored")
    with build_kernel(kernel_settings(tmp_path), "127.0.0.1:0") as server:
        yield server


def test_tenant_comes_from_tenant_or_meta(tenant_kernel: KernelServer) -> None:
    with grpc.insecure_channel(tenant_kernel.address) as chan:
        stub = safety_pb2_grpc.SafetyKernelStub(chan)
        assert stub.Check(req("job.echo", tenant="acme"), timeout=5).decision == ALLOW
        from_meta = req("job.echo", tenant="", meta=job_pb2.JobMetadata(tenant_id="acme"))
        assert stub.Check(from_meta, timeout=5).rule_id == "acme-jobs"
        assert stub.Check(req("job.echo", tenant="globex"), timeout=5).decision == DENY
        conflict = stub.Check(
            req("job.echo", tenant="acme", meta=job_pb2.JobMetadata(tenant_id="globex")), timeout=5
        )
        assert conflict.decision == DENY and "disagree" in conflict.reason


# --- the full rule model over the wire --------------------------------------------------------------

MODEL_BUNDLE = """
version: 1
rules:
  - id: allow-jobs
    match: {topics: ["job.*"]}
    decision: allow
    reason: jobs run
  - id: constrain-repo
    match: {topics: ["job.repo.*"]}
    decision: allow_with_constraints
    reason: repo jobs are sandboxed
    constraints:
      budgets: {max_runtime_ms: 60000, max_retries: 2}
      sandbox: {network: egress-allowlist, allowlist: [git.example], read_write_paths: [/work]}
      tools: [git]
      diff: {max_files: 10, deny_paths: ["secrets/**"]}
      redaction_level: strict
  - id: prod-needs-a-human
    match: {topics: ["job.*"], labels: {env: prod}}
    decision: deny
    enforcement: soft
    reason: prod changes need approval
    remediations:
      - id: use-staging
        title: Run against staging
        replacement_topic: job.repo.push.staging
        add_labels: {env: staging}
  - id: expensive
    match: {topics: ["job.*"], when: "request.estimated_cost > 100.0 && request.priority != 'critical'"}
    decision: throttle
    reason: expensive jobs wait
"""


@pytest.fixture
def model_stub(tmp_path: Path) -> Iterator[safety_pb2_grpc.SafetyKernelStub]:
    (tmp_path / "model.yaml").write_text(MODEL_BUNDLE)
    with build_kernel(kernel_settings(tmp_path), "127.0.0.1:0") as server:
        with grpc.insecure_channel(server.address) as chan:
            yield safety_pb2_grpc.SafetyKernelStub(chan)


def test_constraints_travel_over_grpc(model_stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    resp = model_stub.Check(req("job.repo.push"), timeout=5)
    assert (resp.decision, resp.rule_id) == (safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS, "constrain-repo")
    assert not resp.approval_required and not resp.remediations
    c = resp.constraints
    assert (c.budgets.max_runtime_ms, c.budgets.max_retries, c.budgets.max_artifact_bytes) == (60000, 2, 0)
    assert list(c.sandbox.network_allowlist) == ["git.example"] and not c.sandbox.isolated
    assert (list(c.sandbox.fs_read_only), list(c.sandbox.fs_read_write)) == (["/"], ["/work"])
    assert list(c.toolchain.allowed_tools) == ["git"] and list(c.toolchain.allowed_commands) == []
    assert (c.diff.max_files, list(c.diff.deny_path_globs)) == (10, ["secrets/**"])
    assert c.redaction_level == "strict"
    plain = model_stub.Check(req("job.echo"), timeout=5)
    assert plain.decision == ALLOW and not plain.HasField("constraints")


def test_soft_deny_is_require_human_with_remediations(model_stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    resp = model_stub.Check(req("job.repo.push", labels={"env": "prod"}), timeout=5)
    assert resp.decision == safety_pb2.DECISION_TYPE_REQUIRE_HUMAN and resp.approval_required
    assert (resp.rule_id, resp.reason) == ("prod-needs-a-human", "prod changes need approval")
    [remedy] = resp.remediations
    assert (remedy.id, remedy.replacement_topic, dict(remedy.add_labels)) == (
        "use-staging",
        "job.repo.push.staging",
        {"env": "staging"},
    )
    # the limits that apply once approved travel with the answer
    assert list(resp.constraints.toolchain.allowed_tools) == ["git"]
    explained = model_stub.Explain(req("job.repo.push", labels={"env": "prod"}), timeout=5)
    assert "(soft deny)" in explained.reason and "label env is 'prod'" in explained.reason


def test_when_clause_sees_priority_and_cost_from_the_wire(model_stub: safety_pb2_grpc.SafetyKernelStub) -> None:
    costly = model_stub.Check(req("job.echo", estimated_cost=500.0), timeout=5)
    assert (costly.decision, costly.rule_id) == (safety_pb2.DECISION_TYPE_THROTTLE, "expensive")
    critical = model_stub.Check(
        req("job.echo", estimated_cost=500.0, priority=job_pb2.JOB_PRIORITY_CRITICAL), timeout=5
    )
    assert (critical.decision, critical.rule_id) == (ALLOW, "allow-jobs")


# --- the client -------------------------------------------------------------------------------------


def test_client_checks_and_is_reusable(kernel: KernelServer) -> None:
    client = KernelClient(kernel.address, timeout_s=2.0)
    try:
        assert client.check(req("job.echo")).decision == ALLOW
        assert client.check(req("job.danger.rm")).rule_id == "deny-destructive"
        client.close()
        assert client.check(req("job.echo")).decision == ALLOW  # reopens after close
    finally:
        client.close()


def test_client_calls_from_many_threads(kernel: KernelServer) -> None:
    with KernelClient(kernel.address, timeout_s=5.0) as client:
        with futures.ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: client.check(req(f"job.t{i}")).decision, range(64)))
    assert answers == [ALLOW] * 64


# --- every decision audited --------------------------------------------------------------------------


@pytest.fixture
def audited_kernel(_redis: None) -> Iterator[tuple[KernelServer, DecisionAuditLog]]:
    settings = kernel_settings(BASE_POLICIES)
    server = build_kernel(settings, "127.0.0.1:0").start()
    client = connect(settings)
    yield server, DecisionAuditLog(client, settings)
    server.stop(grace=0)
    client.close()


def test_each_check_is_audited_before_it_is_answered(
    audited_kernel: tuple[KernelServer, DecisionAuditLog],
) -> None:
    kernel, audit = audited_kernel
    with grpc.insecure_channel(kernel.address) as chan:
        stub = safety_pb2_grpc.SafetyKernelStub(chan)
        for i, topic in enumerate(["job.echo", "job.danger.rm", "other.topic"]):
            answer = stub.Check(req(topic, job_id=f"seq-{i}"), timeout=5)
            (newest,) = audit.read(1)  # already there when the answer arrives
            assert (newest.job_id, newest.rule_id, newest.topic) == (f"seq-{i}", answer.rule_id, topic)
            assert newest.decision == {ALLOW: "allow", DENY: "deny"}[answer.decision]
        stub.Simulate(req("job.echo", job_id="simulated"), timeout=5)  # no side effects: not audited
        stub.Explain(req("job.echo", job_id="explained"), timeout=5)
    assert [r.job_id for r in audit.read(10)] == ["seq-2", "seq-1", "seq-0"]


def test_concurrent_checks_are_each_audited_once_in_one_chain(
    audited_kernel: tuple[KernelServer, DecisionAuditLog],
) -> None:
    kernel, audit = audited_kernel
    threads, per_thread = 8, 40

    def client(slot: int) -> dict[str, int]:
        answered = {}
        with grpc.insecure_channel(kernel.address) as chan:
            stub = safety_pb2_grpc.SafetyKernelStub(chan)
            for i in range(per_thread):
                method = stub.Check if i % 2 else stub.Evaluate
                job_id = f"c{slot}-{i}"
                answered[job_id] = method(req("job.danger.rm" if i % 3 == 0 else "job.echo", job_id=job_id),
                                          timeout=5).decision
        return answered

    with futures.ThreadPoolExecutor(max_workers=threads) as pool:
        answered = {k: v for part in pool.map(client, range(threads)) for k, v in part.items()}
    records = audit.read(1000)
    assert len(records) == len(answered) == threads * per_thread
    assert {r.job_id: r.decision for r in records} == {
        job_id: "allow" if decision == ALLOW else "deny" for job_id, decision in answered.items()}
    result = audit.verify()
    assert (result.ok, result.checked) == (True, threads * per_thread)


def test_check_fails_closed_when_its_audit_cannot_be_written(
    audited_kernel: tuple[KernelServer, DecisionAuditLog],
) -> None:
    kernel, _ = audited_kernel
    dead = replace(kernel_settings(BASE_POLICIES), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = connect(dead)
    kernel.service.audit = DecisionAuditLog(client, dead)
    try:
        with grpc.insecure_channel(kernel.address) as chan:
            stub = safety_pb2_grpc.SafetyKernelStub(chan)
            allow = stub.Check(req("job.echo"), timeout=5)
            assert allow.decision == DENY and allow.reason.startswith("AUDIT_UNAVAILABLE")
            deny = stub.Check(req("job.danger.rm"), timeout=5)
            assert (deny.decision, deny.rule_id) == (DENY, "deny-destructive")  # a deny stays what it was
            assert stub.Simulate(req("job.echo"), timeout=5).decision == ALLOW  # not audited: unaffected
    finally:
        client.close()


def test_client_without_server_fails_closed_within_timeout() -> None:
    port = free_port()
    with KernelClient(f"127.0.0.1:{port}", timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(KernelUnavailableError) as info:
            client.check(req("job.echo"))
        assert time.monotonic() - started < 2.0
    assert str(info.value).startswith("KERNEL_UNAVAILABLE: ")
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_client_deadline_exceeded_is_unavailable() -> None:
    release = threading.Event()

    def hang(
        request: safety_pb2.PolicyCheckRequest, context: grpc.ServicerContext
    ) -> safety_pb2.PolicyCheckResponse:
        release.wait(10)
        return safety_pb2.PolicyCheckResponse(decision=ALLOW)

    handler = grpc.method_handlers_generic_handler(
        "coretex.agent.v1.SafetyKernel",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                hang,
                request_deserializer=safety_pb2.PolicyCheckRequest.FromString,
                response_serializer=safety_pb2.PolicyCheckResponse.SerializeToString,
            )
        },
    )
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        slow = grpc.server(pool, handlers=[handler])
        port = slow.add_insecure_port("127.0.0.1:0")
        slow.start()
        try:
            with KernelClient(f"127.0.0.1:{port}", timeout_s=0.3) as client:
                started = time.monotonic()
                with pytest.raises(KernelUnavailableError, match="DEADLINE_EXCEEDED"):
                    client.check(req("job.echo"))
                assert time.monotonic() - started < 2.0
        finally:
            release.set()
            slow.stop(grace=0).wait()


def test_client_recovers_when_the_kernel_comes_back() -> None:
    port = free_port()
    with KernelClient(f"127.0.0.1:{port}", timeout_s=0.5) as client:
        with pytest.raises(KernelUnavailableError):
            client.check(req("job.echo"))
        with build_kernel(kernel_settings(BASE_POLICIES), f"127.0.0.1:{port}"):

            def allowed() -> bool:
                try:
                    return client.check(req("job.echo")).decision == ALLOW
                except KernelUnavailableError:
                    return False

            # up to one breaker cool-down (5 s) plus the channel's reconnect backoff
            eventually(allowed, timeout=15, message="client reconnects to the restarted kernel")


# --- startup ----------------------------------------------------------------------------------------


def test_build_server_returns_a_grpc_server() -> None:
    port = free_port()
    server = build_server(kernel_settings(BASE_POLICIES), f"127.0.0.1:{port}")
    server.start()
    try:
        with KernelClient(f"127.0.0.1:{port}", timeout_s=2.0) as client:
            assert client.check(req("job.echo")).rule_id == "allow-platform-jobs"
    finally:
        server.stop(grace=0).wait()


def test_a_taken_port_is_refused(kernel: KernelServer) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        build_kernel(kernel_settings(BASE_POLICIES), kernel.address)


def test_serve_on_a_taken_port_exits_nonzero(kernel: KernelServer) -> None:
    with pytest.raises(SystemExit) as info:
        serve(kernel_settings(BASE_POLICIES), kernel.address)
    assert info.value.code not in (0, None)


@pytest.mark.parametrize(
    ("files", "stage", "message"),
    [
        (None, "fetch", "does not exist"),
        ({}, "fetch", "no policy bundle in"),
        ({"base.yaml": "version: 1\nrules: [{id: x, decision: maybe}]\n"}, "parse", "base.yaml"),
        ({"a.yaml": "version: 1\nsurprise: true\n"}, "parse", "a.yaml"),
    ],
)
def test_invalid_policies_dir_starts_not_ready_and_denies(
    tmp_path: Path, files: dict[str, str] | None, stage: str, message: str
) -> None:
    policies = tmp_path / "policies"
    if files is not None:
        policies.mkdir()
        for name, text in files.items():
            (policies / name).write_text(text)
    with build_kernel(kernel_settings(policies), "127.0.0.1:0") as server:
        assert server.reloader is not None
        status = server.reloader.status()
        assert (status.status, status.stage) == ("NOT_READY", stage) and message in status.message
        with KernelClient(server.address, timeout_s=2.0) as client:
            assert client.ready() is False
            resp = client.check(req("job.echo"))
        assert (resp.decision, resp.rule_id, resp.policy_snapshot) == (DENY, "POLICY_UNAVAILABLE", "")
        assert resp.reason.startswith("POLICY_UNAVAILABLE: ") and stage in resp.reason


# --- a real process ---------------------------------------------------------------------------------


def run_kernel_process(policies_dir: Path, listen: str) -> subprocess.Popen[str]:
    env = kernel_env(policies_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "coretex.kernel", "--listen", listen],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kernel_process_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = run_kernel_process(BASE_POLICIES, f"127.0.0.1:{port}")
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        with KernelClient(f"127.0.0.1:{port}", timeout_s=2.0) as client:
            resp = client.check(req("job.danger.rm"))
        assert (resp.decision, resp.rule_id) == (DENY, "deny-destructive")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"kernel listening on 127.0.0.1:{port} snapshot {resp.policy_snapshot}" in stderr


def test_kernel_process_with_bad_policies_serves_not_ready(tmp_path: Path) -> None:
    port = free_port()
    proc = run_kernel_process(tmp_path / "missing", f"127.0.0.1:{port}")
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        with KernelClient(f"127.0.0.1:{port}", timeout_s=2.0) as client:
            assert client.ready() is False
            resp = client.check(req("job.echo"))
        assert (resp.decision, resp.rule_id) == (DENY, "POLICY_UNAVAILABLE")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"kernel listening on 127.0.0.1:{port} NOT READY" in stderr and "does not exist" in stderr


def test_client_ready_reflects_the_health_service(kernel: KernelServer) -> None:
    with KernelClient(kernel.address, 2.0) as client:
        assert client.ready() is True
    with KernelClient(f"127.0.0.1:{free_port()}", 0.5) as client:
        assert client.ready() is False

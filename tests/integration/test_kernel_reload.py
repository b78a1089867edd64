"""Signed, hot-reloaded kernel policy on a real Redis: tampering refused, swaps without a failed
evaluation, last-known-good at restart, fail-closed when nothing verifies, and two kernel
processes following one config-service publish."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from coretex.agent.v1 import safety_pb2
from coretex.config import ConfigService
from coretex.kernel import KernelClient, KernelServer, build_kernel, read_kernel_statuses
from coretex.kernel.alerts import recent_alerts
from coretex.policy.signing import (
    generate_private_key,
    key_id_of,
    public_key_to_base64,
    sign_bundle,
    sign_embedded,
)
from coretex.protocol.envelope import decode_packet
from coretex.settings import Settings
from coretex.store import connect
from coretex.testing import ProcessStack, RedisServer, eventually, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALLOW = safety_pb2.DECISION_TYPE_ALLOW
DENY = safety_pb2.DECISION_TYPE_DENY
BASE = """\
version: 1
rules:
  - id: allow-platform-jobs
    match: {topics: ["job.*"]}
    decision: allow
    reason: platform jobs run
  - id: deny-destructive
    match: {topics: ["job.danger.*"]}
    decision: deny
    reason: destructive topics are blocked
tests:
  - request: {topic: job.echo}
    expect: allow
"""


def deny_bundle(rule_id: str, topic: str, extra: str = "") -> str:
    return (
        f"version: 1\nrules:\n  - id: {rule_id}\n    match: {{topics: [{topic!r}]}}\n"
        f"    decision: deny\n    reason: {rule_id} says no\n{extra}"
    )


@dataclass
class Signer:
    key: Ed25519PrivateKey
    trusted: Path

    def sign_file(self, path: Path) -> None:
        path.with_name(path.name + ".sig").write_text(sign_bundle(path.read_bytes(), self.key).to_json())

    def write(self, path: Path, text: str) -> Path:
        path.write_text(text)
        self.sign_file(path)
        return path

    def embed(self, text: str) -> str:
        return sign_embedded(text, self.key)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    key = generate_private_key()
    trusted = tmp_path / "trusted-keys.yaml"
    trusted.write_text(f'"{key_id_of(key.public_key())}": {public_key_to_base64(key.public_key())}\n')
    return Signer(key, trusted)


@pytest.fixture
def policies(tmp_path: Path, signer: Signer) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    signer.write(folder / "base.yaml", BASE)
    return folder


@pytest.fixture
def kernel_settings(settings: Settings, policies: Path, signer: Signer) -> Settings:
    """Enforcing (not dev mode), signed files, quick polling."""
    return dataclasses.replace(
        settings, policies_dir=policies, policy_trusted_keys=signer.trusted, policy_poll_s=0.2, dev_mode=False
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[redis.Redis]:
    client = connect(settings)
    yield client
    client.close()


@contextmanager
def running(settings: Settings) -> Iterator[KernelServer]:
    with build_kernel(settings, "127.0.0.1:0") as kernel:
        yield kernel


def check(addr: str, topic: str) -> safety_pb2.PolicyCheckResponse:
    with KernelClient(addr, timeout_s=5.0) as client:
        return client.check(safety_pb2.PolicyCheckRequest(job_id="j1", topic=topic, tenant="default"))


def ready(addr: str) -> bool:
    with KernelClient(addr, timeout_s=2.0) as client:
        return client.ready()


def list_snapshots(addr: str) -> list[str]:
    import grpc

    from coretex.agent.v1 import safety_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        reply = safety_pb2_grpc.SafetyKernelStub(channel).ListSnapshots(safety_pb2.ListSnapshotsRequest(), timeout=5)
    return list(reply.snapshots)


def status(store: redis.Redis, settings: Settings, kernel: KernelServer | str) -> dict[str, Any] | None:
    kernel_id = kernel if isinstance(kernel, str) else kernel.reloader.kernel_id  # type: ignore[union-attr]
    found = [s for s in read_kernel_statuses(store, settings) if s["kernel_id"] == kernel_id]
    return found[0] if found else None


def failures(stage: str) -> float:
    return REGISTRY.get_sample_value("coretex_policy_reload_failures_total", {"stage": stage}) or 0.0


# --- signatures -------------------------------------------------------------------------------------------


def test_signed_sources_serve_and_report_ready(kernel_settings: Settings, store: redis.Redis) -> None:
    with running(kernel_settings) as kernel:
        resp = check(kernel.address, "job.echo")
        assert (resp.decision, resp.rule_id, resp.policy_snapshot) == (ALLOW, "allow-platform-jobs", kernel.snapshot_id)
        assert ready(kernel.address)
        info = status(store, kernel_settings, kernel)
        assert info is not None
        assert (info["status"], info["stage"], info["dev_mode"]) == ("READY", "", False)
        assert info["policy_snapshot"] == kernel.snapshot_id == "v1:" + info["sha256"][:12]
        assert list_snapshots(kernel.address) == [info["snapshot_id"]] == [f"v{info['version']}:{info['sha256'][:12]}"]
        assert list(info["sources"]) == [str(kernel_settings.policies_dir / "base.yaml")]
    assert status(store, kernel_settings, kernel) is None  # a stopped kernel removes its status


def test_unsigned_source_is_refused_outside_dev_mode(kernel_settings: Settings, store: redis.Redis) -> None:
    (kernel_settings.policies_dir / "base.yaml.sig").unlink()
    with running(kernel_settings) as kernel:
        assert not ready(kernel.address)
        resp = check(kernel.address, "job.echo")
        assert (resp.decision, resp.rule_id, resp.policy_snapshot) == (DENY, "POLICY_UNAVAILABLE", "")
        assert resp.reason.startswith("POLICY_UNAVAILABLE: ")
        assert list_snapshots(kernel.address) == []
        info = status(store, kernel_settings, kernel)
        assert info is not None and (info["status"], info["stage"]) == ("NOT_READY", "verify")
        assert "unsigned" in info["message"]


def test_dev_mode_accepts_unsigned_sources(kernel_settings: Settings, store: redis.Redis) -> None:
    (kernel_settings.policies_dir / "base.yaml.sig").unlink()
    with running(dataclasses.replace(kernel_settings, dev_mode=True)) as kernel:
        assert check(kernel.address, "job.echo").decision == ALLOW
        info = status(store, kernel_settings, kernel)
        assert info is not None and (info["status"], info["dev_mode"]) == ("READY", True)


def test_dev_mode_still_refuses_a_bad_signature(kernel_settings: Settings, signer: Signer) -> None:
    (kernel_settings.policies_dir / "base.yaml").write_text(BASE.replace("platform jobs run", "anything runs"))
    with running(dataclasses.replace(kernel_settings, dev_mode=True)) as kernel:
        assert check(kernel.address, "job.echo").rule_id == "POLICY_UNAVAILABLE"


def test_tampered_bundle_is_rejected_and_the_old_snapshot_keeps_serving(
    kernel_settings: Settings, store: redis.Redis, redis_client: redis.Redis
) -> None:
    alerts = redis_client.pubsub(ignore_subscribe_messages=True)  # binary client: packets are raw CAP bytes
    alerts.subscribe(f"{kernel_settings.namespace}:alerts")
    before = failures("verify")
    with running(kernel_settings) as kernel:
        first = check(kernel.address, "job.danger.rm")
        assert (first.decision, first.rule_id) == (DENY, "deny-destructive")
        base = kernel_settings.policies_dir / "base.yaml"
        base.write_bytes(base.read_bytes().replace(b"job.danger.*", b"job.dangeR.*"))  # one byte, after signing

        info = eventually(lambda: (s := status(store, kernel_settings, kernel)) and s["status"] == "DEGRADED" and s,
                          timeout=10, message="the kernel to refuse the tampered bundle")
        assert info["stage"] == "verify" and "does not match the content" in info["message"]
        again = check(kernel.address, "job.danger.rm")
        assert (again.decision, again.rule_id) == (DENY, "deny-destructive")
        assert again.policy_snapshot == first.policy_snapshot
        assert ready(kernel.address)  # degraded still serves the verified snapshot

        [alert] = [a for a in recent_alerts(store, kernel_settings.namespace) if a["code"] == "POLICY_RELOAD_FAILED"]
        assert (alert["level"], alert["component"]) == ("CRITICAL", "kernel")
        assert "verify" in alert["message"] and "still serving" in alert["message"]
        packet = decode_packet(base64.b64decode(alert["packet"]), expect="alert")
        assert packet.alert.code == "POLICY_RELOAD_FAILED"
        live = eventually(lambda: alerts.get_message(timeout=0.1), timeout=5, message="the alert on pub/sub")
        assert decode_packet(live["data"], expect="alert").alert.message == alert["message"]
    alerts.close()
    assert failures("verify") == before + 1


def test_a_bundle_failing_a_stage_is_refused_at_that_stage(
    kernel_settings: Settings, signer: Signer, store: redis.Redis
) -> None:
    folder = kernel_settings.policies_dir
    broken = {
        "parse": "version: 1\nrules: [{id: x, decision: maybe}]\n",
        "compile": deny_bundle("allow-platform-jobs", "job.other"),  # rule id already used by base.yaml
        "test": deny_bundle("deny-echo", "job.echo", "tests:\n  - request: {topic: job.echo}\n    expect: allow\n"),
    }
    with running(kernel_settings) as kernel:
        snapshot = kernel.snapshot_id
        for stage, text in broken.items():
            signer.write(folder / "extra.yaml", text)
            info = eventually(lambda s=stage: (i := status(store, kernel_settings, kernel)) and i["stage"] == s and i,
                              timeout=10, message=f"a refusal at stage {stage}")
            assert info["status"] == "DEGRADED"
            resp = check(kernel.address, "job.echo")
            assert (resp.decision, resp.policy_snapshot) == (ALLOW, snapshot)
        assert "expected allow, got deny" in info["message"]
        (folder / "extra.yaml").unlink()
        eventually(lambda: (i := status(store, kernel_settings, kernel)) and i["status"] == "READY",
                   timeout=10, message="recovery once the bad bundle is gone")


# --- config-service bundles -------------------------------------------------------------------------------


def test_signed_config_bundle_is_active_and_an_unsigned_one_refused(
    kernel_settings: Settings, signer: Signer, store: redis.Redis
) -> None:
    config = ConfigService(store, kernel_settings)
    with running(kernel_settings) as kernel:
        assert check(kernel.address, "job.swap").decision == ALLOW
        config.put_policy_bundle("secops/workflows", signer.embed(deny_bundle("secops-no-swap", "job.swap")),
                                 author="secops", message="no swaps")
        eventually(lambda: check(kernel.address, "job.swap").rule_id == "secops-no-swap", timeout=2,
                   message="the published bundle to be active")
        info = status(store, kernel_settings, kernel)
        assert info is not None and "config:secops/workflows" in info["sources"]

        config.put_policy_bundle("secops/unsigned", deny_bundle("unsigned-rule", "job.echo"),
                                 author="secops", message="unsigned")
        eventually(lambda: (i := status(store, kernel_settings, kernel)) and i["stage"] == "verify",
                   timeout=5, message="the unsigned bundle to be refused")
        assert check(kernel.address, "job.echo").decision == ALLOW
        config.set_policy_bundle_enabled("secops/unsigned", False, author="secops", message="off")
        eventually(lambda: (i := status(store, kernel_settings, kernel)) and i["status"] == "READY",
                   timeout=5, message="recovery once the unsigned bundle is disabled")


def test_zero_failed_evaluations_while_swapping(
    kernel_settings: Settings, signer: Signer, store: redis.Redis
) -> None:
    config = ConfigService(store, kernel_settings)
    deny = signer.embed(deny_bundle("secops-no-swap", "job.swap"))
    allow = signer.embed(deny_bundle("secops-no-swap", "job.elsewhere"))
    answers: list[tuple[int, str, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with running(kernel_settings) as kernel:

        def hammer() -> None:
            with KernelClient(kernel.address, timeout_s=5.0) as client:
                while not stop.is_set():
                    try:
                        r = client.check(safety_pb2.PolicyCheckRequest(job_id="h", topic="job.swap"))
                        answers.append((r.decision, r.rule_id, r.policy_snapshot))
                    except BaseException as exc:  # any failure is what this test looks for
                        errors.append(exc)

        thread = threading.Thread(target=hammer)
        thread.start()
        snapshots = {kernel.snapshot_id}
        try:
            for i, content in enumerate([deny, allow, deny, allow]):
                config.put_policy_bundle("secops/swap", content, author="secops", message=f"swap {i}")
                expected = "secops-no-swap" if content is deny else "allow-platform-jobs"
                eventually(lambda e=expected: answers and answers[-1][1] == e, timeout=5, message=f"swap {i}")
                snapshots.add(kernel.snapshot_id)
        finally:
            stop.set()
            thread.join(10)
    assert not errors
    assert {(d, rule) for d, rule, _ in answers} == {(ALLOW, "allow-platform-jobs"), (DENY, "secops-no-swap")}
    # base alone, base + the deny, base + the harmless version: nothing in between was ever answered
    assert {snap for _, _, snap in answers} <= snapshots and len(snapshots) == 3


def test_publish_reaches_two_kernel_processes_within_two_seconds(
    redis_server: RedisServer, kernel_settings: Settings, signer: Signer, store: redis.Redis, tmp_path: Path
) -> None:
    env = {
        "CORETEX_REDIS_URL": redis_server.url,
        "CORETEX_NAMESPACE": kernel_settings.namespace,
        "CORETEX_POLICIES_DIR": str(kernel_settings.policies_dir),
        "CORETEX_POLICY_TRUSTED_KEYS": str(signer.trusted),
        "CORETEX_DEV_MODE": "0",
    }
    processes = ProcessStack(env, tmp_path / "logs", cwd=REPO)
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    try:
        for n, addr in enumerate(addrs):
            processes.start(f"kernel-{n}", "kernel", "--listen", addr)
        for addr in addrs:
            eventually(lambda a=addr: ready(a), timeout=30, message=f"kernel {addr} to be ready")
            assert check(addr, "job.swap").decision == ALLOW
        ConfigService(store, kernel_settings).put_policy_bundle(
            "secops/workflows", signer.embed(deny_bundle("secops-no-swap", "job.swap")), author="secops", message="no"
        )
        eventually(lambda: all(check(a, "job.swap").rule_id == "secops-no-swap" for a in addrs), timeout=2,
                   message="both kernels to apply the publish")

        def same_snapshot() -> list[dict[str, Any]] | None:
            found = read_kernel_statuses(store, kernel_settings)
            versions = {(s["version"], s["sha256"], s["status"]) for s in found}
            return found if len(found) == 2 and len(versions) == 1 else None

        both = eventually(same_snapshot, timeout=5, message="both kernels to report one snapshot")
        assert both[0]["status"] == "READY" and both[0]["version"] >= 2
        assert {a for a in addrs} == {s["addr"] for s in both}
        assert {tuple(list_snapshots(a)) for a in addrs} == {(both[0]["snapshot_id"],)}
    finally:
        logs = {name: processes.log(name)[-2000:] for name in processes.procs}
        processes.stop_all()
    assert all("Traceback" not in log for log in logs.values()), logs


# --- restarts: last-known-good ----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["redis", "file"])
def test_restart_with_a_broken_source_serves_the_last_known_good(
    kernel_settings: Settings, store: redis.Redis, tmp_path: Path, origin: str
) -> None:
    local = tmp_path / "lkg" / "policy.json"
    settings = dataclasses.replace(kernel_settings, policy_lkg_path=local if origin == "file" else None)
    with running(settings) as kernel:
        served = kernel.snapshot_id
    if origin == "file":
        assert oct(local.stat().st_mode & 0o777) == "0o600"
        store.delete(f"{settings.namespace}:kernel:lkg")  # only the local copy is left
    base = settings.policies_dir / "base.yaml"
    base.write_text(base.read_text() + "# edited after signing\n")
    with running(settings) as kernel:
        assert ready(kernel.address)
        resp = check(kernel.address, "job.danger.rm")
        assert (resp.decision, resp.rule_id, resp.policy_snapshot) == (DENY, "deny-destructive", served)
        info = status(store, settings, kernel)
        assert info is not None and (info["status"], info["stage"]) == ("DEGRADED", "verify")
        assert f"last-known-good ({origin}" in info["message"]


def test_restart_with_a_tampered_lkg_and_no_valid_source_is_not_ready(
    kernel_settings: Settings, store: redis.Redis
) -> None:
    with running(kernel_settings):
        pass
    key = f"{kernel_settings.namespace}:kernel:lkg"
    lkg = json.loads(store.get(key))  # type: ignore[arg-type]
    source = lkg["sources"][0]
    body = base64.b64decode(source["body"]).replace(b"decision: deny", b"decision: allow")
    source["body"] = base64.b64encode(body).decode()
    source["sha256"] = hashlib.sha256(body).hexdigest()  # a consistent record, with a wrong signature
    store.set(key, json.dumps(lkg))
    shutil.rmtree(kernel_settings.policies_dir)
    with running(kernel_settings) as kernel:
        assert not ready(kernel.address)
        resp = check(kernel.address, "job.danger.rm")
        assert (resp.decision, resp.rule_id) == (DENY, "POLICY_UNAVAILABLE")
        assert check(kernel.address, "job.echo").rule_id == "POLICY_UNAVAILABLE"
        info = status(store, kernel_settings, kernel)
        assert info is not None and (info["status"], info["stage"]) == ("NOT_READY", "fetch")
        assert "last-known-good from redis" in info["message"] and "refused at verify" in info["message"]


def test_kernel_started_not_ready_recovers_when_sources_appear(
    kernel_settings: Settings, signer: Signer, tmp_path: Path
) -> None:
    missing = tmp_path / "later"
    with running(dataclasses.replace(kernel_settings, policies_dir=missing)) as kernel:
        assert check(kernel.address, "job.echo").rule_id == "POLICY_UNAVAILABLE"
        missing.mkdir()
        signer.write(missing / "base.yaml", BASE)
        eventually(lambda: ready(kernel.address), timeout=10, message="the kernel to become ready")
        assert check(kernel.address, "job.echo").decision == ALLOW


# --- max snapshot age -------------------------------------------------------------------------------------


def test_snapshot_older_than_max_age_fails_closed(kernel_settings: Settings, store: redis.Redis) -> None:
    settings = dataclasses.replace(kernel_settings, policy_max_age_s=1.5)
    parked = settings.policies_dir.with_name("parked")
    with running(settings) as kernel:
        assert check(kernel.address, "job.echo").decision == ALLOW
        settings.policies_dir.rename(parked)  # sources unreadable: nothing re-verifies the snapshot
        stale = eventually(lambda: (r := check(kernel.address, "job.echo")).rule_id == "POLICY_STALE" and r,
                           timeout=10, message="the snapshot to go stale")
        assert stale.decision == DENY and stale.policy_snapshot == kernel.snapshot_id
        eventually(lambda: not ready(kernel.address), timeout=5, message="health NOT_SERVING")
        info = eventually(lambda: (i := status(store, settings, kernel)) and i["stage"] == "max_age" and i,
                          timeout=5, message="status max_age")
        assert info["status"] == "NOT_READY"
        assert any(a["code"] == "POLICY_STALE" for a in recent_alerts(store, settings.namespace))
        parked.rename(settings.policies_dir)
        eventually(lambda: check(kernel.address, "job.echo").decision == ALLOW, timeout=10, message="fresh again")
        assert ready(kernel.address)


# --- without Redis, and from a URL ------------------------------------------------------------------------


def test_files_only_kernel_loads_without_redis_but_allows_nothing_unaudited(kernel_settings: Settings) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    files_only = dataclasses.replace(kernel_settings, redis_url=dead, policy_config_disabled=True)
    with running(files_only) as kernel:
        assert ready(kernel.address)  # the policy loads from files alone
        answer = check(kernel.address, "job.echo")  # ...but the decision audit needs Redis: fail closed
        assert answer.decision != ALLOW and answer.reason.startswith("AUDIT_UNAVAILABLE")
    with running(dataclasses.replace(files_only, policy_config_disabled=False)) as kernel:
        resp = check(kernel.address, "job.echo")  # config-service source unreachable: fail closed
        assert resp.rule_id == "POLICY_UNAVAILABLE" and "fetch" in resp.reason


@contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def test_policy_from_a_url_with_its_detached_signature(kernel_settings: Settings, store: redis.Redis) -> None:
    folder = kernel_settings.policies_dir
    with http_folder(folder) as base_url:
        settings = dataclasses.replace(kernel_settings, policy_url=f"{base_url}/base.yaml")
        with running(settings) as kernel:
            assert check(kernel.address, "job.danger.rm").rule_id == "deny-destructive"
        (folder / "base.yaml.sig").unlink()
        with running(settings) as kernel:
            assert kernel.reloader is not None
            assert (kernel.reloader.status().status, kernel.reloader.status().stage) == ("DEGRADED", "verify")
            assert "unsigned" in kernel.reloader.status().message  # the last-known-good serves meanwhile
        store.delete(f"{settings.namespace}:kernel:lkg")
        with running(settings) as kernel:
            resp = check(kernel.address, "job.echo")
            assert resp.rule_id == "POLICY_UNAVAILABLE" and "verify" in resp.reason

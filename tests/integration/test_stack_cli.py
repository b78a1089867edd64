"""`coretex up` / `coretex down` as a newcomer runs them: the demo job's result is printed, and
`down` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from coretex.processes import free_port, group_alive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coretex", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_up_starts_its_own_redis_runs_the_demo_and_down_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
    env.update({
        # nothing answers on this port, so `up` must start a redis-server of its own
        "CORETEX_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CORETEX_NAMESPACE": "stacktest",
        "CORETEX_KERNEL_ADDR": f"127.0.0.1:{free_port()}",
        "CORETEX_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "COLUMNS": "200",
    })
    pids: dict[str, int] = {}
    try:
        up = _run(["up", "--state-dir", str(state)], env)
        pids = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in (state / "logs").glob("*.log"))
        assert up.returncode == 0, up.stdout + up.stderr + logs
        assert "echo job SUCCEEDED" in up.stdout
        assert '"message": "hello from coretex"' in up.stdout
        assert "demo workflow SUCCEEDED" in up.stdout
        assert "greet succeeded, is_big succeeded, announce succeeded, shout succeeded" in up.stdout
        assert '"greeting": "hello, coretex"' in up.stdout
        assert set(pids) == {"redis", "kernel", "control", "beat", "worker-echo", "gateway"}
        assert all(group_alive(pid) for pid in pids.values())

        # The printed walkthrough works: submit with the dev key over real HTTP and read it back.
        stack = json.loads((state / "stack.json").read_text())
        key = (state / "api-key").read_text().strip()
        assert key not in (state / "stack.json").read_text()
        assert key not in (state / "api-keys.yaml").read_text()  # only its hash is stored
        request = urllib.request.Request(
            f"http://{stack['CORETEX_GATEWAY_ADDR']}/api/v1/jobs", method="POST",
            data=json.dumps({"topic": "job.echo", "input": {"hi": 1}}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            assert "job_id" in json.loads(response.read())

        status_request = urllib.request.Request(f"http://{stack['CORETEX_GATEWAY_ADDR']}/api/v1/status",
                                                headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(status_request, timeout=10) as response:
            kernel = json.loads(response.read())["components"]["kernel"]
        assert kernel["ok"] is True
        assert [k["status"] for k in kernel["instances"]] == ["READY"]  # dev mode: unsigned base policy

        # coretexctl against the same gateway: JSON output, exit codes 0 / 1 (API said no) / 3 (unreachable)
        ctl = [sys.executable, "-m", "coretex.cli.ctl", "--gateway", f"http://{stack['CORETEX_GATEWAY_ADDR']}",
               "--api-key", key]
        done = subprocess.run([*ctl, "jobs", "submit", "job.echo", "--input", '{"via": "ctl"}', "--wait", "-o", "json"],
                              env=env, text=True, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "SUCCEEDED" and json.loads(done.stdout)["result"] == {"via": "ctl"}
        missing = subprocess.run([*ctl, "jobs", "get", "no-such-job"], env=env, text=True, capture_output=True,
                                 timeout=60)
        assert missing.returncode == 1 and "404" in missing.stderr
        nowhere = subprocess.run([*ctl, "jobs", "submit", "job.nowhere", "--wait", "-o", "json"], env=env, text=True,
                                 capture_output=True, timeout=60)
        assert nowhere.returncode == 1  # the job did not succeed
        dead_id = json.loads(nowhere.stdout)["job_id"]
        listed = subprocess.run([*ctl, "dlq", "list", "-o", "json"], env=env, text=True, capture_output=True,
                                timeout=60)
        assert listed.returncode == 0 and dead_id in [e["job_id"] for e in json.loads(listed.stdout)]
        history = subprocess.run([*ctl, "jobs", "history", dead_id, "-o", "json"], env=env, text=True,
                                 capture_output=True, timeout=60)
        assert [e["to"] for e in json.loads(history.stdout)][-1] == "FAILED"
        deleted = subprocess.run([*ctl, "dlq", "delete", dead_id], env=env, text=True, capture_output=True, timeout=60)
        assert deleted.returncode == 0 and "deleted" in deleted.stdout
        unreachable = subprocess.run([sys.executable, "-m", "coretex.cli.ctl", "--gateway",
                                      f"http://127.0.0.1:{free_port()}", "--api-key", key, "status"],
                                     env=env, text=True, capture_output=True, timeout=60)
        assert unreachable.returncode == 3 and "cannot reach the gateway" in unreachable.stderr

        again = _run(["up", "--state-dir", str(state)], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
    finally:
        down = _run(["down", "--state-dir", str(state)], env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    leftovers = {name: pid for name, pid in pids.items() if group_alive(pid)}
    assert not leftovers, f"still running after down: {leftovers}"
    assert not list((state / "pids").glob("*.pid"))

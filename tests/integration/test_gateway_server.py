"""``coretex gateway`` under gunicorn, as a real process: workers boot, auth and submit work."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from coretex.gateway.auth import new_api_key, write_key_file
from coretex.services import Services
from coretex.settings import Settings
from coretex.testing import ProcessStack, free_port, wait_for_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _http(url: str, key: str | None = None, body: Any = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get_content_type(), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), json.loads(exc.read())


def test_gateway_process_serves_the_api(settings: Settings, tmp_path: Path) -> None:
    key = new_api_key()
    keys_file = tmp_path / "keys.yaml"
    write_key_file(keys_file, [{"name": "ci", "key": key, "tenant": "acme", "role": "operator"}])
    port = free_port()
    stack = ProcessStack({"CORETEX_REDIS_URL": settings.redis_url, "CORETEX_NAMESPACE": settings.namespace,
                          "CORETEX_API_KEYS_FILE": str(keys_file)}, tmp_path / "logs", cwd=REPO)
    services = Services(settings)
    try:
        stack.start("gateway", "gateway", "--listen", f"127.0.0.1:{port}")
        wait_for_port("127.0.0.1", port, timeout=30)
        base = f"http://127.0.0.1:{port}"

        assert _http(f"{base}/health") == (200, "application/json", {"status": "ok"})
        status, content_type, problem = _http(f"{base}/api/v1/jobs/x")
        assert (status, content_type, problem["status"]) == (401, "application/problem+json", 401)
        status, _, receipt = _http(f"{base}/api/v1/jobs", key, {"topic": "job.echo", "input": {"n": 1}})
        assert status == 202
        status, _, job = _http(f"{base}/api/v1/jobs/{receipt['job_id']}", key)
        # No kernel runs here: the gateway's pipeline fails closed and holds the job.
        assert (status, job["state"], job["tenant_id"]) == (200, "SCHEDULED", "acme") == (200, receipt["state"], "acme")
        assert job["pending_reason"].startswith("kernel_unavailable")
        assert services.jobs.get(receipt["job_id"]).meta.actor_id == "ci"
    finally:
        stack.stop_all()
        services.close()
    assert '"POST /api/v1/jobs HTTP/1.1" 202' in stack.log("gateway")  # access log on stdout

"""Config sections that take effect live: artifact retention TTLs and per-tenant input limits."""

from __future__ import annotations

import pytest

from coretex.model.job import JobMeta
from coretex.scheduler.submit import InputTooLargeError, SubmitRequest, submit_job
from coretex.services import Services
from coretex.store.artifacts import ArtifactMetadata
from coretex.testing import eventually

pytestmark = pytest.mark.integration


def test_retention_ttls_come_from_the_effective_config_and_follow_overlays(services: Services) -> None:
    base = services.live_config.section("retention")
    assert base["audit"] == 365 * 86400  # config/retention.yaml
    ptr = services.artifacts.put_artifact(b"x", ArtifactMetadata(tenant="t", retention="short"))
    assert abs(services.redis.ttl(f"{services.settings.namespace}:art:{ptr.id}") - base["short"]) <= 2

    snapshot = services.config.set("pack", "fast-expiry", {"retention": {"short": 600}}, author="t", message="m")
    eventually(lambda: services.live_config.snapshot.version == snapshot.version, timeout=2,
               message="the live config to follow the overlay")

    ptr = services.artifacts.put_artifact(b"y", ArtifactMetadata(tenant="t", retention="short"))
    assert 590 <= services.redis.ttl(f"{services.settings.namespace}:art:{ptr.id}") <= 600


def test_tenant_override_of_max_input_bytes_is_enforced_at_submit(services: Services) -> None:
    services.config.set("tenant", "small", {"limits": {"max_input_bytes": 64}}, author="t", message="m")
    big = {"blob": "x" * 100}

    def stored_keys() -> int:
        return len(list(services.redis.scan_iter(f"{services.settings.namespace}:*", count=1000)))

    before = stored_keys()
    with pytest.raises(InputTooLargeError, match="limit is 64 bytes"):
        submit_job(services, SubmitRequest("job.echo", big, JobMeta(tenant_id="small")))
    assert stored_keys() == before  # refused before anything was written
    assert submit_job(services, SubmitRequest("job.echo", big, JobMeta(tenant_id="other"))).created

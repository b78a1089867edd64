"""The beat tick's housekeeping, run in-process on a real redis-server."""

from __future__ import annotations

import time

import pytest

from coretex.bus import TICK_TASK
from coretex.celery_app import create_app
from coretex.errors import NotFoundError
from coretex.services import Services
from coretex.settings import Settings
from coretex.store.artifacts import ArtifactMetadata
from coretex.testing import eventually

pytestmark = pytest.mark.integration


def test_tick_records_liveness_and_sweeps_expired_artifacts(settings: Settings) -> None:
    app = create_app(settings)
    services = Services(settings, app)
    overlay = services.config.set("pack", "tick-test", {"retention": {"short": 1}}, author="test", message="1 s")
    eventually(lambda: services.live_config.snapshot.version == overlay.version, timeout=2,
               message="the live config to follow the overlay")
    short = services.artifacts.put_artifact(b"temp log", ArtifactMetadata(tenant="acme", retention="short"))
    audit = services.artifacts.put_artifact(b"evidence", ArtifactMetadata(tenant="acme", retention="audit"))
    tick = app.tasks[TICK_TASK]
    index = f"{settings.namespace}:art:expiry"

    def swept() -> bool:
        tick()
        return services.redis.zscore(index, short.id) is None

    eventually(swept, timeout=5, message="the tick to sweep the expired short artifact")

    with pytest.raises(NotFoundError):
        services.artifacts.get_artifact(short, "acme")
    assert services.artifacts.get_artifact(audit, "acme") == b"evidence"
    last_tick = float(services.redis.get(f"{settings.namespace}:beat:last_tick"))
    assert abs(time.time() - last_tick) < 5
    services.close()
    app.close()

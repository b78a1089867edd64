"""The SDK's lease keeper: one thread per process renews every running attempt's lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from coretex.scheduler.cancel import cancel_key
from coretex.sdk._leases import LeaseKeeper
from coretex.services import Services
from coretex.settings import Settings
from coretex.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = Services(replace(settings, lease_s=0.6))  # renewals every 0.2 s
    yield svc
    svc.close()


def _expiry(services: Services, job_id: str, attempt: int) -> float:
    score = services.redis.zscore(f"{services.settings.namespace}:leases", f"{job_id}:{attempt}")
    assert score is not None, f"no lease for {job_id}:{attempt}"
    return float(score)


def test_every_kept_attempt_is_renewed_and_a_dropped_one_is_not(services: Services) -> None:
    keeper = LeaseKeeper()
    for job_id in ("a", "b"):
        services.leases.hold(job_id, 1, 0.0)  # taken long ago: only a renewal moves it
        keeper.keep(services, job_id, 1, threading.Event())

    eventually(lambda: _expiry(services, "a", 1) > 0 and _expiry(services, "b", 1) > 0, timeout=3,
               message="both leases to be renewed")
    keeper.drop("a", 1)
    dropped_at = _expiry(services, "a", 1)
    renewed = _expiry(services, "b", 1)

    eventually(lambda: _expiry(services, "b", 1) > renewed, timeout=3, message="the kept lease to be renewed again")
    assert _expiry(services, "a", 1) == dropped_at
    keeper.drop("b", 1)


def test_a_cancel_request_reaches_the_attempt_within_one_renewal(services: Services) -> None:
    keeper = LeaseKeeper()
    cancelled, other = threading.Event(), threading.Event()
    keeper.keep(services, "c", 2, cancelled)
    keeper.keep(services, "d", 1, other)

    services.redis.set(cancel_key(services, "c"), "signal")

    assert cancelled.wait(timeout=2)
    assert not other.is_set()
    keeper.drop("c", 2)
    keeper.drop("d", 1)

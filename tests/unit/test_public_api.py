"""The deliberate public surface of the packages pack authors import: changing it is a decision."""

from __future__ import annotations

import coretex.sdk
import coretex.testing


def test_sdk_public_names_are_pinned() -> None:
    assert sorted(coretex.sdk.__all__) == ["HandlerError", "JobCancelledError", "JobContext", "Worker"]
    assert all(hasattr(coretex.sdk, name) for name in coretex.sdk.__all__)


def test_testing_public_names_are_pinned() -> None:
    assert sorted(coretex.testing.__all__) == [
        "HandlerRun", "ProcessStack", "RedisServer", "eventually", "free_port", "port_open", "run_handler",
        "wait_for_port",
    ]
    assert all(hasattr(coretex.testing, name) for name in coretex.testing.__all__)

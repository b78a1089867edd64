"""Shared fixtures: one real redis-server per test session, a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from coretex.services import Services
from coretex.settings import Settings, load_settings
from coretex.testing import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own on a free port (never 6379, never shared data)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A unique key/queue namespace so tests never see each other's keys or messages."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(redis_server: RedisServer, namespace: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
    env.update({"CORETEX_REDIS_URL": redis_server.url, "CORETEX_NAMESPACE": namespace})
    return load_settings(env)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """This process's wiring (stores, kernel client, Celery app) on the test's namespace, closed after."""
    svc = Services(settings)
    yield svc
    if "app" in svc.__dict__:
        svc.app.close()
    svc.close()

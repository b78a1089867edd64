"""Redis connections, Lua script loading and error translation for every store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis

from coretex.errors import StoreError
from coretex.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    """A client on the state store; ``decode_responses`` so stores deal in ``str``."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=15,
        retry_on_timeout=True,
    )


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn any redis-py error into a :class:`StoreError` that says what we were doing."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreError(f"{action}: {exc.__class__.__name__}: {exc}") from exc


Pipeline = redis.client.Pipeline
"""Commands of several stores queued to go in one round trip: methods that take ``client=`` queue
their command on it instead of sending it, and a method that takes ``along=`` sends the queue
together with its own command (they run in order, not as a transaction)."""


def load_script(client: redis.Redis, name: str) -> Any:
    """Register ``lua/<name>.lua`` once per client; redis-py handles EVALSHA and reloads."""
    source = resources.files("coretex.store").joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)

"""Redis connections, Lua script loading and error translation for every store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


class LuaScript:
    """One of our Lua scripts. Called on its own it runs by EVALSHA (redis-py loads it again if
    Redis lost it); queued on a pipeline it goes as EVAL with its source, because redis-py would
    otherwise spend a round trip of its own on SCRIPT EXISTS before every such pipeline."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.source = source
        self._script = client.register_script(source)

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    @property
    def script(self) -> str:
        return self.source

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        if isinstance(client, Pipeline):
            return client.eval(self.source, len(keys), *keys, *args)
        return self._script(keys=keys, args=args, client=client)


def load_script(client: redis.Redis, name: str) -> Any:
    """Register ``lua/<name>.lua`` once per client (see :class:`LuaScript`)."""
    source = resources.files("coretex.store").joinpath("lua", f"{name}.lua").read_text()
    return LuaScript(client, source)

"""Context and result payloads behind CAP pointers (``redis://ctx:<id>``, ``redis://res:<id>``).

Keys:
    <ns>:ctx:<id>   hash  {tenant, content_type, sha256, size, data, created_at}   TTL result_ttl
    <ns>:res:<id>   hash  same shape

Pointers are immutable: the first write wins (``lua/put_once.lua``), so a job that runs twice
cannot replace the result the control plane already applied. A pointer of another tenant reads
as "not found": callers cannot tell it exists.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from coretex.errors import NotFoundError
from coretex.model.canonical import canonical_json as canonical_json
from coretex.protocol.pointers import ContextPointer, ResultPointer, parse_pointer
from coretex.settings import Settings
from coretex.store._redis import Pipeline, load_script, redis_errors

JSON_CONTENT_TYPE = "application/json"


class PointerStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._ttl = settings.result_ttl_s
        self._put_once = load_script(client, "put_once")

    def put_context(self, job_id: str, tenant_id: str, value: Any, *, client: Pipeline | None = None) -> ContextPointer:
        pointer = ContextPointer(job_id)
        self._put(pointer.kind, pointer.id, tenant_id, value, client)
        return pointer

    def put_result(self, job_id: str, tenant_id: str, value: Any, *, client: Pipeline | None = None) -> ResultPointer:
        pointer = ResultPointer(job_id)
        self._put(pointer.kind, pointer.id, tenant_id, value, client)
        return pointer

    def get_json(self, uri: str, tenant_id: str) -> Any:
        """Dereference a ctx:/res: pointer owned by ``tenant_id`` and decode its JSON."""
        with redis_errors(f"read {uri}"):
            raw = self._r.hmget(self._pointer_key(uri), "tenant", "data")
        return _owned_json(uri, raw, tenant_id)

    def get_json_queued(self, uri: str, client: Pipeline) -> Callable[[Any, str], Any]:
        """Queue the read of ``uri`` on ``client``; the returned function decodes its reply for the
        tenant it is given (NotFoundError for another tenant's pointer, as :meth:`get_json`)."""
        client.hmget(self._pointer_key(uri), "tenant", "data")
        return lambda raw, tenant_id: _owned_json(uri, raw, tenant_id)

    def _pointer_key(self, uri: str) -> str:
        pointer = parse_pointer(uri)
        return f"{self._ns}:{pointer.kind}:{pointer.id}"

    def sha256(self, uri: str, tenant_id: str) -> str:
        """The sha256 of a pointer's canonical JSON content, without reading the content."""
        pointer = parse_pointer(uri)
        with redis_errors(f"read {uri}"):
            owner, digest = self._r.hmget(f"{self._ns}:{pointer.kind}:{pointer.id}", "tenant", "sha256")
        if owner is None or digest is None or owner != tenant_id:
            raise NotFoundError(f"{uri} not found")
        return str(digest)

    def _put(self, kind: str, pointer_id: str, tenant_id: str, value: Any, client: Pipeline | None = None) -> bool:
        """Write once; True if this call wrote it (always False when only queued on ``client``)."""
        data = canonical_json(value)
        encoded = data.encode()
        record = {
            "tenant": tenant_id,
            "content_type": JSON_CONTENT_TYPE,
            "sha256": hashlib.sha256(encoded).hexdigest(),
            "size": str(len(encoded)),
            "data": data,
            "created_at": repr(time.time()),
        }
        with redis_errors(f"write {kind}:{pointer_id}"):
            written = self._put_once(keys=[f"{self._ns}:{kind}:{pointer_id}"], args=[json.dumps(record), self._ttl],
                                     client=client or self._r)
        return client is None and bool(written)


def _owned_json(uri: str, raw: Any, tenant_id: str) -> Any:
    owner, data = raw[0], raw[1]
    if owner is None or data is None or owner != tenant_id:
        raise NotFoundError(f"{uri} not found")
    return json.loads(data)

"""Workflow templates, versioned: every save of a changed document is a new immutable version.

Keys:
    <ns>:wf:<tenant>:<id>   hash  latest, v<N> (document JSON), sha:<N>, at:<N>, by:<N>
    <ns>:wfs:<tenant>       zset  workflow id -> last save time

A run keeps the version it started with; saving a new version never changes a running run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from coretex.errors import NotFoundError
from coretex.model.canonical import canonical_json, sha256_hex
from coretex.settings import Settings
from coretex.store._redis import load_script, redis_errors

_VERSION_PLACEHOLDER = "__VERSION__"


@dataclass(frozen=True)
class SavedWorkflow:
    id: str
    tenant: str
    version: int
    document: dict[str, Any]
    saved_at: float
    saved_by: str
    created: bool = True
    """False when the document equalled the latest version, which is returned instead."""


class WorkflowStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._save = load_script(client, "workflow_save")

    def _key(self, tenant: str, workflow_id: str) -> str:
        return f"{self._ns}:wf:{tenant}:{workflow_id}"

    def save(self, tenant: str, document: dict[str, Any], saved_by: str) -> SavedWorkflow:
        """Store ``document`` (already validated) as the next version of its workflow."""
        body = {**document, "tenant": tenant, "version": _VERSION_PLACEHOLDER}
        text = canonical_json(body)
        with redis_errors(f"save workflow {document['id']}"):
            version, status = self._save(
                keys=[self._key(tenant, document["id"]), f"{self._ns}:wfs:{tenant}"],
                args=[document["id"], text, sha256_hex(text), repr(time.time()), saved_by],
            )
        saved = self.get(tenant, document["id"], int(version))
        return SavedWorkflow(saved.id, tenant, saved.version, saved.document, saved.saved_at, saved.saved_by,
                             created=status == "created")

    def get(self, tenant: str, workflow_id: str, version: int | None = None) -> SavedWorkflow:
        key = self._key(tenant, workflow_id)
        with redis_errors(f"read workflow {workflow_id}"):
            if version is None:
                latest = cast(str | None, self._r.hget(key, "latest"))
                if latest is None:
                    raise NotFoundError(f"workflow {workflow_id} not found")
                version = int(latest)
            doc, at, by = cast(list[str | None], self._r.hmget(key, [f"v{version}", f"at:{version}", f"by:{version}"]))
        if doc is None:
            raise NotFoundError(f"workflow {workflow_id} has no version {version}")
        return SavedWorkflow(workflow_id, tenant, version, json.loads(doc), float(at or 0), by or "")

    def versions(self, tenant: str, workflow_id: str) -> list[int]:
        with redis_errors(f"read versions of workflow {workflow_id}"):
            latest = cast(str | None, self._r.hget(self._key(tenant, workflow_id), "latest"))
        if latest is None:
            raise NotFoundError(f"workflow {workflow_id} not found")
        return list(range(1, int(latest) + 1))

    def list(self, tenant: str, limit: int = 200) -> list[SavedWorkflow]:
        with redis_errors("list workflows"):
            ids = cast(list[str], self._r.zrevrange(f"{self._ns}:wfs:{tenant}", 0, limit - 1))
        return [self.get(tenant, workflow_id) for workflow_id in ids]

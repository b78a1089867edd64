"""Approval requests of parked jobs.

Keys:
    <ns>:approval:<job_id>       hash  an Approval (status pending -> approved | rejected, once)
    <ns>:approvals:pending:<tenant>  zset  job ids awaiting a decision, scored by request time

The decision is one Lua call (``lua/approval_decide.lua``): it applies only to a pending approval,
so two approvers racing cannot both decide.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, cast

import redis

from coretex.errors import NotFoundError, StoreError
from coretex.model.approval import Approval, ApprovalStatus
from coretex.settings import Settings
from coretex.store._redis import load_script, redis_errors


class ApprovalAlreadyDecidedError(StoreError):
    code = "approval_already_decided"


class ApprovalStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._ttl = settings.result_ttl_s
        self._decide = load_script(client, "approval_decide")

    def _key(self, job_id: str) -> str:
        return f"{self._ns}:approval:{job_id}"

    def _pending(self, tenant_id: str) -> str:
        return f"{self._ns}:approvals:pending:{tenant_id}"

    def request(self, approval: Approval) -> None:
        """Record a pending approval (replacing an earlier request for the same job, if any)."""
        record: dict[Any, Any] = {k: str(v) for k, v in asdict(approval).items()}
        with redis_errors(f"request approval of job {approval.job_id}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._key(approval.job_id))
            pipe.hset(self._key(approval.job_id), mapping=record)
            pipe.expire(self._key(approval.job_id), self._ttl)
            pipe.zadd(self._pending(approval.tenant_id), {approval.job_id: approval.requested_at})
            pipe.execute()

    def get(self, job_id: str) -> Approval:
        with redis_errors(f"read approval of job {job_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._key(job_id)))
        if not raw:
            raise NotFoundError(f"no approval for job {job_id}")
        return _decode(raw)

    def pending(self, tenant_id: str, limit: int = 100) -> list[Approval]:
        with redis_errors("list pending approvals"):
            ids = cast(list[str], self._r.zrange(self._pending(tenant_id), 0, limit - 1))
        found = []
        for job_id in ids:
            try:
                found.append(self.get(job_id))
            except NotFoundError:  # expired with its TTL; drop it from the index
                self._r.zrem(self._pending(tenant_id), job_id)
        return found

    def decide(self, job_id: str, tenant_id: str, status: ApprovalStatus, by: str, note: str, now: float) -> Approval:
        with redis_errors(f"decide approval of job {job_id}"):
            outcome = self._decide(
                keys=[self._key(job_id), self._pending(tenant_id)],
                args=[job_id, status.value, by, note, repr(now)],
            )
        if outcome == "missing":
            raise NotFoundError(f"no approval for job {job_id}")
        if outcome != "ok":
            raise ApprovalAlreadyDecidedError(f"the approval of job {job_id} was already {outcome}")
        return self.get(job_id)


def _decode(raw: dict[str, str]) -> Approval:
    values: dict[str, Any] = {}
    for f in fields(Approval):
        value = raw.get(f.name, "")
        if f.name == "status":
            values[f.name] = ApprovalStatus(value)
        elif f.name in ("requested_at", "decided_at"):
            values[f.name] = float(value or 0)
        else:
            values[f.name] = value
    return Approval(**values)

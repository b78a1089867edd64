"""Live pack workers, from the CAP ``Heartbeat`` packets they send every few seconds.

Keys:
    <ns>:worker:<worker_id>          string  the latest BusPacket{heartbeat} (base64), gone after 3 missed beats
    <ns>:worker:<worker_id>:active   string  jobs the worker is running now (INCR/DECR by its processes)
    <ns>:workers                     zset    worker id -> last heartbeat time (pruned when read)
    <ns>:workers:pool:<pool>         zset    the same, per pool: "is anyone consuming this pool?" in one call
"""

from __future__ import annotations

import base64
import time
from typing import cast

import redis

from coretex.agent.v1 import buspacket_pb2, heartbeat_pb2
from coretex.errors import EnvelopeError
from coretex.protocol.envelope import decode_packet, encode_packet
from coretex.settings import Settings
from coretex.store._redis import Pipeline, redis_errors

MISSED_BEATS = 3
DRY_RUN_CAPABILITY = "dry-run:"
"""Heartbeat capability prefix: ``dry-run:<topic>`` = this worker simulates ``topic`` in dry runs."""
HEARTBEAT_INTERVAL_S = 5.0
"""CAP's recommended 2-5 s; three missed beats and a worker counts as gone."""


class WorkerRegistry:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._alive_until: dict[tuple[str, float], float] = {}

    def beat(self, packet: buspacket_pb2.BusPacket, interval_s: float) -> None:
        worker_id = packet.heartbeat.worker_id
        with redis_errors(f"record heartbeat of {worker_id}"):
            pipe = self._r.pipeline(transaction=True)
            # base64: our clients decode responses as text, and protobuf bytes are not UTF-8
            pipe.set(f"{self._ns}:worker:{worker_id}", base64.b64encode(encode_packet(packet)).decode(),
                     px=int(interval_s * MISSED_BEATS * 1000))
            pipe.zadd(f"{self._ns}:workers", {worker_id: time.time()})
            pipe.zadd(f"{self._ns}:workers:pool:{packet.heartbeat.pool}", {worker_id: time.time()})
            pipe.execute()

    def pool_alive(self, pool: str, now: float, interval_s: float) -> bool:
        """Whether any worker of ``pool`` sent a heartbeat within the last three intervals.

        The newest beat says until when the pool counts as alive, so this process asks Redis again
        only after that (every dispatch asks)."""
        if now < self._alive_until.get((pool, interval_s), 0.0):
            return True
        with redis_errors(f"check workers of pool {pool}"):
            newest = cast(list[tuple[str, float]],
                          self._r.zrevrange(f"{self._ns}:workers:pool:{pool}", 0, 0, withscores=True))
        until = newest[0][1] + interval_s * MISSED_BEATS if newest else 0.0
        self._alive_until[(pool, interval_s)] = until
        return now < until

    def simulates(self, pool: str, topic: str, now: float, interval_s: float) -> bool:
        """Whether a live worker of ``pool`` declares dry-run support for ``topic`` (capability
        ``dry-run:<topic>`` in its heartbeat)."""
        with redis_errors(f"check dry-run support of pool {pool}"):
            ids = cast(list[str], self._r.zrangebyscore(f"{self._ns}:workers:pool:{pool}",
                                                        now - interval_s * MISSED_BEATS, "+inf"))
            raw = self._r.mget([f"{self._ns}:worker:{i}" for i in ids]) if ids else []
        wanted = f"{DRY_RUN_CAPABILITY}{topic}"
        for data in raw:
            if data is None:
                continue
            try:
                beat = decode_packet(base64.b64decode(data), expect="heartbeat")
            except (EnvelopeError, ValueError):
                continue
            if wanted in beat.heartbeat.capabilities:
                return True
        return False

    def active_jobs(self, worker_id: str) -> int:
        with redis_errors("read active jobs"):
            return int(cast(str | None, self._r.get(f"{self._ns}:worker:{worker_id}:active")) or 0)

    def job_started(self, worker_id: str, *, client: Pipeline | None = None) -> None:
        with redis_errors("count active job"):
            (client or self._r).incr(f"{self._ns}:worker:{worker_id}:active")

    def job_finished(self, worker_id: str, *, client: Pipeline | None = None) -> None:
        with redis_errors("count active job"):
            (client or self._r).decr(f"{self._ns}:worker:{worker_id}:active")

    def live(self, pool: str | None = None) -> list[heartbeat_pb2.Heartbeat]:
        """Heartbeats of workers that beat recently (optionally of one pool), newest first."""
        with redis_errors("list workers"):
            ids = cast(list[str], self._r.zrevrange(f"{self._ns}:workers", 0, 999))
            raw = self._r.mget([f"{self._ns}:worker:{i}" for i in ids]) if ids else []
        found, gone = [], []
        for worker_id, data in zip(ids, raw, strict=True):
            if data is None:
                gone.append(worker_id)
                continue
            try:
                beat = decode_packet(base64.b64decode(data), expect="heartbeat")
            except (EnvelopeError, ValueError):
                continue
            if pool is None or beat.heartbeat.pool == pool:
                found.append(beat.heartbeat)
        if gone:
            with redis_errors("prune workers"):
                self._r.zrem(f"{self._ns}:workers", *gone)
        return found

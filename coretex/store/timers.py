"""Timers fired by the beat tick: retry backoffs and job deadlines (never Celery ETAs, which the
Redis transport re-delivers after its visibility timeout).

Keys:
    <ns>:timers   zset  "<kind>:<job_id>:<attempt>" -> due time (seconds since epoch)

A timer is popped by exactly one tick (``lua/zset_pop_due.lua``); the action it triggers checks
the job's attempt, so a timer that outlived its attempt does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from coretex.settings import Settings
from coretex.store._redis import Pipeline, load_script, redis_errors

RETRY = "retry"
DEADLINE = "deadline"


@dataclass(frozen=True)
class Timer:
    kind: str
    job_id: str
    attempt: int
    due: float

    @property
    def member(self) -> str:
        return f"{self.kind}:{self.job_id}:{self.attempt}"


class TimerStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._key = f"{settings.namespace}:timers"
        self._pop = load_script(client, "zset_pop_due")

    def schedule(self, timer: Timer, *, client: Pipeline | None = None) -> None:
        with redis_errors(f"schedule {timer.member}"):
            (client or self._r).zadd(self._key, {timer.member: timer.due})

    def cancel(self, kind: str, job_id: str, attempt: int, *, client: Pipeline | None = None) -> None:
        with redis_errors(f"cancel {kind} timer of job {job_id}"):
            (client or self._r).zrem(self._key, f"{kind}:{job_id}:{attempt}")

    def due(self, kind: str, job_id: str, attempt: int) -> float | None:
        """When the timer fires, or None when there is no such timer."""
        with redis_errors(f"read {kind} timer of job {job_id}"):
            score = self._r.zscore(self._key, f"{kind}:{job_id}:{attempt}")
        return None if score is None else float(score)

    def pop_due(self, now: float, limit: int = 500) -> list[Timer]:
        with redis_errors("pop due timers"):
            flat = cast(list[str], self._pop(keys=[self._key], args=[repr(now), limit]))
        timers = []
        for member, score in zip(flat[::2], flat[1::2], strict=True):
            kind, rest = member.split(":", 1)
            job_id, attempt = rest.rsplit(":", 1)
            timers.append(Timer(kind, job_id, int(attempt), float(score)))
        return timers

    def pending(self) -> int:
        with redis_errors("count timers"):
            return int(self._r.zcard(self._key))

"""Job news: a stream that tells the workflow engine a run's job ended, written in the same atomic
step that ends it.

Keys:
    <ns>:engine:job_news   stream  one entry {job_id, run_id, result_ptr} per move of a run's job to a terminal state or
                                   APPROVAL_REQUIRED (``lua/job_transition.lua`` appends it); read by
                                   the consumer group ``engine`` (MAXLEN ~ ``NEWS_MAXLEN``)

Why a stream and not a Celery message: the entry is part of the job's own transition, so it can
neither be lost nor arrive before the state it announces, and a control worker blocked on the
group hears of it within one Redis round trip instead of a queue hop. Each entry is acknowledged
once handled; one whose reader died stays pending and the tick claims it again
(:meth:`JobNews.claim_stale`). Handling is idempotent (the engine reads the job record itself and
ignores news it already applied), so a redelivered entry changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from coretex.settings import Settings
from coretex.store._redis import redis_errors

GROUP = "engine"
NEWS_MAXLEN = 100_000
"""Entries kept; an entry trimmed before anyone read it is caught by the engine's reconcile."""
IDLE_CONSUMER_MS = 3_600_000
"""A reader with nothing pending and silent this long (a process that exited) is forgotten."""


@dataclass(frozen=True)
class News:
    entry_id: str
    job_id: str
    run_id: str = ""
    result_ptr: str = ""
    """What the job's record said when the news was written: hints that let the reader fetch the
    job, its output and its run in one round trip (the record itself stays the authority)."""


def news_key(namespace: str) -> str:
    return f"{namespace}:engine:job_news"


class JobNews:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self.key = news_key(settings.namespace)

    def ensure_group(self) -> None:
        """Create the ``engine`` group (and the stream) if missing; it starts at the stream's oldest
        entry, so news written before any reader existed is still handled."""
        with redis_errors("create the job news group"):
            try:
                self._r.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, consumer: str, *, block_ms: int, count: int = 16) -> list[News]:
        """New entries for ``consumer``, waiting up to ``block_ms`` for one; they stay pending until
        :meth:`ack`. A lost group (Redis restarted empty) is created again."""
        reply = self._grouped(lambda: self._r.xreadgroup(GROUP, consumer, {self.key: ">"}, count=count,
                                                         block=block_ms))
        return [_news(entry) for _stream, entries in (reply or []) for entry in entries]

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            with redis_errors("acknowledge job news"):
                self._r.xack(self.key, GROUP, *entry_ids)

    def claim_stale(self, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[News]:
        """Entries a reader took but did not acknowledge within ``min_idle_ms`` (it died), now
        ``consumer``'s. Entries trimmed away meanwhile are acknowledged and dropped."""
        reply = self._grouped(lambda: self._r.xautoclaim(self.key, GROUP, consumer, min_idle_ms,
                                                         start_id="0-0", count=count))
        _next, entries, deleted = (reply or ["0-0", [], []])[:3]
        self.ack(list(deleted))
        self._forget_idle_consumers()
        return [_news(entry) for entry in entries if entry and entry[1]]

    def pending(self) -> int:
        """How many entries were read but not yet acknowledged."""
        info = cast(dict[str, Any], self._grouped(lambda: self._r.xpending(self.key, GROUP)))
        return int(info["pending"]) if info else 0

    def _forget_idle_consumers(self) -> None:
        with redis_errors("list job news readers"):
            for reader in self._r.xinfo_consumers(self.key, GROUP):
                if int(reader["pending"]) == 0 and int(reader["idle"]) > IDLE_CONSUMER_MS:
                    self._r.xgroup_delconsumer(self.key, GROUP, reader["name"])

    def _grouped(self, command: Any) -> Any:
        with redis_errors("read job news"):
            try:
                return command()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
            self.ensure_group()
            return command()


def _news(entry: Any) -> News:
    entry_id, fields = entry
    return News(str(entry_id), str(fields.get("job_id", "")), str(fields.get("run_id", "")),
                str(fields.get("result_ptr", "")))

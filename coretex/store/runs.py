"""Workflow runs: state, timeline, event log, outbox and timers, committed together.

Keys:
    <ns>:run:<run_id>              hash    doc (the run as JSON), version, tenant, updated_at
    <ns>:run:<run_id>:timeline     stream  append-only: every status change, dispatch, decision,
                                           approval, result pointer and error (never trimmed)
    <ns>:run:<run_id>:events       stream  the events applied, in order (replay rebuilds the run)
    <ns>:run:<run_id>:outbox       hash    command id -> command JSON, until executed
    <ns>:outbox                    zset    run id -> when its outbox was written (the tick replays old ones)
    <ns>:wf:timers                 zset    "<run_id>|<timer_id>" -> due time
    <ns>:runs:active               set     runs not yet ended (the tick reconciles them)
    <ns>:runs:active:<tenant>      set     the same per tenant (max concurrent runs)
    <ns>:runs:<tenant>             zset    the tenant's runs by creation time
    <ns>:idem:run:<tenant>:<sha>   string  the run owning an idempotency key, for the dedupe window

One transition is one ``lua/run_commit.lua`` call: the new state, its timeline entries, the event,
the outbox and the timer changes are written atomically, and only if the run's ``version`` is
still the one the caller read (optimistic concurrency). An ended run's keys expire with the
run retention TTL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from coretex.errors import NotFoundError, StoreError
from coretex.settings import Settings
from coretex.store._redis import Pipeline, load_script, redis_errors


class RunConflictError(StoreError):
    """Another process committed a transition of the run since it was read; read it again."""

    code = "run_conflict"


class RunLimitError(StoreError):
    """The tenant already has its maximum of runs going."""

    code = "run_limit"


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    tenant: str
    doc: dict[str, Any]
    version: int
    updated_at: float


@dataclass(frozen=True)
class TimelinePage:
    entries: list[dict[str, Any]]
    next_cursor: str
    """Pass as ``after`` for the next page; "" when this page was the last."""


class RunStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._ttl = settings.result_ttl_s
        self._create = load_script(client, "run_create")
        self._commit = load_script(client, "run_commit")
        self._ack = load_script(client, "run_outbox_ack")
        self._pop = load_script(client, "zset_pop_due")

    def _key(self, run_id: str, part: str = "") -> str:
        return f"{self._ns}:run:{run_id}" + (f":{part}" if part else "")

    def _idem_key(self, tenant: str, key: str) -> str:
        return f"{self._ns}:idem:run:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    def create(self, run_id: str, tenant: str, doc: Mapping[str, Any], *, idempotency_key: str = "",
               window_s: int = 24 * 3600, max_concurrent: int = 0) -> tuple[str, bool]:
        """Store a new run; ``(run_id, True)``, or ``(existing_id, False)`` for a known idempotency key.

        Raises :class:`RunLimitError` when the tenant has ``max_concurrent`` runs going.
        """
        with redis_errors(f"create run {run_id}"):
            status, value = self._create(
                keys=[self._key(run_id), self._idem_key(tenant, idempotency_key) if idempotency_key else "",
                      f"{self._ns}:runs:active", f"{self._ns}:runs:active:{tenant}", f"{self._ns}:runs:{tenant}"],
                args=[run_id, json.dumps(doc), tenant, repr(doc.get("created_at") or time.time()), window_s,
                      max_concurrent],
            )
        if status == "limit":
            raise RunLimitError(f"tenant {tenant} already has {value} runs going (limit {max_concurrent})")
        return str(value), status == "created"

    def load(self, run_id: str) -> StoredRun:
        with redis_errors(f"read run {run_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._key(run_id)))
        return _found(run_id, raw)

    def load_queued(self, run_id: str, client: Pipeline) -> Callable[[Any], StoredRun]:
        """Queue the read of ``run_id`` on ``client``; the returned function decodes its reply."""
        client.hgetall(self._key(run_id))
        return lambda raw: _found(run_id, raw)

    def commit(
        self,
        stored: StoredRun,
        doc: Mapping[str, Any],
        *,
        event: Mapping[str, Any],
        timeline: Sequence[Mapping[str, Any]],
        outbox: Sequence[tuple[str, Mapping[str, Any]]],
        timers_started: Sequence[tuple[str, float]],
        timers_stopped: Sequence[str],
        ended: bool,
    ) -> int:
        """Write one transition read as ``stored``; return the new version.

        Raises :class:`RunConflictError` if the run changed since ``stored`` was read.
        """
        run_id = stored.run_id
        now = repr(time.time())
        with redis_errors(f"commit run {run_id}"):
            status, value = self._commit(
                keys=[self._key(run_id), self._key(run_id, "timeline"), self._key(run_id, "events"),
                      self._key(run_id, "outbox"), f"{self._ns}:outbox", f"{self._ns}:wf:timers",
                      f"{self._ns}:runs:active", f"{self._ns}:runs:active:{stored.tenant}"],
                args=[
                    str(stored.version), json.dumps(doc), now, json.dumps(event),
                    json.dumps([_stream_fields(entry) for entry in timeline] or {}),
                    json.dumps([[cid, json.dumps(body)] for cid, body in outbox] or {}),
                    json.dumps([[self._timer_member(run_id, tid), due] for tid, due in timers_started] or {}),
                    json.dumps([self._timer_member(run_id, tid) for tid in timers_stopped] or {}),
                    "1" if ended else "0", self._ttl, run_id,
                ],
            )
        if status == "missing":
            raise NotFoundError(f"run {run_id} not found")
        if status == "conflict":
            raise RunConflictError(f"run {run_id} is at version {value}, not {stored.version}")
        return int(value)

    def note(self, run_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append timeline entries that are not transitions (what executing a command produced)."""
        with redis_errors(f"append to timeline of run {run_id}"):
            pipe = self._r.pipeline(transaction=False)
            for entry in entries:
                fields: dict[Any, Any] = _stream_fields(entry)  # redis-py's field type is invariant
                pipe.xadd(self._key(run_id, "timeline"), fields)
            pipe.execute()

    def timeline(self, run_id: str, *, after: str = "", limit: int = 100) -> TimelinePage:
        start = f"({after}" if after else "-"
        with redis_errors(f"read timeline of run {run_id}"):
            raw = cast(list[tuple[str, dict[str, str]]], self._r.xrange(self._key(run_id, "timeline"), start, "+",
                                                                       count=limit + 1))
        more = len(raw) > limit
        page = raw[:limit]
        entries = [{"id": entry_id, **_from_stream(fields)} for entry_id, fields in page]
        return TimelinePage(entries, page[-1][0] if more and page else "")

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event applied to the run, oldest first."""
        with redis_errors(f"read events of run {run_id}"):
            raw = cast(list[tuple[str, dict[str, str]]], self._r.xrange(self._key(run_id, "events")))
        return [json.loads(fields["event"]) for _, fields in raw]

    def outbox(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Unacknowledged commands of the run, in the order they were issued."""
        with redis_errors(f"read outbox of run {run_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._key(run_id, "outbox")))
        return sorted(((cid, json.loads(body)) for cid, body in raw.items()), key=lambda c: _command_order(c[0]))

    def ack(self, run_id: str, command_ids: Sequence[str]) -> None:
        if not command_ids:
            return
        with redis_errors(f"acknowledge outbox of run {run_id}"):
            self._ack(keys=[self._key(run_id, "outbox"), f"{self._ns}:outbox"], args=[run_id, *command_ids])

    def stale_outboxes(self, older_than: float, limit: int = 200) -> list[str]:
        """Runs with commands written before ``older_than`` and still not acknowledged."""
        with redis_errors("read outbox index"):
            return cast(list[str], self._r.zrangebyscore(f"{self._ns}:outbox", "-inf", repr(older_than),
                                                         start=0, num=limit))

    def _timer_member(self, run_id: str, timer_id: str) -> str:
        return f"{run_id}|{timer_id}"

    def pop_due_timers(self, now: float, limit: int = 500) -> list[tuple[str, str, float]]:
        """(run id, timer id, due) of timers due at ``now``; each is handed to one caller only."""
        with redis_errors("pop due workflow timers"):
            flat = cast(list[str], self._pop(keys=[f"{self._ns}:wf:timers"], args=[repr(now), limit]))
        due = []
        for member, score in zip(flat[::2], flat[1::2], strict=True):
            run_id, timer_id = member.split("|", 1)
            due.append((run_id, timer_id, float(score)))
        return due

    def active(self, limit: int = 1000) -> list[str]:
        with redis_errors("list active runs"):
            return cast(list[str], self._r.srandmember(f"{self._ns}:runs:active", limit) or [])

    def active_count(self, tenant: str) -> int:
        with redis_errors("count active runs"):
            return int(self._r.scard(f"{self._ns}:runs:active:{tenant}"))

    def updated_at(self, run_ids: Sequence[str]) -> dict[str, float]:
        with redis_errors("read run update times"):
            pipe = self._r.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hget(self._key(run_id), "updated_at")
            values = pipe.execute()
        return {run_id: float(v) for run_id, v in zip(run_ids, values, strict=True) if v is not None}

    def list(self, tenant: str, *, limit: int = 50, before: float | None = None) -> list[StoredRun]:
        """The tenant's runs, newest first."""
        with redis_errors("list runs"):
            ids = cast(list[str], self._r.zrevrangebyscore(f"{self._ns}:runs:{tenant}",
                                                           "+inf" if before is None else f"({before!r}", "-inf",
                                                           start=0, num=limit))
        with redis_errors("list runs"):
            pipe = self._r.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._key(run_id))
            raws = cast(list[dict[str, str]], pipe.execute())
        runs, expired = [], []
        for run_id, raw in zip(ids, raws, strict=True):
            if raw:
                runs.append(_stored(run_id, raw))
            else:  # expired with its retention TTL
                expired.append(run_id)
        if expired:
            with redis_errors("prune run index"):
                self._r.zrem(f"{self._ns}:runs:{tenant}", *expired)
        return runs


def _found(run_id: str, raw: dict[str, str]) -> StoredRun:
    if not raw:
        raise NotFoundError(f"run {run_id} not found")
    return _stored(run_id, raw)


def _stored(run_id: str, raw: Mapping[str, str]) -> StoredRun:
    return StoredRun(run_id, raw["tenant"], json.loads(raw["doc"]), int(raw["version"]),
                     float(raw.get("updated_at") or 0))


def _stream_fields(entry: Mapping[str, Any]) -> dict[str, str]:
    """Stream fields are strings: strings stay, everything else is JSON (read back by _from_stream)."""
    return {k: v if isinstance(v, str) and not v.startswith("json:") else "json:" + json.dumps(v, sort_keys=True)
            for k, v in entry.items()}


def _from_stream(fields: Mapping[str, str]) -> dict[str, Any]:
    return {k: json.loads(v[5:]) if v.startswith("json:") else v for k, v in fields.items()}


def _command_order(command_id: str) -> tuple[int, int]:
    """Command ids are ``<run_id>:<seq>:<n>``: issue order is (seq, n)."""
    parts = command_id.rsplit(":", 2)
    try:
        return int(parts[-2]), int(parts[-1])
    except (ValueError, IndexError):
        return (0, 0)

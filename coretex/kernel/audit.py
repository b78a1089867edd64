"""Tamper-evident audit logs: every kernel decision, and every policy publish or rollback.

Keys (``<ns>`` is ``settings.namespace``; ``<log>`` is ``decisions`` or ``policy``)::

    <ns>:audit:<log>            stream  the records, oldest first, exact MAXLEN (bounded)
    <ns>:audit:<log>:head       hash    hash, seq, record_id of the newest record (the chain head)
    <ns>:audit:<log>:trimmed    string  how many records MAXLEN has trimmed (the drop counter)

Every record is a flat map of strings carrying ``seq`` (1, 2, ...), ``prev_hash``, ``prev_id``
(the previous record's id) and ``hash = sha256(prev_hash + canonical JSON of the record without
hash)``; the first record chains to :data:`GENESIS_HASH`. ``lua/audit_append_batch.lua`` appends
records only while the head is still the one the first of them was chained to, and moves the head
in the same script, so writers in several kernel processes can never fork the chain (a loser
re-chains to the new head and tries again). Within a process, concurrent appends are written
together in one batch (group commit, :meth:`ChainedStream.append`): each caller spells its record
once (:mod:`.chain_record`), and the writer of a batch only chains, hashes and makes one round trip.

:meth:`ChainedStream.verify` walks the stream oldest first and recomputes every link. It starts
at the oldest remaining record, taking its ``prev_hash`` as the anchor: records trimmed by MAXLEN
are gone, but the drop counter says how many, so the oldest remaining one must be
``seq == trimmed + 1``. Editing a record breaks its hash; deleting one leaves a seq gap (the
successor's ``prev_id`` names the missing record); reordering breaks ``prev_hash``; removing the
newest ones leaves the head pointing past the stream.

Decision records (:class:`DecisionAuditLog`) carry the request as deterministic protobuf bytes
(base64) so :func:`coretex.policy.impact.impact` can replay it. Label values that look secret
are redacted first (:func:`coretex.secrets.redact` on ``labels`` and ``meta.labels``) and
``effective_config`` is dropped: a replay sees the redacted labels, so a rule matching on a secret
label value replays differently (``redacted`` = ``1`` marks such records). ``request_hash`` is the
sha256 of the request as the kernel received it (before redaction), so records of identical
requests share it.

Configuration the lead wires (constructor parameters): ``CORETEX_AUDIT_DECISIONS_MAXLEN``
(default 100000), ``CORETEX_AUDIT_POLICY_MAXLEN`` (default 10000), ``CORETEX_REDACTION_LEVEL``
(default ``standard``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
from google.protobuf.message import DecodeError

from coretex.agent.v1 import safety_pb2
from coretex.errors import StoreError
from coretex.kernel.chain_record import EncodedRecord
from coretex.kernel.client import DECISION_KINDS_BY_WIRE
from coretex.kernel.wire import constraints_from_wire
from coretex.model.canonical import canonical_json
from coretex.policy import Constraints, Decision, DecisionKind
from coretex.secrets import redact
from coretex.settings import Settings
from coretex.store._redis import load_script, redis_errors

log = logging.getLogger("coretex.kernel.audit")

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record ever written to a log."""
DECISIONS_MAXLEN = 100_000
POLICY_MAXLEN = 10_000
APPEND_ATTEMPTS = 64
"""Re-chaining attempts when other writers keep moving the head, before the append fails."""
MAX_BATCH = 256
"""Most records one group commit writes (the rest wait for the next round trip)."""
GATHER_S = 0.002
"""How long a writer waits at most for its batch to fill up to the size of the batch before it.

Only when the batch before had more than one record (callers are concurrent): a lone caller never
waits. Measured with bench/kernel.py (8 clients, every Check audited): batches of ~2 without the
wait and ~5-6 with it, for ~20% less server CPU per Check and a lower p99, not a higher one. The
writer is woken once, when its batch is full: woken per arrival, it cost more than it saved."""
_BATCH = 500

Request = safety_pb2.PolicyCheckRequest
Response = safety_pb2.PolicyCheckResponse
D = TypeVar("D", Decision, Response)


class AuditUnavailableError(StoreError):
    """The audit record could not be written (Redis down, or the chain head kept moving)."""

    code = "audit_unavailable"


# --- the chain ------------------------------------------------------------------------------------


def chain_hash(record: Mapping[str, str]) -> str:
    """sha256 hex of ``prev_hash`` + the canonical JSON of ``record`` without its ``hash``."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256((record.get("prev_hash", "") + canonical_json(body)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditVerification:
    """What :meth:`ChainedStream.verify` found."""

    ok: bool
    checked: int
    """Records whose links were checked."""
    first_bad_id: str = ""
    """Stream id of the first record where the chain breaks (``""`` when intact or when nothing is left)."""
    reason: str = ""
    anchor: str = ""
    """``prev_hash`` of the oldest record checked: what the chain hangs from."""
    trimmed: int = 0
    """Records MAXLEN removed so far (the drop counter)."""


@dataclass(frozen=True)
class _Head:
    hash: str = GENESIS_HASH
    seq: int = 0
    record_id: str = ""


class _Broken(Exception):
    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(reason)
        self.stream_id, self.reason = stream_id, reason


class _PendingAppend:
    """One caller's record waiting for its batch to be written (or for its turn to write one).

    Its caller blocks on a lock of its own, so finishing a batch wakes exactly the callers in it
    and handing the writing turn on wakes exactly one (a shared condition woke every waiter).
    """

    __slots__ = ("record", "lead", "_wake", "_result", "_error")
    _result: tuple[str, int, str, str, str] | None

    def __init__(self, record: EncodedRecord) -> None:
        self.record = record
        self.lead = False
        """Set before a wake-up that hands this caller the writing turn."""
        self._wake = threading.Lock()
        self._wake.acquire()
        self._result = None
        self._error: BaseException | None = None

    def wait(self) -> None:
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()

    def finish(self, stream_id: str, seq: int, prev_hash: str, prev_id: str, digest: str) -> None:
        self._result = (stream_id, seq, prev_hash, prev_id, digest)

    def fail(self, error: BaseException) -> None:
        self._error = error

    @property
    def settled(self) -> bool:
        return self._result is not None or self._error is not None

    def outcome(self) -> tuple[str, dict[str, str]]:
        """``(stream id, record as stored)``, built by the caller (the writer only notes the chain links)."""
        if self._error is not None:
            raise self._error
        assert self._result is not None
        stream_id, seq, prev_hash, prev_id, digest = self._result
        return stream_id, self.record.stored(seq, prev_hash, prev_id, digest)


class ChainedStream:
    """A bounded Redis stream of hash-chained records (see the module docstring)."""

    def __init__(
        self, client: redis.Redis, key: str, *, id_field: str, maxlen: int, gather_s: float = GATHER_S
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        self._r = client
        self.key = key
        self.head_key = f"{key}:head"
        self.trimmed_key = f"{key}:trimmed"
        self.id_field = id_field
        self.maxlen = maxlen
        self._head: _Head | None = None
        """Last head this process saw: only a hint (saves a round trip); the script checks the real one."""
        self._script = load_script(client, "audit_append_batch")
        self._conn: redis.connection.AbstractConnection | None = None
        self._conn_pid = 0
        self.gather_s = gather_s
        self._mutex = threading.Lock()
        self._arrived = threading.Condition(self._mutex)
        """Notified when a gathering writer's batch is full (:data:`GATHER_S`)."""
        self._gathering = 0
        """How many queued records the gathering writer waits for (0: nobody gathers)."""
        self._last_batch = 1
        self._queue: list[_PendingAppend] = []
        self._writing = False
        """Whether one of this process's callers has the writing turn (the others queue behind it):
        racing each other for the head, 8 concurrent Checks fell to ~490/s with p99 ~39 ms."""

    def append(self, record: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Chain ``record`` to the head and append it; return ``(stream id, record as stored)``.

        Group commit: a caller that finds no write under way takes the writing turn and writes
        whatever is queued (its own record included) in one compare-and-append round trip; callers
        arriving meanwhile queue up, and when the batch is written the writer wakes its callers
        and hands the turn to the first queued one, which writes the next batch. A busy kernel so
        pays one Redis call per batch instead of racing its own threads for the chain head. While
        callers are concurrent, a writer first waits (at most ``gather_s``) for as many records as
        the batch before it had: the round trip, not the record, is what costs.
        """
        pending = _PendingAppend(EncodedRecord(record, self.id_field))  # spelled out here, not by the writer
        with self._mutex:
            self._queue.append(pending)
            pending.lead = not self._writing
            self._writing = True
            if len(self._queue) == self._gathering:
                self._arrived.notify()  # the gathering writer's batch is full (once, not per arrival)
        if not pending.lead:
            pending.wait()  # until our batch is written, or the turn is handed to us
        if pending.lead:
            self._take_turn(pending)
        return pending.outcome()

    def _take_turn(self, mine: _PendingAppend) -> None:
        with self._mutex:
            want = min(self._last_batch, MAX_BATCH)
            if len(self._queue) < want and self.gather_s > 0:
                self._gather(want)
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            self._last_batch = len(batch)
        successor: _PendingAppend | None = None
        try:
            self._write(batch)
        finally:
            with self._mutex:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                else:
                    self._writing = False
            if successor is not None:
                successor.wake()  # first: the next batch's round trip starts while this one's callers wake
            for pending in batch:
                if not pending.settled:  # only if _write itself was interrupted
                    pending.fail(AuditUnavailableError(f"{self.key}: the batch write was interrupted"))
                if pending is not mine:
                    pending.wake()

    def _gather(self, want: int) -> None:
        """Wait (holding the turn; called with the mutex) until ``want`` records are queued, at most ``gather_s``.

        Stopping early when arrivals pause (tried: 0.25, 0.5 and 1 ms of silence) made smaller
        batches and no better p99.
        """
        deadline = time.monotonic() + self.gather_s
        self._gathering = want
        try:
            while len(self._queue) < want and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
        finally:
            self._gathering = 0

    def _write(self, batch: list[_PendingAppend]) -> None:
        try:
            for _ in range(APPEND_ATTEMPTS):
                head = self._head or self._read_head()
                links: list[tuple[str, str, str]] = []  # (prev_hash, prev_id, hash) of each record
                entries: list[str] = []
                prev_hash, prev_id = head.hash, head.record_id
                for seq, pending in enumerate(batch, start=head.seq + 1):
                    digest, entry = pending.record.chain(seq, prev_hash, prev_id)
                    links.append((prev_hash, prev_id, digest))
                    entries.append(entry)
                    prev_hash, prev_id = digest, pending.record.record_id
                reply = self._append_batch(head, "[" + ",".join(entries) + "]")
                if not isinstance(reply, str) and (reply[1], reply[3], reply[2]) == (
                        prev_hash, prev_id, str(head.seq + len(batch))):
                    reply = self._newest_ids(len(batch))  # the head is our last record: a retried call had landed
                if isinstance(reply, str):  # the stream ids, comma-separated
                    self._head = _Head(prev_hash, head.seq + len(batch), prev_id)
                    for seq, (pending, link, stream_id) in enumerate(
                        zip(batch, links, reply.split(","), strict=True), start=head.seq + 1
                    ):
                        pending.finish(stream_id, seq, *link)
                    return
                self._head = _Head(reply[1], int(reply[2]), reply[3])  # another process moved the head
            raise AuditUnavailableError(f"{self.key}: the chain head kept moving ({APPEND_ATTEMPTS} attempts)")
        except Exception as exc:  # every caller of the batch learns the write failed
            for pending in batch:
                pending.fail(exc)

    def _append_batch(self, head: _Head, payload: str) -> str | list[str]:
        """Run ``audit_append_batch.lua`` on this stream's own connection (see :meth:`_connection`).

        A lost connection is retried as the client's own commands are (``conn.retry``: once, at
        once); :meth:`_write` recognises a retried batch that had in fact landed.
        """
        args = (self.key, self.head_key, self.trimmed_key, head.hash, head.seq + 1, self.maxlen, payload)
        with redis_errors(f"connect for {self.key}"):
            conn = self._connection()

        def run() -> str | list[str]:
            try:
                conn.send_command("EVALSHA", self._script.sha, 3, *args)  # type: ignore[no-untyped-call]
                return cast(str | list[str], conn.read_response())
            except redis.exceptions.NoScriptError:  # Redis restarted or its scripts were flushed
                conn.send_command("EVAL", self._script.script, 3, *args)  # type: ignore[no-untyped-call]
                return cast(str | list[str], conn.read_response())

        def lost(_error: Exception) -> None:
            conn.disconnect()  # type: ignore[no-untyped-call]  # a reply may be half read: never reuse the socket

        with redis_errors(f"append to {self.key}"):
            try:
                return conn.retry.call_with_retry(run, lost)
            except redis.exceptions.ResponseError:
                raise  # an error reply, read whole: the connection is still in step
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]
                raise

    def _connection(self) -> redis.connection.AbstractConnection:
        """A connection of the client's pool that only the writing turn uses, kept across batches.

        Taking one from the pool per batch costs a poll(2) readiness check and the pool's lock and
        bookkeeping, ~40 us of a ~70 us round trip; the turn is exclusive, so one connection held
        for good is safe. Redis errors disconnect it (the next batch reconnects); it goes back to the
        pool when this stream is collected, and a forked child takes a fresh one of its own.
        """
        pid = os.getpid()
        if self._conn is None or self._conn_pid != pid:
            pool = self._r.connection_pool
            self._conn, self._conn_pid = pool.get_connection(), pid
            weakref.finalize(self, pool.release, self._conn)
        return self._conn

    def _newest_ids(self, count: int) -> str:
        """Stream ids of the newest ``count`` records, oldest first, comma-separated (as the script answers)."""
        with redis_errors(f"read {self.key}"):
            rows = cast(list[tuple[str, dict[str, str]]], self._r.xrevrange(self.key, count=count))
        ids = [stream_id for stream_id, _ in reversed(rows)]
        return ",".join([""] * (count - len(ids)) + ids)  # "": trimmed at once by a MAXLEN below the batch size

    def _read_head(self) -> _Head:
        with redis_errors(f"read {self.head_key}"):
            raw = cast(dict[str, str], self._r.hgetall(self.head_key))
        return _Head(raw.get("hash", GENESIS_HASH), int(raw.get("seq", 0)), raw.get("record_id", ""))

    def length(self) -> int:
        with redis_errors(f"read {self.key}"):
            return int(self._r.xlen(self.key))

    def newest(
        self, limit: int, before: str | None = None, accept: Callable[[dict[str, str]], bool] | None = None,
        scan_limit: int = 10_000,
    ) -> list[tuple[str, dict[str, str]]]:
        """Up to ``limit`` records newest first, older than stream id ``before``, that ``accept`` keeps.

        At most ``scan_limit`` records are looked at, so a rare filter cannot scan the whole stream.
        """
        found: list[tuple[str, dict[str, str]]] = []
        upper = f"({before}" if before else "+"
        scanned = 0
        while len(found) < limit and scanned < scan_limit:
            count = min(_BATCH, scan_limit - scanned) if accept is not None else min(_BATCH, limit - len(found))
            with redis_errors(f"read {self.key}"):
                rows = cast(list[tuple[str, dict[str, str]]],
                            self._r.xrevrange(self.key, max=upper, min="-", count=count))
            scanned += len(rows)
            found.extend(row for row in rows if accept is None or accept(row[1]))
            if len(rows) < count:
                break
            upper = f"({rows[-1][0]}"
        return found[:limit]

    # -- verification --------------------------------------------------------------------------

    def verify(
        self, start: str | None = None, limit: int | None = None, progress: Callable[[int], None] | None = None
    ) -> AuditVerification:
        """Check the chain from the oldest record (or stream id ``start``), at most ``limit`` records.

        ``progress`` is called with the number of records checked since its last call.
        """
        with redis_errors(f"verify {self.key}"):
            pipe = self._r.pipeline(transaction=True)  # head, drop counter and first batch agree
            pipe.hgetall(self.head_key)
            pipe.get(self.trimmed_key)
            pipe.xrange(self.key, min=start or "-", max="+", count=_BATCH)
            raw_head, raw_trimmed, first = pipe.execute()
        head = _Head(raw_head.get("hash", GENESIS_HASH), int(raw_head.get("seq", 0)), raw_head.get("record_id", ""))
        trimmed = int(raw_trimmed or 0)
        walk = _Walk(head, trimmed, from_oldest=start is None, refresh_trimmed=self._trimmed)
        try:
            for stream_id, record in self._records(first, limit):
                walk.step(stream_id, record)
                if progress is not None:
                    progress(1)
                if walk.reached_head or (limit is not None and walk.checked >= limit):
                    break
            else:
                walk.finish(limit)
        except _Broken as broken:
            return AuditVerification(False, walk.checked, broken.stream_id, broken.reason, walk.anchor, walk.trimmed)
        return AuditVerification(True, walk.checked, anchor=walk.anchor, trimmed=walk.trimmed)

    def _trimmed(self) -> int:
        with redis_errors(f"read {self.trimmed_key}"):
            return int(cast(str | None, self._r.get(self.trimmed_key)) or 0)

    def _records(
        self, first: list[tuple[str, dict[str, str]]], limit: int | None
    ) -> Iterator[tuple[str, dict[str, str]]]:
        rows = first
        while rows:
            yield from rows
            if len(rows) < _BATCH:
                return
            with redis_errors(f"verify {self.key}"):
                rows = cast(list[tuple[str, dict[str, str]]],
                            self._r.xrange(self.key, min=f"({rows[-1][0]}", max="+", count=_BATCH))


@dataclass
class _Walk:
    """The state of one verification pass, record by record (raises :class:`_Broken`)."""

    head: _Head
    trimmed: int
    from_oldest: bool
    refresh_trimmed: Callable[[], int]
    checked: int = 0
    anchor: str = ""
    reached_head: bool = False
    last: tuple[str, int, str] | None = None
    """Stream id, seq and hash of the last record checked."""

    def step(self, stream_id: str, record: dict[str, str]) -> None:
        try:
            seq = int(record["seq"])
            prev_hash, stored = record["prev_hash"], record["hash"]
        except (KeyError, ValueError) as exc:
            raise _Broken(stream_id, f"record is not a chained audit record (bad or missing {exc})") from exc
        if chain_hash(record) != stored:
            raise _Broken(stream_id, f"seq {seq}: hash does not match the record's content (the record was edited)")
        if self.last is None:
            self._check_oldest(stream_id, seq, prev_hash)
        else:
            self._check_link(stream_id, seq, prev_hash, record.get("prev_id", ""))
        self.checked += 1
        self.last = (stream_id, seq, stored)
        if seq == self.head.seq:
            if stored != self.head.hash:
                raise _Broken(stream_id, f"seq {seq}: differs from the chain head (hash {self.head.hash[:12]}...)")
            self.reached_head = True

    def _check_oldest(self, stream_id: str, seq: int, prev_hash: str) -> None:
        self.anchor = prev_hash
        if self.from_oldest and seq != self.trimmed + 1:
            raise _Broken(stream_id, f"seq {seq} is the oldest record, but {self.trimmed} were trimmed so it should "
                                     f"be seq {self.trimmed + 1}: {seq - self.trimmed - 1} older record(s) deleted")

    def _check_link(self, stream_id: str, seq: int, prev_hash: str, prev_id: str) -> None:
        assert self.last is not None
        last_id, last_seq, last_hash = self.last
        if seq > last_seq + 1 and self.from_oldest and seq == (trimmed := self.refresh_trimmed()) + 1:
            self.trimmed, self.anchor = trimmed, prev_hash  # MAXLEN overtook this walk: start over from here
            return
        if seq > last_seq + 1:
            missing = f"seq {last_seq + 1}" if seq == last_seq + 2 else f"seq {last_seq + 1}..{seq - 1}"
            named = f" (the last of them has id {prev_id!r})" if prev_id else ""
            raise _Broken(stream_id, f"seq {seq}: record(s) {missing} after {last_id} are missing{named}")
        if seq != last_seq + 1:
            raise _Broken(stream_id, f"seq {seq} follows seq {last_seq}: records are out of order")
        if prev_hash != last_hash:
            raise _Broken(stream_id, f"seq {seq}: prev_hash does not link to the record before it ({last_id})")

    def finish(self, limit: int | None) -> None:
        """The stream ended before the head was reached: the newest records were removed."""
        if limit is not None and self.checked >= limit:
            return
        if self.last is None:
            if self.from_oldest and self.head.seq > self.trimmed:
                raise _Broken("", f"the stream is empty, but {self.head.seq} records were written and only "
                                  f"{self.trimmed} trimmed")
            return
        last_id, last_seq, _ = self.last
        if last_seq < self.head.seq:
            raise _Broken(last_id, f"the newest record is seq {last_seq} but the chain head is seq {self.head.seq}: "
                                   f"{self.head.seq - last_seq} newest record(s) deleted")
        if not self.reached_head:
            raise _Broken(last_id, f"the records go up to seq {last_seq} but the chain head says seq "
                                   f"{self.head.seq}: the head was reset or rewritten")


# --- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as the audit holds it."""

    id: str
    """Stream id (``<ms>-<n>``); pass it as ``before`` to page further back."""
    decision_id: str
    seq: int
    time: float
    decision: str
    """Policy spelling: ``allow``, ``deny``, ``require_approval``, ``allow_with_constraints``, ``throttle``."""
    rule_id: str
    rule_ids: tuple[str, ...]
    snapshot: str
    constraints: dict[str, Any]
    reason: str
    enforcement: str
    request_hash: str
    request: str = field(repr=False)
    """base64 of the deterministic ``PolicyCheckRequest`` bytes, labels redacted."""
    redacted: bool
    tenant: str
    actor: str
    job_id: str
    topic: str
    run_id: str
    step_id: str
    trace_id: str
    prev_hash: str
    hash: str

    def request_message(self) -> safety_pb2.PolicyCheckRequest:
        """The stored request (raises ``ValueError`` when the bytes do not decode)."""
        try:
            return safety_pb2.PolicyCheckRequest.FromString(base64.b64decode(self.request, validate=True))
        except (binascii.Error, DecodeError) as exc:
            raise ValueError(f"audit record {self.id}: request does not decode: {exc}") from exc

    @classmethod
    def from_fields(cls, stream_id: str, raw: Mapping[str, str]) -> DecisionRecord:
        return cls(
            id=stream_id,
            decision_id=raw.get("decision_id", ""),
            seq=int(raw.get("seq", 0)),
            time=float(raw.get("time", 0.0)),
            decision=raw.get("decision", ""),
            rule_id=raw.get("rule_id", ""),
            rule_ids=tuple(json.loads(raw.get("rule_ids") or "[]")),
            snapshot=raw.get("snapshot", ""),
            constraints=json.loads(raw.get("constraints") or "{}"),
            reason=raw.get("reason", ""),
            enforcement=raw.get("enforcement", ""),
            request_hash=raw.get("request_hash", ""),
            request=raw.get("request", ""),
            redacted=raw.get("redacted") == "1",
            tenant=raw.get("tenant", ""),
            actor=raw.get("actor", ""),
            job_id=raw.get("job_id", ""),
            topic=raw.get("topic", ""),
            run_id=raw.get("run_id", ""),
            step_id=raw.get("step_id", ""),
            trace_id=raw.get("trace_id", ""),
            prev_hash=raw.get("prev_hash", ""),
            hash=raw.get("hash", ""),
        )


class DecisionAuditLog:
    """The decision audit ``<ns>:audit:decisions``: one chained record per kernel decision."""

    def __init__(
        self, client: redis.Redis, settings: Settings, maxlen: int = DECISIONS_MAXLEN,
        *, redaction_level: str = "standard",
    ) -> None:
        self.stream = ChainedStream(client, f"{settings.namespace}:audit:decisions", id_field="decision_id",
                                    maxlen=maxlen)
        self._redaction_level = redaction_level

    def append(
        self, request: safety_pb2.PolicyCheckRequest, decision: Decision | safety_pb2.PolicyCheckResponse,
        *, now: float | None = None,
    ) -> str:
        """Write the record of ``decision`` on ``request``; return its ``decision_id``.

        Raise :class:`AuditUnavailableError` (a :class:`StoreError`) when it could not be written.
        """
        record = decision_record_fields(request, decision, self._redaction_level)
        record["time"] = repr(time.time() if now is None else now)
        _, stored = self.stream.append(record)
        return stored["decision_id"]

    def read(self, limit: int, before: str | None = None, tenant: str | None = None) -> list[DecisionRecord]:
        """Up to ``limit`` records newest first (of ``tenant`` only, when given), older than ``before``."""
        accept = None if tenant is None else (lambda raw: raw.get("tenant") == tenant)
        return [DecisionRecord.from_fields(i, raw) for i, raw in self.stream.newest(limit, before, accept)]

    def recent_requests(self, limit: int) -> list[tuple[str, safety_pb2.PolicyCheckRequest]]:
        """``(decision_id, request)`` of the newest ``limit`` records, for replay (undecodable ones skipped)."""
        out = []
        for record in self.read(limit):
            try:
                out.append((record.decision_id, record.request_message()))
            except ValueError as exc:
                log.warning("skipping audit record in replay: %s", exc)
        return out

    def verify(
        self, start: str | None = None, limit: int | None = None, progress: Callable[[int], None] | None = None
    ) -> AuditVerification:
        return self.stream.verify(start, limit, progress)


@functools.lru_cache(maxsize=4096)
def _json_list(values: tuple[str, ...]) -> str:
    return canonical_json(list(values))


@functools.lru_cache(maxsize=1024)
def _constraints_json(constraints: Constraints) -> str:
    """Cached: a snapshot yields a handful of distinct constraint sets, each spelled on every decision."""
    return canonical_json(constraints.canonical())


def decision_record_fields(
    request: safety_pb2.PolicyCheckRequest, decision: Decision | safety_pb2.PolicyCheckResponse,
    redaction_level: str = "standard",
) -> dict[str, str]:
    """The audit record of ``decision`` (without time and chain fields)."""
    received = request.SerializeToString(deterministic=True)
    stored, redacted = request, False
    if request.effective_config or _has_secret_labels(request, redaction_level):
        stored, redacted = redacted_request(request, redaction_level)
    record = {
        "decision_id": str(uuid.uuid4()),
        **_decision_fields(decision),
        "request_hash": hashlib.sha256(received).hexdigest(),
        # Nothing to redact or drop: the stored request is the received one, byte for byte.
        "request": base64.b64encode(
            received if stored is request else stored.SerializeToString(deterministic=True)).decode("ascii"),
        "redacted": "1" if redacted else "0",
        "tenant": request.tenant or request.meta.tenant_id,
        "actor": request.meta.actor_id or request.principal_id,
        "job_id": request.job_id,
        "topic": request.topic,
        "run_id": _label(stored, "run_id"),
        "step_id": _label(stored, "step_id"),
        "trace_id": _label(stored, "trace_id"),
    }
    return record


def _label(request: safety_pb2.PolicyCheckRequest, key: str) -> str:
    """``key`` of ``meta.labels`` overlaid with the request's own ``labels`` (as policy sees them)."""
    if key in request.labels:
        return request.labels[key]
    return request.meta.labels.get(key, "")


def _has_secret_labels(request: safety_pb2.PolicyCheckRequest, level: str) -> bool:
    return any(
        labels and _redacted_labels(tuple(sorted(labels.items())), level) is not None
        for labels in (request.labels, request.meta.labels)
    )


def redacted_request(
    request: safety_pb2.PolicyCheckRequest, level: str = "standard"
) -> tuple[safety_pb2.PolicyCheckRequest, bool]:
    """A copy fit for storage: secret-looking label values redacted, ``effective_config`` dropped."""
    copy = safety_pb2.PolicyCheckRequest()
    copy.CopyFrom(request)
    copy.ClearField("effective_config")  # not evaluated by policy, and unbounded
    changed = False
    for labels in (copy.labels, copy.meta.labels):
        if not labels:
            continue
        cleaned = _redacted_labels(tuple(sorted(labels.items())), level)
        if cleaned is not None:
            changed = True
            labels.clear()
            labels.update(cleaned)
    return copy, changed


@functools.lru_cache(maxsize=4096)
def _redacted_labels(items: tuple[tuple[str, str], ...], level: str) -> dict[str, str] | None:
    """Redacted labels, or None when nothing changed. Cached: a busy kernel sees the same label sets
    over and over, and redaction (a battery of regular expressions) would dominate each audit write."""
    original = dict(items)
    cleaned = redact(original, level)
    if cleaned == original:
        return None
    return {str(key): str(value) for key, value in cleaned.items()}


def _decision_fields(decision: Decision | safety_pb2.PolicyCheckResponse) -> dict[str, str]:
    if isinstance(decision, Decision):
        return {
            "decision": decision.kind.value,
            "rule_id": decision.rule_id,
            "rule_ids": _json_list(decision.matched_rule_ids or ((decision.rule_id,) if decision.rule_id else ())),
            "snapshot": decision.snapshot,
            "constraints": _constraints_json(decision.constraints),
            "reason": decision.reason,
            "enforcement": decision.enforcement.value,
        }
    kind = DECISION_KINDS_BY_WIRE.get(decision.decision)
    constraints = constraints_from_wire(decision.constraints) if decision.HasField("constraints") else None
    return {
        "decision": kind.value if kind is not None else "unspecified",
        "rule_id": decision.rule_id,
        "rule_ids": _json_list((decision.rule_id,) if decision.rule_id else ()),
        "snapshot": decision.policy_snapshot,
        "constraints": _constraints_json(constraints) if constraints is not None else "{}",
        "reason": decision.reason,
        "enforcement": "",
    }


def _is_deny(decision: Decision | safety_pb2.PolicyCheckResponse) -> bool:
    if isinstance(decision, Decision):
        return decision.kind is DecisionKind.DENY
    return decision.decision == safety_pb2.DECISION_TYPE_DENY


def audited_decision(audit: DecisionAuditLog, request: safety_pb2.PolicyCheckRequest, decision: D) -> D:
    """Write the audit record of ``decision`` and return what the caller must answer.

    The rule (call it right before answering a Check): when the record cannot be written, a deny
    stays a deny (logged) and every other decision — allow, allow_with_constraints, and also
    require_approval and throttle, which let a job run later — becomes a deny with reason
    ``AUDIT_UNAVAILABLE: ...``: nothing runs without its audit record.
    """
    try:
        audit.append(request, decision)
    except Exception as exc:  # whatever broke, an unaudited allow must not leave the kernel
        if _is_deny(decision):
            log.error("decision audit unavailable; deny for job %r still answered: %s", request.job_id, exc)
            return decision
        log.error("decision audit unavailable; denying job %r instead: %s", request.job_id, exc)
        reason = f"AUDIT_UNAVAILABLE: the decision could not be audited ({exc.__class__.__name__})"
        if isinstance(decision, Decision):
            return Decision(kind=DecisionKind.DENY, rule_id="", reason=reason, snapshot=decision.snapshot)
        return safety_pb2.PolicyCheckResponse(
            decision=safety_pb2.DECISION_TYPE_DENY, reason=reason, policy_snapshot=decision.policy_snapshot
        )
    return decision


# --- policy changes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyChange:
    """One publish or rollback of policy bundles, as ``<ns>:audit:policy`` holds it."""

    id: str
    change_id: str
    seq: int
    time: float
    action: str
    """``publish`` or ``rollback``."""
    actor: str
    """API key name of who did it."""
    role: str
    message: str
    bundle_ids: tuple[str, ...]
    before_snapshot: str
    after_snapshot: str
    details: dict[str, Any]
    """Per bundle: revision before and after, rollback target (for rollback)."""
    hash: str

    @classmethod
    def from_fields(cls, stream_id: str, raw: Mapping[str, str]) -> PolicyChange:
        return cls(
            id=stream_id,
            change_id=raw.get("change_id", ""),
            seq=int(raw.get("seq", 0)),
            time=float(raw.get("time", 0.0)),
            action=raw.get("action", ""),
            actor=raw.get("actor", ""),
            role=raw.get("role", ""),
            message=raw.get("message", ""),
            bundle_ids=tuple(json.loads(raw.get("bundle_ids") or "[]")),
            before_snapshot=raw.get("before_snapshot", ""),
            after_snapshot=raw.get("after_snapshot", ""),
            details=json.loads(raw.get("details") or "{}"),
            hash=raw.get("hash", ""),
        )


class PolicyChangeLog:
    """The policy audit ``<ns>:audit:policy``: who published or rolled back what, when, and why."""

    def __init__(self, client: redis.Redis, settings: Settings, maxlen: int = POLICY_MAXLEN) -> None:
        self.stream = ChainedStream(client, f"{settings.namespace}:audit:policy", id_field="change_id", maxlen=maxlen)

    def record(
        self, *, action: str, actor: str, role: str, message: str, bundle_ids: Sequence[str], before_snapshot: str,
        after_snapshot: str, details: Mapping[str, Any] | None = None, now: float | None = None,
    ) -> PolicyChange:
        fields_ = {
            "change_id": str(uuid.uuid4()),
            "time": repr(time.time() if now is None else now),
            "action": action,
            "actor": actor,
            "role": role,
            "message": message,
            "bundle_ids": canonical_json(list(bundle_ids)),
            "before_snapshot": before_snapshot,
            "after_snapshot": after_snapshot,
            "details": canonical_json(dict(details or {})),
        }
        stream_id, stored = self.stream.append(fields_)
        return PolicyChange.from_fields(stream_id, stored)

    def read(self, limit: int, before: str | None = None) -> list[PolicyChange]:
        """Up to ``limit`` changes newest first, older than stream id ``before``."""
        return [PolicyChange.from_fields(i, raw) for i, raw in self.stream.newest(limit, before)]

    def verify(self, start: str | None = None, limit: int | None = None) -> AuditVerification:
        return self.stream.verify(start, limit)

"""Job records and their lifecycle in Redis.

Keys:
    <ns>:job:<job_id>            hash    the record (fields of JobRecord; ``meta`` as JSON; ``version``)
    <ns>:job:<job_id>:events     stream  append-only history: from, to, at, reason (MAXLEN ~1000)
    <ns>:idem:<tenant>:<sha256(key)>  string  job id owning an idempotency key, for the dedupe window
    <ns>:active:<scope>          set     DISPATCHED and RUNNING jobs of a tenant, actor or pool (limits)
    <ns>:jobs:undispatched       zset    PENDING and SCHEDULED jobs -> when they last entered that state:
                                         the tick re-submits one whose submit packet was lost
    <ns>:engine:job_news         stream  a run's job that ended, for the engine (store/job_news.py)

Transitions run in ``lua/job_transition.lua``: the lifecycle check and the write are one atomic
step, so two processes racing to move a job can never both win.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import redis

from coretex.errors import IllegalTransitionError, NotFoundError, StoreError
from coretex.model.job import JobMeta, JobRecord, JobState, sources_of
from coretex.settings import Settings
from coretex.store._redis import Pipeline, load_script, redis_errors
from coretex.store.job_news import NEWS_MAXLEN, news_key

HISTORY_MAXLEN = 1000


@dataclass(frozen=True)
class ActiveLimit:
    """A concurrency set a dispatched job joins: ``tenant:<t>``, ``actor:<t>:<a>`` or ``pool:<p>``."""

    scope: str
    limit: int | None
    """None: count the job without limiting."""


class ConcurrencyLimitError(StoreError):
    """A tenant, actor or pool is at its limit of running jobs; the job waits until one ends."""

    code = "concurrency_limit"

    def __init__(self, scope: str, message: str) -> None:
        super().__init__(message)
        self.scope = scope


class StaleAttemptError(IllegalTransitionError):
    """The job moved on to another attempt; whatever this attempt reports is ignored."""

    code = "stale_attempt"

DEFAULT_IDEMPOTENCY_WINDOW_S = 24 * 3600
_INT_FIELDS = {f.name for f in fields(JobRecord) if f.type in ("int", int)}
_FLOAT_FIELDS = {"created_at", "updated_at"}


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._ns = settings.namespace
        self._ttl = settings.result_ttl_s
        self._create = load_script(client, "job_create")
        self._undispatched = f"{self._ns}:jobs:undispatched"
        self._transition = load_script(client, "job_transition")
        self._news = news_key(self._ns)

    def _key(self, job_id: str) -> str:
        return f"{self._ns}:job:{job_id}"

    def _events_key(self, job_id: str) -> str:
        return f"{self._ns}:job:{job_id}:events"

    def _idem_key(self, tenant_id: str, key: str) -> str:
        # The caller's key is hashed: fixed-length hex cannot contain ':', so no (tenant, key) pair can
        # collide with another one however either is spelled, and odd keys never shape our key space.
        return f"{self._ns}:idem:{tenant_id}:{hashlib.sha256(key.encode()).hexdigest()}"

    def create(
        self,
        record: JobRecord,
        *,
        idempotency_key: str = "",
        window_s: int = DEFAULT_IDEMPOTENCY_WINDOW_S,
        accept_note: str = "",
        along: Pipeline | None = None,
    ) -> tuple[str, bool]:
        """Store a new PENDING record; return ``(job_id, created)``.

        With an idempotency key already used by the same tenant inside the window, nothing is
        written and the first job's id comes back with ``created=False``. With ``accept_note`` the
        job moves on to SCHEDULED in the same step (both moves in its history). ``along``: commands
        queued by other stores (the job's input, say), sent first in the same round trip.
        """
        idem = self._idem_key(record.tenant_id, idempotency_key) if idempotency_key else ""
        with redis_errors(f"create job {record.job_id}"):
            status, job_id = _run_along(along, self._create,
                keys=[self._key(record.job_id), self._events_key(record.job_id), idem, self._undispatched],
                args=[
                    record.job_id,
                    json.dumps(_encode(record)),
                    self._ttl,
                    window_s,
                    repr(time.time()),
                    HISTORY_MAXLEN,
                    accept_note,
                ],
            )
        return str(job_id), status == "created"

    def idempotent_owner(self, tenant_id: str, idempotency_key: str) -> str | None:
        """The job that already holds ``idempotency_key`` for the tenant inside the window, if any."""
        with redis_errors("read idempotency key"):
            return cast(str | None, self._r.get(self._idem_key(tenant_id, idempotency_key)))

    def get(self, job_id: str) -> JobRecord:
        with redis_errors(f"read job {job_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._key(job_id)))
        return _found(job_id, raw)

    def get_queued(self, job_id: str, client: Pipeline) -> Callable[[Any], JobRecord]:
        """Queue the read of ``job_id`` on ``client``; the returned function decodes its reply
        (NotFoundError when there is no such job), so reads of several stores share a round trip."""
        client.hgetall(self._key(job_id))
        return lambda raw: _found(job_id, raw)

    def transition(
        self,
        job_id: str,
        target: JobState,
        *,
        note: str = "",
        attempt: int | None = None,
        limits: Sequence[ActiveLimit] = (),
        along: Pipeline | None = None,
        deliver: tuple[str, str] | None = None,
        **changes: Any,
    ) -> bool:
        """Move ``job_id`` to ``target`` with ``changes``; return False if it was already there.

        ``note`` says why in the job's history; ``changes`` are record fields set with the move.
        With ``attempt``, the move applies only while the job is on that attempt (else
        :class:`StaleAttemptError`): a late result of an abandoned attempt changes nothing. With
        ``limits`` (a move to DISPATCHED), the job joins those concurrency sets unless one is full,
        which refuses the move (:class:`ConcurrencyLimitError` naming the set). ``along``: commands
        queued by other stores, sent first in the same round trip (whatever the move's outcome).
        ``deliver``: (broker list, message) pushed in the same atomic step when the move to
        DISPATCHED applies, so the job is never DISPATCHED without its message or the reverse.

        Raise :class:`IllegalTransitionError` when the lifecycle forbids the move (for example a
        late result for a job that already timed out) and :class:`NotFoundError` for no job.
        """
        keys, args = self._transition_call(job_id, target, note, attempt, limits, changes, deliver)
        with redis_errors(f"move job {job_id} to {target}"):
            reply = _run_along(along, self._transition, keys=keys, args=args)
        return self._moved(job_id, target, attempt, limits, reply)

    def transition_queued(self, client: Pipeline, job_id: str, target: JobState, *, note: str = "",
                          attempt: int | None = None, **changes: Any) -> Callable[[Any], bool]:
        """Queue :meth:`transition` on ``client``; the returned function reads its reply (and raises
        as :meth:`transition` would), so a caller can read other stores' replies of the same trip."""
        keys, args = self._transition_call(job_id, target, note, attempt, (), changes)
        with redis_errors(f"move job {job_id} to {target}"):
            self._transition(keys=keys, args=args, client=client)
        return lambda reply: self._moved(job_id, target, attempt, (), reply)

    def _transition_call(self, job_id: str, target: JobState, note: str, attempt: int | None,
                         limits: Sequence[ActiveLimit], changes: dict[str, Any],
                         deliver: tuple[str, str] | None = None) -> tuple[list[str], list[Any]]:
        allowed = sorted(s.value for s in sources_of(target))
        extra = {k: _encode_value(k, v) for k, v in changes.items()}
        queue, message = deliver if deliver is not None and target is JobState.DISPATCHED else ("", "")
        keys = [self._key(job_id), self._events_key(job_id), self._undispatched, self._news, queue]
        args = [target.value, repr(time.time()), note, json.dumps(allowed), json.dumps(extra), HISTORY_MAXLEN,
                "" if attempt is None else str(attempt),
                json.dumps([[self._active_key(lim.scope), -1 if lim.limit is None else lim.limit]
                            for lim in limits]) if limits else "", NEWS_MAXLEN, message]
        return keys, args

    def _moved(self, job_id: str, target: JobState, attempt: int | None, limits: Sequence[ActiveLimit],
               reply: Any) -> bool:
        status, current, *rest = reply
        if status == "missing":
            raise NotFoundError(f"job {job_id} not found")
        if status == "quota":
            scope = current.removeprefix(f"{self._ns}:active:")
            limit = next((lim.limit for lim in limits if self._active_key(lim.scope) == current), None)
            running = rest[0] if rest else "?"
            raise ConcurrencyLimitError(scope, f"{scope} already has {running} jobs running (limit {limit})")
        if status == "stale":
            raise StaleAttemptError(f"job {job_id} is no longer on attempt {attempt}")
        if status == "illegal":
            raise IllegalTransitionError(f"job {job_id}: {current} -> {target.value} is not allowed")
        return bool(status == "ok")

    def undispatched(self, older_than: float, limit: int = 200) -> list[str]:
        """PENDING or SCHEDULED jobs that entered that state before ``older_than``."""
        with redis_errors("read undispatched jobs"):
            return cast(list[str], self._r.zrangebyscore(self._undispatched, "-inf", repr(older_than),
                                                         start=0, num=limit))

    def touch_undispatched(self, job_id: str, now: float) -> None:
        """Restart the wait clock of an undispatched job (it was just handed to the scheduler again)."""
        with redis_errors(f"touch undispatched job {job_id}"):
            self._r.zadd(self._undispatched, {job_id: now}, xx=True)

    def forget_undispatched(self, job_id: str) -> None:
        with redis_errors(f"forget undispatched job {job_id}"):
            self._r.zrem(self._undispatched, job_id)

    def _active_key(self, scope: str) -> str:
        return f"{self._ns}:active:{scope}"

    def active_count(self, scope: str) -> int:
        with redis_errors(f"count active jobs of {scope}"):
            return int(self._r.scard(self._active_key(scope)))

    def note_progress(self, job_id: str, percent: int, message: str) -> None:
        """Record the handler's latest progress on a running job (no state change, no history entry)."""
        with redis_errors(f"note progress of job {job_id}"):
            self._r.hset(self._key(job_id), mapping={"progress_pct": str(percent), "progress_message": message})

    def note_pending(self, job_id: str, reason: str) -> None:
        """Record why the job waits, without a state change; the history keeps every reason given."""
        with redis_errors(f"note pending reason of job {job_id}"):
            state = cast(str | None, self._r.hget(self._key(job_id), "state"))
            if state is None:
                raise NotFoundError(f"job {job_id} not found")
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._key(job_id), "pending_reason", reason)
            pipe.xadd(self._events_key(job_id), {"from": state, "to": state, "at": repr(time.time()), "reason": reason},
                      maxlen=HISTORY_MAXLEN, approximate=True)
            pipe.execute()

    def history(self, job_id: str) -> list[dict[str, str]]:
        """The job's transitions, oldest first."""
        with redis_errors(f"read history of job {job_id}"):
            entries = cast(list[tuple[str, dict[str, str]]], self._r.xrange(self._events_key(job_id)))
        return [dict(fields_) for _, fields_ in entries]


def _run_along(along: Pipeline | None, script: Any, *, keys: list[str], args: list[Any]) -> Any:
    """Run ``script``, after the commands queued on ``along`` and in the same round trip."""
    if along is None:
        return script(keys=keys, args=args)
    script(keys=keys, args=args, client=along)
    return along.execute()[-1]


def _encode_value(name: str, value: Any) -> str:
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, JobMeta):
        return json.dumps(asdict(value), sort_keys=True)
    if isinstance(value, float) and name in _FLOAT_FIELDS:
        return repr(value)
    if isinstance(value, str | int | float):
        return str(value)
    raise StoreError(f"cannot store field {name}={value!r}")


def _encode(record: JobRecord) -> dict[str, str]:
    out = {f.name: _encode_value(f.name, getattr(record, f.name)) for f in fields(record)}
    out["version"] = "1"
    out["schema_version"] = "1"
    return out


def _found(job_id: str, raw: dict[str, str]) -> JobRecord:
    if not raw:
        raise NotFoundError(f"job {job_id} not found")
    return _decode(raw)


def _decode(raw: dict[str, str]) -> JobRecord:
    meta_raw = json.loads(raw.get("meta") or "{}")
    meta = JobMeta(
        **{
            **meta_raw,
            "risk_tags": tuple(meta_raw.get("risk_tags", ())),
            "requires": tuple(meta_raw.get("requires", ())),
        }
    )
    values: dict[str, Any] = {}
    for f in fields(JobRecord):
        if f.name == "meta":
            values["meta"] = meta
        elif f.name == "state":
            values["state"] = JobState(raw["state"])
        elif f.name in _FLOAT_FIELDS:
            values[f.name] = float(raw.get(f.name) or 0.0)
        elif f.name in _INT_FIELDS:
            if raw.get(f.name):  # absent: the field's default (records written before it existed)
                values[f.name] = int(raw[f.name])
        elif f.name in raw:
            values[f.name] = raw[f.name]
    return JobRecord(**values)

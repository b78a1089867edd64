"""The lock service against a real redis-server: exclusion, sharing, expiry, fencing, fair waiting."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from coretex.errors import StoreError
from coretex.model.lock import LockGrant, LockMode
from coretex.settings import Settings
from coretex.store._redis import connect
from coretex.store.locks import (
    LockConfig,
    LockNotHeldError,
    LockQueueFullError,
    LockRequestError,
    LockStore,
    LockTimeoutError,
)
from coretex.testing import eventually

pytestmark = pytest.mark.integration

SHARED, EXCLUSIVE = LockMode.SHARED, LockMode.EXCLUSIVE
LONG_TTL = 30_000


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = connect(settings)
    yield c
    c.close()


@pytest.fixture
def locks(client: redis.Redis, settings: Settings) -> LockStore:
    return LockStore(client, settings)


@pytest.fixture
def resource() -> str:
    return f"service/env-{uuid.uuid4().hex[:8]}"


def waiting(locks: LockStore, resource: str) -> int:
    info = locks.get(resource)
    return info.waiting if info else 0


class Background:
    """Run one acquire in a thread; keep its grant or error for the test to assert on."""

    def __init__(self, call: Callable[[], LockGrant]) -> None:
        self.grant: LockGrant | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], LockGrant]) -> None:
        try:
            self.grant = call()
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 20.0) -> LockGrant:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background acquire did not finish"
        if self.error is not None:
            raise self.error
        assert self.grant is not None
        return self.grant


@dataclass(frozen=True)
class Visit:
    owner: str
    token: int
    enter: float
    leave: float


def test_fifty_contenders_hold_an_exclusive_lock_one_at_a_time(locks: LockStore, resource: str) -> None:
    contenders = 50
    visits: list[Visit] = []
    errors: list[BaseException] = []
    guard = threading.Lock()
    inside = [0]
    start = threading.Barrier(contenders)

    def contend(owner: str) -> None:
        try:
            start.wait()
            grant = locks.acquire(resource, owner, mode=EXCLUSIVE, ttl_ms=LONG_TTL, wait_s=60)
            with guard:
                inside[0] += 1
                overlapping = inside[0]
            enter = time.monotonic()
            # Hold briefly, checking from inside that we are the one and only holder.
            assert locks.check_fence(resource, grant.token)
            info = locks.get(resource)
            assert info is not None and [h.owner for h in info.holders] == [owner]
            leave = time.monotonic()
            with guard:
                inside[0] -= 1
                visits.append(Visit(owner, grant.token, enter, leave))
            assert overlapping == 1, f"{overlapping} holders at once"
            locks.release(resource, owner)
        except BaseException as exc:
            with guard:
                errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"worker-{i}",)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(v.owner for v in visits) == sorted(f"worker-{i}" for i in range(contenders))
    in_grant_order = sorted(visits, key=lambda v: v.enter)
    for before, after in zip(in_grant_order, in_grant_order[1:], strict=False):
        assert before.leave <= after.enter, f"{before.owner} and {after.owner} held it together"
        assert before.token < after.token, "fencing tokens must grow in grant order"
    assert not locks.check_fence(resource, in_grant_order[0].token)
    assert locks.get(resource) is None


def test_shared_holders_coexist_and_keep_out_an_exclusive(locks: LockStore, resource: str) -> None:
    a = locks.acquire(resource, "reader-a", mode=SHARED, ttl_ms=LONG_TTL)
    b = locks.acquire(resource, "reader-b", mode="shared", ttl_ms=LONG_TTL)
    info = locks.get(resource)
    assert info is not None and info.mode is SHARED
    assert {h.owner: h.token for h in info.holders} == {"reader-a": a.token, "reader-b": b.token}
    assert locks.check_fence(resource, a.token) and locks.check_fence(resource, b.token)

    with pytest.raises(LockTimeoutError) as refused:
        locks.acquire(resource, "writer", mode=EXCLUSIVE, wait_s=0)
    assert refused.value.code == "lock_timeout"
    assert "shared" in str(refused.value)
    locks.release(resource, "reader-a")
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "writer", mode=EXCLUSIVE, wait_s=0)
    locks.release(resource, "reader-b")

    w = locks.acquire(resource, "writer", mode=EXCLUSIVE, wait_s=0)
    assert w.token > max(a.token, b.token)
    info = locks.get(resource)
    assert info is not None and info.mode is EXCLUSIVE and [h.owner for h in info.holders] == ["writer"]


def test_an_exclusive_keeps_out_shared(locks: LockStore, resource: str) -> None:
    locks.acquire(resource, "writer", mode=EXCLUSIVE, ttl_ms=LONG_TTL)
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "reader", mode=SHARED)
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "other-writer", mode=EXCLUSIVE)
    locks.release(resource, "writer")
    assert locks.acquire(resource, "reader", mode=SHARED).mode is SHARED


def test_a_queued_writer_is_not_starved_by_new_readers(locks: LockStore, resource: str) -> None:
    locks.acquire(resource, "reader-1", mode=SHARED, ttl_ms=LONG_TTL)
    writer = Background(lambda: locks.acquire(resource, "writer", mode=EXCLUSIVE, ttl_ms=LONG_TTL, wait_s=20))
    eventually(lambda: waiting(locks, resource) == 1, timeout=10, message="writer queued")

    with pytest.raises(LockTimeoutError):  # compatible with the holder, but behind the writer
        locks.acquire(resource, "reader-2", mode=SHARED, wait_s=0)
    locks.release(resource, "reader-1")

    grant = writer.result()
    assert grant.owner == "writer" and locks.check_fence(resource, grant.token)
    info = locks.get(resource)
    assert info is not None and info.waiting == 0 and [h.owner for h in info.holders] == ["writer"]


def test_a_dead_owners_lock_frees_itself_after_its_ttl(locks: LockStore, client: redis.Redis, namespace: str,
                                                       resource: str) -> None:
    dead = locks.acquire(resource, "crashed-worker", mode=EXCLUSIVE, ttl_ms=300)
    holders_key = f"{namespace}:lock:holders:{resource}"
    assert 0 < int(client.pttl(holders_key)) <= 300
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "successor", wait_s=0)

    successor = locks.acquire(resource, "successor", mode=EXCLUSIVE, ttl_ms=LONG_TTL, wait_s=10)
    assert successor.token > dead.token
    assert not locks.check_fence(resource, dead.token)
    assert locks.check_fence(resource, successor.token)
    with pytest.raises(LockNotHeldError):
        locks.renew(resource, "crashed-worker", ttl_ms=LONG_TTL)
    with pytest.raises(LockNotHeldError):
        locks.release(resource, "crashed-worker")

    locks.release(resource, "successor")
    assert client.exists(holders_key, f"{namespace}:lock:state:{resource}") == 0


def test_an_expired_shared_holder_is_pruned_while_others_live(locks: LockStore, resource: str) -> None:
    dead = locks.acquire(resource, "crashed-reader", mode=SHARED, ttl_ms=300)
    locks.acquire(resource, "live-reader", mode=SHARED, ttl_ms=LONG_TTL)  # keeps the keys alive
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "live-reader", mode=EXCLUSIVE)
    eventually(lambda: not locks.check_fence(resource, dead.token), timeout=5, message="the dead reader to lapse")
    info = locks.get(resource)
    assert info is not None and info.mode is SHARED and [h.owner for h in info.holders] == ["live-reader"]

    upgraded = locks.acquire(resource, "live-reader", mode=EXCLUSIVE, ttl_ms=LONG_TTL, wait_s=10)
    assert upgraded.token > dead.token and not locks.check_fence(resource, dead.token)
    info = locks.get(resource)
    assert info is not None and info.mode is EXCLUSIVE and [h.owner for h in info.holders] == ["live-reader"]


def test_only_the_owner_may_release_or_renew(locks: LockStore, resource: str) -> None:
    grant = locks.acquire(resource, "owner", ttl_ms=LONG_TTL)
    with pytest.raises(LockNotHeldError) as release:
        locks.release(resource, "intruder")
    assert release.value.code == "lock_not_held" and isinstance(release.value, StoreError)
    with pytest.raises(LockNotHeldError):
        locks.renew(resource, "intruder", ttl_ms=LONG_TTL)
    assert locks.check_fence(resource, grant.token)

    locks.release(resource, "owner")
    with pytest.raises(LockNotHeldError):  # twice is not "still fine": the caller lost track
        locks.release(resource, "owner")
    with pytest.raises(LockNotHeldError):
        locks.release(f"{resource}-never-locked", "owner")


def test_renew_extends_the_expiry_and_keeps_the_token(locks: LockStore, resource: str) -> None:
    first = locks.acquire(resource, "owner", ttl_ms=300)
    renewed = locks.renew(resource, "owner", ttl_ms=LONG_TTL)
    assert renewed.token == first.token and renewed.mode is EXCLUSIVE
    assert renewed.expires_at > first.expires_at
    info = locks.get(resource)
    assert info is not None and info.holders[0].expires_at == renewed.expires_at

    eventually(lambda: time.time() > first.expires_at + 0.2, timeout=5, message="the first TTL to pass")
    assert locks.check_fence(resource, first.token)
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "someone-else")


def test_acquiring_again_in_the_same_mode_renews(locks: LockStore, resource: str) -> None:
    first = locks.acquire(resource, "owner", mode=SHARED, ttl_ms=1_000)
    again = locks.acquire(resource, "owner", mode=SHARED, ttl_ms=LONG_TTL)
    assert again.token == first.token and again.expires_at > first.expires_at
    info = locks.get(resource)
    assert info is not None and len(info.holders) == 1


def test_upgrade_only_as_sole_holder_and_mode_changes_refence(locks: LockStore, resource: str) -> None:
    mine = locks.acquire(resource, "me", mode=SHARED, ttl_ms=LONG_TTL)
    locks.acquire(resource, "other", mode=SHARED, ttl_ms=LONG_TTL)
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "me", mode=EXCLUSIVE, ttl_ms=LONG_TTL)
    info = locks.get(resource)
    assert info is not None and info.mode is SHARED and len(info.holders) == 2  # the refusal changed nothing

    locks.release(resource, "other")
    upgraded = locks.acquire(resource, "me", mode=EXCLUSIVE, ttl_ms=LONG_TTL)
    assert upgraded.token > mine.token
    assert not locks.check_fence(resource, mine.token) and locks.check_fence(resource, upgraded.token)
    with pytest.raises(LockTimeoutError):
        locks.acquire(resource, "other", mode=SHARED)

    downgraded = locks.acquire(resource, "me", mode=SHARED, ttl_ms=LONG_TTL)
    assert downgraded.token > upgraded.token
    assert locks.acquire(resource, "other", mode=SHARED).mode is SHARED


def test_a_timed_out_waiter_leaves_the_queue(locks: LockStore, resource: str) -> None:
    locks.acquire(resource, "holder", ttl_ms=LONG_TTL)
    with pytest.raises(LockTimeoutError) as timed_out:
        locks.acquire(resource, "impatient", wait_s=0.2)
    assert "impatient" in str(timed_out.value)
    assert waiting(locks, resource) == 0
    locks.release(resource, "holder")
    locks.acquire(resource, "newcomer", wait_s=0)  # no ghost of "impatient" ahead of it


def test_a_dead_waiter_does_not_block_the_queue(settings: Settings, client: redis.Redis, resource: str) -> None:
    config = LockConfig(waiter_lease_ms=300, poll_max_s=0.02)
    locks = LockStore(client, settings, config)
    locks.acquire(resource, "holder", ttl_ms=LONG_TTL)
    waiter_code = (
        "from coretex.settings import load_settings\n"
        "from coretex.store._redis import connect\n"
        "from coretex.store.locks import LockConfig, LockStore\n"
        "s = load_settings()\n"
        "LockStore(connect(s), s, LockConfig(waiter_lease_ms=300, poll_max_s=0.02))"
        f".acquire({resource!r}, 'doomed-waiter', wait_s=60)\n"
    )
    env = {"CORETEX_REDIS_URL": settings.redis_url, "CORETEX_NAMESPACE": settings.namespace, "PATH": ""}
    doomed = subprocess.Popen([sys.executable, "-c", waiter_code], env=env)
    try:
        eventually(lambda: waiting(locks, resource) == 1, timeout=15, message="the doomed waiter to queue")
    finally:
        doomed.kill()
        doomed.wait()

    locks.release(resource, "holder")
    # The dead waiter asked to wait 60 s; its lease (300 ms) is what lets the survivor through.
    grant = locks.acquire(resource, "survivor", wait_s=10)
    assert grant.owner == "survivor" and waiting(locks, resource) == 0


def test_a_full_queue_refuses_more_waiters(settings: Settings, client: redis.Redis, resource: str) -> None:
    locks = LockStore(client, settings, LockConfig(max_waiters=1))
    locks.acquire(resource, "holder", ttl_ms=LONG_TTL)
    first = Background(lambda: locks.acquire(resource, "first-waiter", wait_s=20))
    eventually(lambda: waiting(locks, resource) == 1, timeout=10, message="first waiter queued")
    with pytest.raises(LockQueueFullError) as full:
        locks.acquire(resource, "second-waiter", wait_s=5)
    assert full.value.code == "lock_queue_full"
    locks.release(resource, "holder")
    assert first.result().owner == "first-waiter"


def test_keys_carry_the_namespace_and_resources_never_collide(
    locks: LockStore, client: redis.Redis, namespace: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    repo, nested = f"repo:{tag}", f"repo:{tag}:queue"
    a = locks.acquire(repo, "one", ttl_ms=LONG_TTL)
    b = locks.acquire(nested, "two", ttl_ms=LONG_TTL)  # a resource that extends another's name
    assert locks.check_fence(repo, a.token) and locks.check_fence(nested, b.token)
    assert not locks.check_fence(repo, b.token)

    keys = {str(k) for k in client.scan_iter(match=f"*{tag}*")}
    assert keys == {f"{namespace}:lock:{part}:{r}" for part in ("holders", "state") for r in (repo, nested)}
    for key in keys:
        assert 0 < int(client.pttl(key)) <= LONG_TTL
    assert client.exists(f"{namespace}:lock:fence") == 1
    assert client.pttl(f"{namespace}:lock:fence") == -1  # never expires: a reset would reissue tokens


BAD_CALLS: list[tuple[str, Callable[[LockStore], object]]] = [
    ("owner", lambda s: s.acquire("repo:x", "")),
    ("owner", lambda s: s.acquire("repo:x", "two words")),
    ("owner", lambda s: s.release("repo:x", "")),
    ("resource", lambda s: s.acquire("", "me")),
    ("resource", lambda s: s.acquire("repo x", "me")),
    ("resource", lambda s: s.acquire("repo:\nx", "me")),
    ("resource", lambda s: s.acquire("repo:\x00", "me")),
    ("resource", lambda s: s.acquire("r" * 257, "me")),
    ("resource", lambda s: s.get("tab\there")),
    ("resource", lambda s: s.renew(" ", "me")),
    ("ttl_ms", lambda s: s.acquire("repo:x", "me", ttl_ms=0)),
    ("ttl_ms", lambda s: s.acquire("repo:x", "me", ttl_ms=-5)),
    ("ttl_ms", lambda s: s.acquire("repo:x", "me", ttl_ms=1.5)),  # type: ignore[arg-type]
    ("ttl_ms", lambda s: s.acquire("repo:x", "me", ttl_ms=LockConfig().max_ttl_ms + 1)),
    ("ttl_ms", lambda s: s.renew("repo:x", "me", ttl_ms=0)),
    ("mode", lambda s: s.acquire("repo:x", "me", mode="write")),
    ("wait_s", lambda s: s.acquire("repo:x", "me", wait_s=-1)),
    ("wait_s", lambda s: s.acquire("repo:x", "me", wait_s=math.nan)),
    ("token", lambda s: s.check_fence("repo:x", "7")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("field", "call"), BAD_CALLS)
def test_bad_input_is_refused_naming_the_field(
    locks: LockStore, client: redis.Redis, namespace: str, field: str, call: Callable[[LockStore], object]
) -> None:
    with pytest.raises(LockRequestError) as refused:
        call(locks)
    assert refused.value.field == field and field in str(refused.value)
    assert isinstance(refused.value, ValueError) and refused.value.code == "invalid_lock_request"
    assert list(client.scan_iter(match=f"{namespace}:*")) == []  # nothing was written


def test_edge_of_valid_names_is_accepted(locks: LockStore) -> None:
    longest = "r" * 256
    assert locks.acquire(longest, "o" * 256, ttl_ms=1).resource == longest
    assert locks.acquire("cluster/ns-ü", "run:1/step:2", mode=SHARED).owner == "run:1/step:2"

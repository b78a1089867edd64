"""ctx:/res: pointers: immutable, tenant-owned, with TTLs, on a real redis-server."""

from __future__ import annotations

import pytest

from coretex.errors import NotFoundError, PointerError
from coretex.settings import Settings
from coretex.store import PointerStore, connect

pytestmark = pytest.mark.integration


def test_pointer_round_trip_with_ttl_and_first_write_wins(settings: Settings) -> None:
    client = connect(settings)
    store = PointerStore(client, settings)

    ctx = store.put_context("job-1", "acme", {"a": 1})
    again = store.put_context("job-1", "acme", {"a": "replaced"})  # a rerun reuses, never rewrites

    assert ctx.uri == again.uri == "redis://ctx:job-1"
    assert store.get_json(ctx.uri, "acme") == {"a": 1}
    assert 0 < client.ttl(f"{settings.namespace}:ctx:job-1") <= settings.result_ttl_s
    res = store.put_result("job-1", "acme", [1, 2])
    assert store.get_json(res.uri, "acme") == [1, 2]


def test_another_tenant_cannot_read_a_pointer(settings: Settings) -> None:
    store = PointerStore(connect(settings), settings)
    ptr = store.put_result("job-2", "acme", {"secret": "plans"})

    with pytest.raises(NotFoundError):
        store.get_json(ptr.uri, "globex")
    with pytest.raises(NotFoundError):
        store.get_json("redis://res:never-written", "acme")


def test_malformed_pointer_is_refused(settings: Settings) -> None:
    store = PointerStore(connect(settings), settings)
    with pytest.raises(PointerError):
        store.get_json("redis://ctx:../../etc", "acme")

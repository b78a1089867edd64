"""The schema registry on a real redis-server: versions, idempotency, refs, references, concurrency."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from coretex.errors import ConfigError, NotFoundError, StoreError
from coretex.model.schema import (
    InvalidSchemaIdError,
    SchemaInvalidError,
    SchemaRef,
    SchemaTooLargeError,
    SchemaViolationError,
    UnresolvedRefError,
)
from coretex.settings import Settings
from coretex.store._redis import connect
from coretex.store.schemas import (
    SchemaInUseError,
    SchemaLimitError,
    SchemaRegistryLimits,
    SchemaStore,
    SchemaSummary,
)

pytestmark = pytest.mark.integration

PERSON = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
PERSON_V2 = {**PERSON, "properties": {"name": {"type": "string", "minLength": 1}}}
TEAM = {"type": "array", "items": {"$ref": "coretex:schema:acme.person@1"}}


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    client = connect(settings)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, settings: Settings) -> SchemaStore:
    return SchemaStore(client, settings)


def keys_of(client: redis.Redis, settings: Settings) -> set[str]:
    return set(cast(list[str], client.keys(f"{settings.namespace}:*")))


def test_register_get_list_and_versions(store: SchemaStore, client: redis.Redis, settings: Settings) -> None:
    first = store.register("acme.person", PERSON)
    second = store.register("acme.person", PERSON_V2)
    store.register("acme.address", {"type": "object"})
    assert (first.version, first.created, second.version, second.created) == (1, True, 2, True)

    latest = store.get("acme.person")
    assert (latest.version, latest.schema, latest.uri) == (2, PERSON_V2, "coretex:schema:acme.person@2")
    assert store.get("acme.person", 1).schema == PERSON
    assert store.get("acme.person", 1).sha256 == first.sha256
    assert store.versions("acme.person") == [1, 2]
    assert store.list() == [SchemaSummary("acme.address", 1), SchemaSummary("acme.person", 2)]
    assert all(key.startswith(f"{settings.namespace}:") for key in keys_of(client, settings))

    raw = json.loads(cast(str, client.hget(f"{settings.namespace}:schema:acme.person:versions", "1")))
    meta = cast(dict[str, str], client.hgetall(f"{settings.namespace}:schema:acme.person:meta"))
    assert raw["schema_version"] == "1" and meta["schema_version"] == "1"
    assert "tenant" not in raw and "tenant" not in meta  # global in this version: no owner to check


def test_missing_schema_and_version_are_not_found(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    with pytest.raises(NotFoundError, match="coretex:schema:acme.person@7"):
        store.get("acme.person", 7)
    with pytest.raises(NotFoundError):
        store.get("acme.nobody")
    with pytest.raises(NotFoundError):
        store.versions("acme.nobody")
    with pytest.raises(InvalidSchemaIdError):
        store.get("Acme:Person")


def test_registering_identical_content_returns_the_existing_version(store: SchemaStore) -> None:
    first = store.register("acme.person", PERSON)
    store.register("acme.person", PERSON_V2)
    reordered = dict(reversed(list(PERSON.items())))  # same content, other key order
    again = store.register("acme.person", reordered)
    assert (again.version, again.created, again.sha256) == (1, False, first.sha256)
    assert store.versions("acme.person") == [1, 2]


def test_invalid_schema_is_refused_and_nothing_is_stored(
    store: SchemaStore, client: redis.Redis, settings: Settings
) -> None:
    with pytest.raises(SchemaInvalidError) as caught:
        store.register("acme.broken", {"properties": {"n": {"type": "numbr"}}})
    assert caught.value.code == "schema_invalid" and caught.value.path == "/properties/n/type"
    with pytest.raises(SchemaInvalidError, match="must be a JSON object"):
        store.register("acme.broken", True)  # type: ignore[arg-type]
    with pytest.raises(InvalidSchemaIdError):
        store.register("Acme.Broken", PERSON)
    assert keys_of(client, settings) == set()
    assert store.list() == []


def test_oversized_schema_is_refused(client: redis.Redis, settings: Settings) -> None:
    store = SchemaStore(client, settings, SchemaRegistryLimits(max_schema_bytes=200))
    big = {"description": "x" * 200}
    with pytest.raises(SchemaTooLargeError, match="over the limit of 200") as caught:
        store.register("acme.big", big)
    assert caught.value.code == "schema_too_large"
    assert keys_of(client, settings) == set()
    assert store.register("acme.small", {"description": "x" * 10}).version == 1


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_versions"):
        SchemaRegistryLimits(max_versions=0)


def test_version_and_id_limits_are_enforced(client: redis.Redis, settings: Settings) -> None:
    store = SchemaStore(client, settings, SchemaRegistryLimits(max_versions=2, max_schemas=2))
    store.register("acme.a", {"title": "1"})
    store.register("acme.a", {"title": "2"})
    with pytest.raises(SchemaLimitError, match="2 versions"):
        store.register("acme.a", {"title": "3"})
    store.register("acme.b", {})
    with pytest.raises(SchemaLimitError, match="2 schema ids"):
        store.register("acme.c", {})
    store.delete("acme.a", 1)
    assert store.register("acme.a", {"title": "3"}).version == 3  # versions are never reused


def test_unknown_ref_is_refused_and_nothing_is_stored(
    store: SchemaStore, client: redis.Redis, settings: Settings
) -> None:
    with pytest.raises(UnresolvedRefError) as caught:
        store.register("acme.team", TEAM)
    assert caught.value.ref == "coretex:schema:acme.person@1" and caught.value.path == "/items/$ref"
    store.register("acme.person", PERSON)
    with pytest.raises(UnresolvedRefError):
        store.register("acme.team", {"items": {"$ref": "coretex:schema:acme.person@2"}})
    with pytest.raises(UnresolvedRefError):
        store.register("acme.team", {"items": {"$ref": "https://example.com/person.json"}})
    assert [s.id for s in store.list()] == ["acme.person"]


def test_validation_through_a_registered_ref(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    team = store.register("acme.team", TEAM)
    assert store.get("acme.team").refs == ("coretex:schema:acme.person@1",)
    store.validate([{"name": "ada"}], "coretex:schema:acme.team")
    store.validate([], SchemaRef("acme.team", team.version))
    with pytest.raises(SchemaViolationError) as caught:
        store.validate([{"name": "ada"}, {"name": 1}, {}], "acme.team@1")
    assert [(v.pointer, v.validator) for v in caught.value.violations] == [("/1/name", "type"), ("/2", "required")]
    assert "coretex:schema:acme.team@1" in str(caught.value)
    inline = {"properties": {"lead": {"$ref": "coretex:schema:acme.person"}}}
    with pytest.raises(SchemaViolationError, match="/lead: 'name' is a required property"):
        store.validate({"lead": {}}, inline)
    with pytest.raises(NotFoundError):
        store.validate({}, "acme.nobody")


def test_unpinned_ref_follows_the_latest_version(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    store.register("acme.team", {"items": {"$ref": "coretex:schema:acme.person"}})
    store.validate([{"name": ""}], "acme.team")
    store.register("acme.person", PERSON_V2)
    with pytest.raises(SchemaViolationError, match="/0/name"):
        store.validate([{"name": ""}], "acme.team")


def test_delete_refused_while_a_referrer_uses_it(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    assert store.add_reference("acme.person", "workflow:wf-1") is True
    assert store.add_reference("acme.person", "workflow:wf-1") is False
    store.add_reference("acme.person", "pack:acme")
    assert store.references("acme.person") == ["pack:acme", "workflow:wf-1"]
    with pytest.raises(SchemaInUseError) as caught:
        store.delete("acme.person")
    assert caught.value.code == "schema_in_use"
    assert caught.value.referrers == ["pack:acme", "workflow:wf-1"]
    assert "pack:acme, workflow:wf-1" in str(caught.value)
    with pytest.raises(SchemaInUseError):
        store.delete("acme.person", 1)
    assert store.versions("acme.person") == [1]

    assert store.remove_reference("acme.person", "pack:acme") is True
    assert store.remove_reference("acme.person", "pack:acme") is False
    store.remove_reference("acme.person", "workflow:wf-1")
    assert store.delete("acme.person") == 1
    with pytest.raises(NotFoundError):
        store.get("acme.person")
    assert store.list() == []


def test_references_need_an_existing_schema_and_a_sane_referrer(store: SchemaStore) -> None:
    with pytest.raises(NotFoundError):
        store.add_reference("acme.nobody", "workflow:wf-1")
    store.register("acme.person", PERSON)
    for bad in ("", "has space", "x" * 257):
        with pytest.raises(ConfigError):
            store.add_reference("acme.person", bad)
    assert store.references("acme.person") == []


def test_delete_refused_while_another_schema_refs_it(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    store.register("acme.team", TEAM)
    assert store.dependents("acme.person") == ["acme.team@1"]
    with pytest.raises(SchemaInUseError) as caught:
        store.delete("acme.person")
    assert caught.value.dependents == ["acme.team@1"] and caught.value.referrers == []
    assert "schema acme.team@1" in str(caught.value)

    store.delete("acme.team")  # the dependent goes, and its edge with it
    assert store.dependents("acme.person") == []
    assert store.delete("acme.person") == 1


def test_force_deletes_a_schema_in_use(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    store.register("acme.person", PERSON_V2)
    store.register("acme.team", TEAM)
    store.add_reference("acme.person", "workflow:wf-1")
    assert store.delete("acme.person", force=True) == 2
    assert [s.id for s in store.list()] == ["acme.team"]
    with pytest.raises(UnresolvedRefError, match="acme.person@1"):
        store.validate([{"name": "x"}], "acme.team")
    # The users are still recorded: a re-registered id stays protected, under a new version.
    assert store.references("acme.person") == ["workflow:wf-1"]
    assert store.register("acme.person", PERSON).version == 3
    with pytest.raises(SchemaInUseError):
        store.delete("acme.person", 3)


def test_delete_one_version_moves_latest_and_frees_its_content(store: SchemaStore) -> None:
    store.register("acme.person", PERSON)
    store.register("acme.person", PERSON_V2)
    assert store.delete("acme.person", 2) == 1
    assert store.get("acme.person").version == 1
    assert store.list() == [SchemaSummary("acme.person", 1)]
    with pytest.raises(NotFoundError):
        store.delete("acme.person", 2)
    again = store.register("acme.person", PERSON_V2)  # its digest went with it: a new version
    assert (again.version, again.created) == (3, True)


def test_a_schema_refing_an_older_version_of_itself_does_not_block_deleting_the_id(store: SchemaStore) -> None:
    store.register("acme.tree", {"type": "object"})
    store.register("acme.tree", {"properties": {"base": {"$ref": "coretex:schema:acme.tree@1"}}})
    with pytest.raises(SchemaInUseError, match="acme.tree@2"):
        store.delete("acme.tree", 1)
    assert store.delete("acme.tree") == 2
    assert store.dependents("acme.tree") == []


def test_schemas_are_global_not_per_tenant_but_per_namespace(
    store: SchemaStore, client: redis.Redis, settings: Settings
) -> None:
    store.register("acme.person", PERSON)
    # Another process of the same deployment (any tenant) sees the same registry...
    other_client = connect(settings)
    try:
        assert SchemaStore(other_client, settings).get("acme.person").schema == PERSON
    finally:
        other_client.close()
    # ...while another deployment namespace does not.
    elsewhere = Settings(**{**vars(settings), "namespace": settings.namespace + "x"})
    with pytest.raises(NotFoundError):
        SchemaStore(client, elsewhere).get("acme.person")


def test_concurrent_registrations_get_distinct_gapless_versions(settings: Settings) -> None:
    barrier = threading.Barrier(10)
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def register(n: int) -> None:
        client = connect(settings)
        try:
            store = SchemaStore(client, settings)
            barrier.wait(timeout=30)
            results[n] = store.register("acme.race", {"title": f"variant {n}"}).version
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=register, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert sorted(results.values()) == list(range(1, 11))
    check = connect(settings)
    try:
        store = SchemaStore(check, settings)
        assert store.versions("acme.race") == list(range(1, 11))
        for n, version in results.items():
            assert store.get("acme.race", version).schema == {"title": f"variant {n}"}
    finally:
        check.close()


def test_concurrent_identical_registrations_share_one_version(settings: Settings) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[tuple[int, bool]] = []

    def register() -> None:
        client = connect(settings)
        try:
            barrier.wait(timeout=30)
            got = SchemaStore(client, settings).register("acme.same", PERSON)
            outcomes.append((got.version, got.created))
        finally:
            client.close()

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [(1, False), (1, False), (1, False), (1, True)]


def test_redis_outage_is_a_store_error(settings: Settings) -> None:
    dead = Settings(**{**vars(settings), "redis_url": "redis://127.0.0.1:1/0"})
    client = connect(dead)
    try:
        store = SchemaStore(client, dead)
        with pytest.raises(StoreError, match="register schema acme.person|look up schema acme.person"):
            store.register("acme.person", PERSON)
        with pytest.raises(StoreError) as caught:
            store.validate({}, {"$ref": "coretex:schema:acme.person"})
        assert not isinstance(caught.value, NotFoundError)
    finally:
        client.close()

"""The artifact store on a real redis-server: retention classes, chunking, limits, encryption, tenants, sweep."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from coretex.errors import ConfigError, NotFoundError, PointerError, StoreError
from coretex.protocol.pointers import ArtifactPointer
from coretex.settings import Settings
from coretex.store._redis import connect
from coretex.store.artifacts import (
    ArtifactConfig,
    ArtifactCorruptError,
    ArtifactDecryptionError,
    ArtifactMetadata,
    ArtifactStore,
    ArtifactTooLargeError,
    InvalidArtifactError,
    Retention,
)

pytestmark = pytest.mark.integration

DAY = 24 * 3600
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SMALL = ArtifactConfig(chunk_bytes=1024, max_bytes=8192)
MARKER = b"PLAINTEXT-MARKER-"


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    """The decoding client every store gets in production (``connect``)."""
    client = connect(settings)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, settings: Settings) -> ArtifactStore:
    return ArtifactStore(client, settings, SMALL)


def _keys(raw: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(raw.scan_iter(match=f"{namespace}:*"))


def _chunk_key(namespace: str, ptr: ArtifactPointer, n: int) -> str:
    return f"{namespace}:art:{ptr.id}:chunk:{n}"


def _content(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


# ---- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retention", "ttl"),
    [(Retention.SHORT, DAY), (Retention.STANDARD, 30 * DAY), (Retention.AUDIT, 365 * DAY)],
)
def test_round_trip_per_retention_class_with_its_ttl(
    client: redis.Redis, settings: Settings, redis_client: redis.Redis, retention: Retention, ttl: int
) -> None:
    store = ArtifactStore(client, settings, ArtifactConfig())
    content = b"log line 1\nlog line 2\n"
    meta = ArtifactMetadata("acme", retention.value, "text/plain", {"step": "collect", "kind": "log"})
    before = time.time()
    ptr = store.put_artifact(content, meta)

    assert uuid.UUID(hex=ptr.id).version == 4 and ptr.id == uuid.UUID(ptr.id).hex
    assert ptr.uri == f"redis://art:{ptr.id}" == ArtifactPointer(ptr.id).uri
    assert store.get_artifact(ptr, "acme") == content
    assert store.get_artifact(ptr.uri, "acme") == content
    info = store.head_artifact(ptr, "acme")
    assert (info.tenant, info.content_type, info.labels, info.retention) == (
        "acme", "text/plain", {"step": "collect", "kind": "log"}, retention
    )
    assert (info.size, info.sha256, info.chunks, info.encrypted) == (
        len(content), hashlib.sha256(content).hexdigest(), 1, False
    )
    assert before <= info.created_at <= time.time()
    assert info.expires_at == pytest.approx(info.created_at + ttl)
    for key in (f"{settings.namespace}:art:{ptr.id}", _chunk_key(settings.namespace, ptr, 0)):
        assert ttl - 60 <= redis_client.ttl(key) <= ttl
    assert redis_client.zscore(f"{settings.namespace}:art:expiry", ptr.id) == pytest.approx(info.expires_at)


def test_default_retention_is_standard_and_empty_content_round_trips(store: ArtifactStore) -> None:
    ptr = store.put_artifact(b"", ArtifactMetadata("acme"))
    info = store.head_artifact(ptr, "acme")
    assert (info.retention, info.size, info.chunks, info.content_type) == (
        Retention.STANDARD, 0, 0, "application/octet-stream"
    )
    assert store.get_artifact(ptr, "acme") == b""
    assert list(store.stream_artifact(ptr, "acme")) == []


def test_multi_chunk_artifact_round_trips_and_streams_in_order(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    content = os.urandom(5000)
    ptr = store.put_artifact(content, ArtifactMetadata("acme", "short"))

    sizes = [redis_client.strlen(_chunk_key(settings.namespace, ptr, n)) for n in range(5)]
    assert sizes == [1024, 1024, 1024, 1024, 904]
    assert redis_client.exists(_chunk_key(settings.namespace, ptr, 5)) == 0
    chunks = list(store.stream_artifact(ptr, "acme"))
    assert [len(c) for c in chunks] == sizes
    assert b"".join(chunks) == content
    assert store.get_artifact(ptr, "acme") == content
    assert store.head_artifact(ptr, "acme").chunks == 5


# ---- size limits ----------------------------------------------------------------------------
def test_global_limit_refuses_before_writing_and_the_limit_itself_is_accepted(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    with pytest.raises(ArtifactTooLargeError) as caught:
        store.put_artifact(b"x" * 8193, ArtifactMetadata("acme"))
    assert caught.value.code == "artifact_too_large"
    assert (caught.value.size, caught.value.limit) == (8193, 8192)
    message = str(caught.value)
    assert "8193" in message and "8192" in message and "global" in message
    assert _keys(redis_client, settings.namespace) == []

    ptr = store.put_artifact(b"x" * 8192, ArtifactMetadata("acme"))
    assert len(store.get_artifact(ptr, "acme")) == 8192


def test_policy_limit_smaller_than_global_wins_and_larger_does_not_lift_global(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    with pytest.raises(ArtifactTooLargeError) as caught:
        store.put_artifact(b"x" * 1001, ArtifactMetadata("acme"), max_bytes=1000)
    message = str(caught.value)
    assert "policy" in message and "1000" in message and "1001" in message
    assert caught.value.source.startswith("policy")

    with pytest.raises(ArtifactTooLargeError) as caught:
        store.put_artifact(b"x" * 9000, ArtifactMetadata("acme"), max_bytes=100_000)
    assert caught.value.limit == 8192 and "global" in str(caught.value)
    assert _keys(redis_client, settings.namespace) == []

    ptr = store.put_artifact(b"x" * 1000, ArtifactMetadata("acme"), max_bytes=1000)
    assert store.get_artifact(ptr, "acme") == b"x" * 1000


# ---- encryption -----------------------------------------------------------------------------
def test_encrypted_chunks_are_ciphertext_at_rest_and_round_trip(
    client: redis.Redis, settings: Settings, redis_client: redis.Redis
) -> None:
    store = ArtifactStore(client, settings, ArtifactConfig(chunk_bytes=1024, encryption_key=KEY))
    content = _content(5000)
    ptr = store.put_artifact(content, ArtifactMetadata("acme", "audit"))

    record = redis_client.hgetall(f"{settings.namespace}:art:{ptr.id}")
    assert record[b"encrypted"] == b"1"
    chunk_keys = sorted(k for k in _keys(redis_client, settings.namespace) if b":chunk:" in k)
    assert len(chunk_keys) == 6  # nonce and tag included, a value holds 996 plaintext bytes: 5000 = 5*996 + 20
    values = [redis_client.get(_chunk_key(settings.namespace, ptr, n)) or b"" for n in range(6)]
    assert [len(v) for v in values] == [1024] * 5 + [20 + 28]
    assert not any(MARKER[:8] in value for value in values)
    assert store.get_artifact(ptr, "acme") == content
    assert b"".join(store.stream_artifact(ptr, "acme")) == content


def test_unencrypted_store_keeps_plaintext_and_flags_it(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    ptr = store.put_artifact(_content(100), ArtifactMetadata("acme"))
    assert redis_client.hget(f"{settings.namespace}:art:{ptr.id}", "encrypted") == b"0"
    assert MARKER in (redis_client.get(_chunk_key(settings.namespace, ptr, 0)) or b"")


def test_reading_encrypted_artifact_without_key_or_with_wrong_key_fails_clearly(
    client: redis.Redis, settings: Settings
) -> None:
    writer = ArtifactStore(client, settings, ArtifactConfig(encryption_key=KEY))
    ptr = writer.put_artifact(_content(300), ArtifactMetadata("acme"))

    no_key = ArtifactStore(client, settings, ArtifactConfig())
    assert no_key.head_artifact(ptr, "acme").encrypted  # the record itself is readable
    with pytest.raises(ArtifactDecryptionError, match="CORETEX_ARTIFACT_KEY"):
        no_key.get_artifact(ptr, "acme")
    with pytest.raises(ArtifactDecryptionError):
        no_key.stream_artifact(ptr, "acme")  # refused when asked, not at the first chunk

    wrong_key = ArtifactStore(client, settings, ArtifactConfig(encryption_key=OTHER_KEY))
    with pytest.raises(ArtifactDecryptionError, match="encrypted with key") as caught:
        wrong_key.get_artifact(ptr, "acme")
    assert isinstance(caught.value, StoreError) and caught.value.code == "artifact_decryption_failed"


def test_tampered_or_swapped_ciphertext_chunks_are_rejected(
    client: redis.Redis, settings: Settings, redis_client: redis.Redis
) -> None:
    store = ArtifactStore(client, settings, ArtifactConfig(chunk_bytes=1024, encryption_key=KEY))
    ptr = store.put_artifact(_content(3000), ArtifactMetadata("acme"))
    first, second = (_chunk_key(settings.namespace, ptr, n) for n in (0, 1))
    original_first, original_second = redis_client.get(first), redis_client.get(second)
    assert isinstance(original_first, bytes) and isinstance(original_second, bytes)

    redis_client.set(first, original_second, keepttl=True)
    redis_client.set(second, original_first, keepttl=True)
    with pytest.raises(ArtifactDecryptionError, match="chunk 0"):
        store.get_artifact(ptr, "acme")

    flipped = bytearray(original_first)
    flipped[40] ^= 0x01
    redis_client.set(first, bytes(flipped), keepttl=True)
    redis_client.set(second, original_second, keepttl=True)
    with pytest.raises(ArtifactDecryptionError, match="chunk 0"):
        store.get_artifact(ptr, "acme")


# ---- integrity ------------------------------------------------------------------------------
def test_corrupted_chunk_is_detected_by_sha256(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    content = _content(3000)
    ptr = store.put_artifact(content, ArtifactMetadata("acme"))
    redis_client.set(_chunk_key(settings.namespace, ptr, 1), b"Z" * 1024, keepttl=True)

    with pytest.raises(ArtifactCorruptError, match="sha256"):
        store.get_artifact(ptr, "acme")
    stream = store.stream_artifact(ptr, "acme")
    assert next(stream) == content[:1024]
    with pytest.raises(ArtifactCorruptError):
        list(stream)


def test_missing_or_resized_chunk_is_reported_as_corrupt(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    ptr = store.put_artifact(_content(3000), ArtifactMetadata("acme"))
    redis_client.delete(_chunk_key(settings.namespace, ptr, 2))
    with pytest.raises(ArtifactCorruptError, match="chunk 2 of 3 is missing"):
        store.get_artifact(ptr, "acme")

    other = store.put_artifact(_content(3000), ArtifactMetadata("acme"))
    redis_client.set(_chunk_key(settings.namespace, other, 0), b"short", keepttl=True)
    with pytest.raises(ArtifactCorruptError, match="chunk 0"):
        store.get_artifact(other, "acme")


# ---- tenants, pointers, delete --------------------------------------------------------------
def test_another_tenant_cannot_tell_the_artifact_exists(store: ArtifactStore) -> None:
    ptr = store.put_artifact(b"evidence", ArtifactMetadata("acme", "audit"))
    missing = ArtifactPointer(uuid.uuid4().hex)

    for read in (store.get_artifact, store.head_artifact, store.stream_artifact, store.delete_artifact):
        with pytest.raises(NotFoundError) as foreign:
            read(ptr, "globex")
        with pytest.raises(NotFoundError) as absent:
            read(missing, "globex")
        assert str(foreign.value).replace(ptr.id, "X") == str(absent.value).replace(missing.id, "X")
    assert store.get_artifact(ptr, "acme") == b"evidence"  # the foreign delete removed nothing


def test_foreign_or_malformed_pointers(store: ArtifactStore) -> None:
    ptr = store.put_artifact(_content(2000), ArtifactMetadata("acme"))
    with pytest.raises(NotFoundError):  # a chunk key spelled as an id is not an artifact
        store.get_artifact(f"redis://art:{ptr.id}:chunk:0", "acme")
    with pytest.raises(NotFoundError):
        store.get_artifact("redis://art:expiry", "acme")
    with pytest.raises(PointerError):
        store.get_artifact(f"redis://ctx:{ptr.id}", "acme")
    with pytest.raises(PointerError):
        store.get_artifact("s3://bucket/x", "acme")


def test_delete_removes_every_key(store: ArtifactStore, settings: Settings, redis_client: redis.Redis) -> None:
    ptr = store.put_artifact(_content(3000), ArtifactMetadata("acme"))
    assert len(_keys(redis_client, settings.namespace)) == 5  # record, 3 chunks, index
    store.delete_artifact(ptr, "acme")
    assert _keys(redis_client, settings.namespace) == []
    with pytest.raises(NotFoundError):
        store.get_artifact(ptr, "acme")
    with pytest.raises(NotFoundError):
        store.delete_artifact(ptr, "acme")


def test_record_past_its_expiry_reads_as_missing(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    ptr = store.put_artifact(b"old", ArtifactMetadata("acme", "short"))
    redis_client.hset(f"{settings.namespace}:art:{ptr.id}", "expires_at", repr(time.time() - 1))
    with pytest.raises(NotFoundError):
        store.head_artifact(ptr, "acme")


# ---- retention sweep ------------------------------------------------------------------------
def test_sweep_removes_only_what_expired_and_keeps_audit_for_its_class_ttl(
    client: redis.Redis, settings: Settings, redis_client: redis.Redis
) -> None:
    store = ArtifactStore(client, settings, ArtifactConfig(chunk_bytes=1024))
    short = store.put_artifact(_content(2500), ArtifactMetadata("acme", "short"))
    audit = store.put_artifact(_content(2500), ArtifactMetadata("acme", "audit"))
    short_info, audit_info = store.head_artifact(short, "acme"), store.head_artifact(audit, "acme")
    index = f"{settings.namespace}:art:expiry"
    assert 365 * DAY - 60 <= redis_client.ttl(_chunk_key(settings.namespace, audit, 2)) <= 365 * DAY

    assert store.sweep(time.time()) == 0
    assert store.sweep(short_info.expires_at - 1) == 0
    assert redis_client.zcard(index) == 2

    assert store.sweep(short_info.expires_at + 1) == 1
    assert not [k for k in _keys(redis_client, settings.namespace) if short.id.encode() in k]
    assert redis_client.zscore(index, short.id) is None

    assert store.sweep(audit_info.created_at + 364 * DAY) == 0  # well past every other class
    assert store.get_artifact(audit, "acme") == _content(2500)
    assert store.sweep(audit_info.expires_at + 1) == 1
    assert _keys(redis_client, settings.namespace) == []


def test_sweep_drops_index_entries_of_artifacts_redis_already_expired(
    store: ArtifactStore, settings: Settings, redis_client: redis.Redis
) -> None:
    ptrs = [store.put_artifact(b"tmp", ArtifactMetadata("acme", "short")) for _ in range(3)]
    for ptr in ptrs:  # what Redis TTL expiry leaves behind: only the index entry
        redis_client.delete(f"{settings.namespace}:art:{ptr.id}", _chunk_key(settings.namespace, ptr, 0))

    assert store.sweep(time.time() + 2 * DAY, limit=2) == 0
    assert redis_client.zcard(f"{settings.namespace}:art:expiry") == 1  # bounded work per call
    assert store.sweep(time.time() + 2 * DAY) == 0
    assert _keys(redis_client, settings.namespace) == []


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "metadata", "max_bytes", "named"),
    [
        (b"x", ArtifactMetadata(""), None, "tenant"),
        (b"x", ArtifactMetadata("   "), None, "tenant"),
        (b"x", ArtifactMetadata("acme", "forever"), None, "'forever'"),
        (b"x", ArtifactMetadata("acme", content_type=""), None, "content_type"),
        (b"x", ArtifactMetadata("acme", labels={"k": 1}), None, "labels"),  # type: ignore[dict-item]
        (b"x", ArtifactMetadata("acme", labels={"": "v"}), None, "label"),
        ("text", ArtifactMetadata("acme"), None, "bytes"),
        (b"x", ArtifactMetadata("acme"), 0, "max_bytes"),
    ],
)
def test_bad_input_is_refused_naming_the_problem_and_writes_nothing(
    store: ArtifactStore,
    settings: Settings,
    redis_client: redis.Redis,
    content: bytes,
    metadata: ArtifactMetadata,
    max_bytes: int | None,
    named: str,
) -> None:
    with pytest.raises(InvalidArtifactError, match=named) as caught:
        store.put_artifact(content, metadata, max_bytes=max_bytes)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, StoreError)
    assert caught.value.code == "invalid_artifact"
    assert _keys(redis_client, settings.namespace) == []


def test_reads_refuse_an_empty_tenant(store: ArtifactStore) -> None:
    ptr = store.put_artifact(b"x", ArtifactMetadata("acme"))
    with pytest.raises(InvalidArtifactError, match="tenant"):
        store.get_artifact(ptr, "")


# ---- configuration --------------------------------------------------------------------------
def test_config_from_env_reads_every_variable() -> None:
    env = {
        "CORETEX_ARTIFACT_KEY": base64.b64encode(KEY).decode(),
        "CORETEX_ARTIFACT_MAX_BYTES": "4096",
        "CORETEX_ARTIFACT_CHUNK_BYTES": "2048",
        "CORETEX_ARTIFACT_TTL_SHORT": "60",
        "CORETEX_ARTIFACT_TTL_STANDARD": "600",
        "CORETEX_ARTIFACT_TTL_AUDIT": "6000",
    }
    config = ArtifactConfig.from_env(env)
    assert config == ArtifactConfig(60, 600, 6000, 4096, 2048, KEY)
    assert [config.ttl_for(r) for r in Retention] == [60, 600, 6000]
    assert "encryption_key" not in repr(config) and repr(KEY) not in repr(config)
    assert ArtifactConfig.from_env({}) == ArtifactConfig()
    assert ArtifactConfig() == ArtifactConfig(DAY, 30 * DAY, 365 * DAY, 16 * 1024 * 1024, 256 * 1024, None)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORETEX_ARTIFACT_MAX_BYTES", "lots"),
        ("CORETEX_ARTIFACT_MAX_BYTES", "0"),
        ("CORETEX_ARTIFACT_CHUNK_BYTES", "16"),
        ("CORETEX_ARTIFACT_TTL_SHORT", "-5"),
        ("CORETEX_ARTIFACT_TTL_AUDIT", "3600"),  # shorter than standard
        ("CORETEX_ARTIFACT_KEY", "not base64!"),
        ("CORETEX_ARTIFACT_KEY", base64.b64encode(b"sixteen byte key").decode()),
    ],
)
def test_config_from_env_names_the_bad_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        ArtifactConfig.from_env({variable: value})
    if variable == "CORETEX_ARTIFACT_KEY":
        assert value not in str(caught.value)  # never echo key material

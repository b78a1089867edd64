"""Artifacts: immutable, tenant-owned blobs behind ``redis://art:<id>`` pointers, kept per retention class.

Keys (every key of one artifact carries the TTL of its retention class):
    <ns>:art:<id>              hash    {tenant, content_type, labels (JSON), retention, size, sha256, chunks,
                                        chunk_bytes, encrypted, key_id, created_at, expires_at}
    <ns>:art:<id>:chunk:<n>    string  content bytes [n*chunk_bytes, (n+1)*chunk_bytes); encrypted: nonce|ciphertext|tag
    <ns>:art:expiry            zset    artifact ids scored by expires_at: the sweep's work list, pruned by the sweep

One MULTI/EXEC writes every chunk, the record and the index entry, so a reader sees a whole artifact or
none, and a crash leaves no orphan chunk. Sizes are checked before anything is written; content over the
limit is refused, never truncated. No Redis value is larger than ``chunk_bytes`` (encryption overhead
included), so one artifact never makes one huge Redis value.

Encryption at rest is AES-256-GCM per chunk, each with a fresh random nonce and ``art:<id>:<n>:<total>`` as
associated data: chunks cannot be swapped, moved to another artifact, or dropped from the end unnoticed.
The record keeps the plaintext's sha256, checked on every full read.

Ids are uuid4 hex; any other pointer id cannot exist here and reads as not found, as does an artifact of
another tenant or one past its ``expires_at``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.client import NEVER_DECODE

from coretex.errors import NotFoundError, StoreError
from coretex.model.artifact import (
    ENV_INTS,
    ENV_KEY,
    ArtifactConfig,
    Retention,
)
from coretex.protocol.pointers import ArtifactPointer, parse_artifact_pointer
from coretex.settings import Settings
from coretex.store._redis import redis_errors

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
MAX_TEXT = 256
"""Longest tenant or content type accepted."""
NONCE_BYTES = 12
GCM_OVERHEAD = NONCE_BYTES + 16
READ_BATCH = 16
"""Chunks fetched per round trip when reading (16 x 256 KiB = 4 MiB)."""
SWEEP_BATCH = 500
_ID = re.compile(r"[0-9a-f]{32}")

class ArtifactTooLargeError(StoreError):
    """Content over the global or the policy limit; nothing was written."""

    code = "artifact_too_large"
    retryable = False  # the same content will be as large next time

    def __init__(self, size: int, limit: int, source: str) -> None:
        super().__init__(f"artifact is {size} bytes; the {source} limit is {limit} bytes (nothing was stored)")
        self.size = size
        self.limit = limit
        self.source = source


class InvalidArtifactError(StoreError, ValueError):
    """Bad input to the artifact store: empty tenant, unknown retention class, bad labels, ..."""

    code = "invalid_artifact"
    retryable = False


class ArtifactCorruptError(StoreError):
    """Stored bytes do not match their record (sha256, size or a missing chunk)."""

    code = "artifact_corrupt"


class ArtifactDecryptionError(StoreError):
    """An encrypted artifact could not be decrypted: no key, another key, or tampered ciphertext."""

    code = "artifact_decryption_failed"


@dataclass(frozen=True)
class ArtifactMetadata:
    """What the writer says about an artifact."""

    tenant: str
    """Owner; only this tenant can read or delete it."""
    retention: Retention | str = Retention.STANDARD
    """Retention class: ``short``, ``standard`` or ``audit``."""
    content_type: str = DEFAULT_CONTENT_TYPE
    """MIME type, stored as given."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Free-form string labels (at most 64)."""


@dataclass(frozen=True)
class ArtifactInfo:
    """The stored record of an artifact, without its content."""

    pointer: ArtifactPointer
    tenant: str
    content_type: str
    labels: dict[str, str]
    retention: Retention
    size: int
    sha256: str
    chunks: int
    chunk_bytes: int
    """Plaintext bytes per chunk (every chunk but the last is this long)."""
    encrypted: bool
    key_id: str
    """Fingerprint of the key that encrypted it ("" when not encrypted)."""
    created_at: float
    expires_at: float


class ArtifactStore:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        config: ArtifactConfig | None = None,
        *,
        retention_ttls: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """``retention_ttls`` returns the ``retention`` section of the live effective config; a class
        it names takes that TTL (seconds) instead of the environment's default."""
        self._r = client
        self._ns = settings.namespace
        self._config = config or ArtifactConfig()
        self._retention_ttls = retention_ttls
        self._index = f"{self._ns}:art:expiry"
        key = self._config.encryption_key
        self._aead = AESGCM(key) if key is not None else None
        self._key_id = _key_id(key) if key is not None else ""

    def _ttl_for(self, retention: Retention) -> int:
        configured = self._retention_ttls() if self._retention_ttls is not None else {}
        return int(configured.get(retention.value) or self._config.ttl_for(retention))

    # ---- write ----------------------------------------------------------------------------
    def put_artifact(
        self, content: bytes, metadata: ArtifactMetadata, *, max_bytes: int | None = None
    ) -> ArtifactPointer:
        """Store ``content`` and return its pointer.

        ``max_bytes`` is the policy's ``max_artifact_bytes`` (None when the policy sets none); the smaller
        of it and the global limit applies. Over the limit, :class:`ArtifactTooLargeError` is raised before
        anything is written.
        """
        if not isinstance(content, bytes):
            raise InvalidArtifactError(f"artifact content must be bytes, got {type(content).__name__}")
        retention = _check_metadata(metadata)
        self._check_size(len(content), max_bytes)
        pointer = ArtifactPointer(uuid.uuid4().hex)
        ttl = self._ttl_for(retention)
        now = time.time()
        expires_at = now + ttl
        payload = self._config.chunk_bytes - (GCM_OVERHEAD if self._aead is not None else 0)
        pieces = [content[i : i + payload] for i in range(0, len(content), payload)]
        record: Mapping[Any, Any] = {
            "tenant": metadata.tenant,
            "content_type": metadata.content_type,
            "labels": json.dumps(dict(metadata.labels), sort_keys=True),
            "retention": retention.value,
            "size": str(len(content)),
            "sha256": hashlib.sha256(content).hexdigest(),
            "chunks": str(len(pieces)),
            "chunk_bytes": str(payload),
            "encrypted": "1" if self._aead is not None else "0",
            "key_id": self._key_id,
            "created_at": repr(now),
            "expires_at": repr(expires_at),
        }
        with redis_errors(f"write artifact {pointer.id}"):
            pipe = self._r.pipeline(transaction=True)
            for n, piece in enumerate(pieces):
                pipe.set(self._chunk_key(pointer.id, n), self._seal(pointer.id, n, len(pieces), piece), ex=ttl)
            pipe.hset(self._key(pointer.id), mapping=record)
            pipe.expire(self._key(pointer.id), ttl)
            pipe.zadd(self._index, {pointer.id: expires_at})
            pipe.execute()
        return pointer

    def _check_size(self, size: int, policy_max: int | None) -> None:
        limit, source = self._config.max_bytes, f"global ({ENV_INTS['max_bytes']})"
        if policy_max is not None:
            if not isinstance(policy_max, int) or isinstance(policy_max, bool) or policy_max <= 0:
                raise InvalidArtifactError(f"max_bytes must be a positive integer or None, got {policy_max!r}")
            if policy_max < limit:
                limit, source = policy_max, "policy (max_artifact_bytes)"
        if size > limit:
            raise ArtifactTooLargeError(size, limit, source)

    def _seal(self, artifact_id: str, n: int, total: int, piece: bytes) -> bytes:
        if self._aead is None:
            return piece
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, piece, _associated_data(artifact_id, n, total))

    # ---- read -----------------------------------------------------------------------------
    def head_artifact(self, ptr: ArtifactPointer | str, tenant: str) -> ArtifactInfo:
        """The record of an artifact owned by ``tenant``; :class:`NotFoundError` otherwise."""
        pointer = _pointer(ptr)
        _check_tenant(tenant)
        missing = NotFoundError(f"{pointer.uri} not found")
        if _ID.fullmatch(pointer.id) is None:
            raise missing
        with redis_errors(f"read artifact {pointer.id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._key(pointer.id)))
        fields_ = {_text(k): _text(v) for k, v in raw.items()}
        if not fields_ or fields_.get("tenant") != tenant:
            raise missing
        info = _decode(pointer, fields_)
        if info.expires_at <= time.time():
            raise missing
        return info

    def get_artifact(self, ptr: ArtifactPointer | str, tenant: str) -> bytes:
        """The whole content, decrypted and checked against its sha256."""
        info = self._readable(ptr, tenant)
        return b"".join(self._read_chunks(info))

    def stream_artifact(self, ptr: ArtifactPointer | str, tenant: str) -> Iterator[bytes]:
        """The content chunk by chunk, in order.

        Ownership is checked here, before the first chunk. Each encrypted chunk is authenticated before it
        is yielded; the sha256 of the whole is checked after the last chunk, so a consumer must exhaust the
        iterator to know the content was intact (:class:`ArtifactCorruptError` is raised at the end).
        """
        return self._read_chunks(self._readable(ptr, tenant))

    def _readable(self, ptr: ArtifactPointer | str, tenant: str) -> ArtifactInfo:
        """The record, once we know we hold the key its content needs."""
        info = self.head_artifact(ptr, tenant)
        if info.encrypted and self._aead is None:
            raise ArtifactDecryptionError(f"{info.pointer.uri} is encrypted and no {ENV_KEY} is configured")
        if info.encrypted and info.key_id != self._key_id:
            raise ArtifactDecryptionError(
                f"{info.pointer.uri} was encrypted with key {info.key_id}; the configured key is {self._key_id}"
            )
        return info

    def _read_chunks(self, info: ArtifactInfo) -> Iterator[bytes]:
        digest, seen = hashlib.sha256(), 0
        for start in range(0, info.chunks, READ_BATCH):
            numbers = range(start, min(start + READ_BATCH, info.chunks))
            with redis_errors(f"read artifact {info.pointer.id}"):
                pipe = cast(Any, self._r.pipeline(transaction=False))  # execute_command is untyped
                for n in numbers:
                    # chunks are raw bytes: read them undecoded whatever the client's decode_responses
                    pipe.execute_command("GET", self._chunk_key(info.pointer.id, n), **{NEVER_DECODE: []})
                values = cast(list[bytes | None], pipe.execute())
            for n, value in zip(numbers, values, strict=True):
                if value is None:
                    self._raise_vanished(info, n)
                piece = self._open(info, n, cast(bytes, value))
                digest.update(piece)
                seen += len(piece)
                yield piece
        if seen != info.size or digest.hexdigest() != info.sha256:
            raise ArtifactCorruptError(
                f"{info.pointer.uri} is corrupt: read {seen} bytes with sha256 {digest.hexdigest()}, "
                f"the record says {info.size} bytes with sha256 {info.sha256}"
            )

    def _open(self, info: ArtifactInfo, n: int, value: bytes) -> bytes:
        if not info.encrypted:
            piece = value
        else:
            assert self._aead is not None  # _readable refused keyless reads of encrypted artifacts
            try:
                piece = self._aead.decrypt(
                    value[:NONCE_BYTES], value[NONCE_BYTES:], _associated_data(info.pointer.id, n, info.chunks)
                )
            except (InvalidTag, ValueError) as exc:
                raise ArtifactDecryptionError(
                    f"chunk {n} of {info.pointer.uri} failed authentication: wrong key or tampered data"
                ) from exc
        last = n == info.chunks - 1
        if len(piece) > info.chunk_bytes or (not last and len(piece) != info.chunk_bytes):
            raise ArtifactCorruptError(
                f"chunk {n} of {info.pointer.uri} has {len(piece)} bytes, expected {info.chunk_bytes}"
            )
        return piece

    def _raise_vanished(self, info: ArtifactInfo, n: int) -> None:
        with redis_errors(f"read artifact {info.pointer.id}"):
            still_there = self._r.exists(self._key(info.pointer.id))
        if not still_there:  # deleted or expired while we read it
            raise NotFoundError(f"{info.pointer.uri} not found")
        raise ArtifactCorruptError(f"{info.pointer.uri} is corrupt: chunk {n} of {info.chunks} is missing")

    # ---- delete and retention -------------------------------------------------------------
    def delete_artifact(self, ptr: ArtifactPointer | str, tenant: str) -> None:
        """Remove an artifact owned by ``tenant`` (record, chunks, index entry)."""
        info = self.head_artifact(ptr, tenant)
        self._purge([info.pointer.id])

    def sweep(self, now: float, *, limit: int = 10_000) -> int:
        """Remove artifacts whose ``expires_at`` is at or before ``now``; return how many still had a record.

        Redis TTLs remove most expired keys by themselves; the sweep drops their index entries (so the index
        stays bounded) and removes any whose keys outlived them. At most ``limit`` entries per call.
        """
        removed = 0
        while limit > 0:
            batch = min(SWEEP_BATCH, limit)
            with redis_errors("list expired artifacts"):
                found = cast(list[str | bytes], self._r.zrangebyscore(self._index, "-inf", now, start=0, num=batch))
            ids = [_text(i) for i in found]
            if not ids:
                break
            removed += self._purge(ids)
            limit -= len(ids)
            if len(ids) < batch:
                break
        return removed

    def _purge(self, ids: list[str]) -> int:
        """Delete the keys and index entries of ``ids``; return how many had a record."""
        with redis_errors("delete artifacts"):
            pipe = self._r.pipeline(transaction=False)
            for artifact_id in ids:
                pipe.hget(self._key(artifact_id), "chunks")
            counts = cast(list[str | bytes | None], pipe.execute())
            pipe = self._r.pipeline(transaction=True)
            for artifact_id, count in zip(ids, counts, strict=True):
                chunks = int(_text(count)) if count is not None else 0
                pipe.delete(self._key(artifact_id), *(self._chunk_key(artifact_id, n) for n in range(chunks)))
            pipe.zrem(self._index, *ids)
            pipe.execute()
        return sum(count is not None for count in counts)

    def _key(self, artifact_id: str) -> str:
        return f"{self._ns}:art:{artifact_id}"

    def _chunk_key(self, artifact_id: str, n: int) -> str:
        return f"{self._ns}:art:{artifact_id}:chunk:{n}"


def _key_id(key: bytes) -> str:
    """A short public fingerprint of a key, to tell 'another key' from 'tampered'."""
    return hashlib.sha256(b"coretex-artifact-key:" + key).hexdigest()[:16]


def _associated_data(artifact_id: str, n: int, total: int) -> bytes:
    return f"art:{artifact_id}:{n}:{total}".encode()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pointer(ptr: ArtifactPointer | str) -> ArtifactPointer:
    return ptr if isinstance(ptr, ArtifactPointer) else parse_artifact_pointer(ptr)


def _check_tenant(tenant: object) -> None:
    if not isinstance(tenant, str) or not tenant.strip() or len(tenant) > MAX_TEXT:
        raise InvalidArtifactError(
            f"tenant must be a non-empty string of at most {MAX_TEXT} characters, got {tenant!r:.40}"
        )


def _check_metadata(metadata: ArtifactMetadata) -> Retention:
    """Validate what the writer said; return the retention class."""
    _check_tenant(metadata.tenant)
    try:
        retention = Retention(metadata.retention)
    except ValueError:
        known = ", ".join(r.value for r in Retention)
        raise InvalidArtifactError(f"unknown retention class {metadata.retention!r}; expected one of {known}") from None
    ctype = metadata.content_type
    if not isinstance(ctype, str) or not ctype.strip() or len(ctype) > MAX_TEXT:
        raise InvalidArtifactError(f"content_type must be a non-empty string of at most {MAX_TEXT} characters")
    labels = metadata.labels
    if not isinstance(labels, Mapping) or len(labels) > MAX_LABELS:
        raise InvalidArtifactError(f"labels must be a mapping of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArtifactError(f"labels must map str to str, got {key!r}: {value!r}")
        if not key or len(key) > MAX_LABEL_KEY or len(value) > MAX_LABEL_VALUE:
            raise InvalidArtifactError(
                f"label {key[:MAX_LABEL_KEY]!r}: keys are 1..{MAX_LABEL_KEY} characters, "
                f"values at most {MAX_LABEL_VALUE}"
            )
    return retention


def _decode(pointer: ArtifactPointer, raw: dict[str, str]) -> ArtifactInfo:
    try:
        return ArtifactInfo(
            pointer=pointer,
            tenant=raw["tenant"],
            content_type=raw["content_type"],
            labels=dict(json.loads(raw["labels"])),
            retention=Retention(raw["retention"]),
            size=int(raw["size"]),
            sha256=raw["sha256"],
            chunks=int(raw["chunks"]),
            chunk_bytes=int(raw["chunk_bytes"]),
            encrypted=raw["encrypted"] == "1",
            key_id=raw.get("key_id", ""),
            created_at=float(raw["created_at"]),
            expires_at=float(raw["expires_at"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactCorruptError(f"{pointer.uri} has a malformed record: {exc!r}") from exc

"""The JSON Schema registry: versioned schemas by id, references that pin them, validation through it.

Keys (``<id>`` matches ``[a-z0-9][a-z0-9._-]{0,127}``, so it never holds a ``:``)::

    <ns>:schemas                       set   ids with at least one version (the listing index)
    <ns>:schema:<id>:versions          hash  version -> record JSON {schema_version, id, sha256, size,
                                             created_at, refs, schema}; immutable once written
    <ns>:schema:<id>:digests           hash  sha256 of the canonical schema -> version (idempotent register)
    <ns>:schema:<id>:info              hash  version -> {"sha256", "targets": [ids it $refs]} for delete
    <ns>:schema:<id>:meta              hash  {schema_version, id, seq, latest, created_at, updated_at}
    <ns>:schema:<id>:refs              set   referrers outside the registry ("workflow:<id>", "pack:<name>")
    <ns>:schema:<id>:dependents        set   "<other_id>@<version>": registered schemas that $ref this id

Versions come from ``seq`` and are never reused, even after the whole id is deleted (``meta`` keeps
``seq``), so ``coretex:schema:<id>@<n>`` always means one content. Register, delete and
add-reference are Lua scripts: two concurrent registrations of different content get distinct,
gap-free versions; identical content gets the existing version. Delete derives the ``dependents``
keys of the schemas a version $refs from ``ARGV`` (standalone Redis only, like the whole store).

Schemas are global to a deployment in this version, not tenant-owned: every tenant reads and
validates against the same registry, so ids should carry their pack's prefix (``acme.``).

Limits (:class:`SchemaRegistryLimits`) bound schema size, versions per id, ids and referrers.

The Lua scripts sit below with the usual KEYS/ARGV headers; they can move to ``lua/schema_*.lua``
and :func:`coretex.store._redis.load_script` as they are.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from coretex.errors import ConfigError, NotFoundError, StoreError
from coretex.model.schema import (
    SCHEMA_REF_PREFIX,
    InvalidSchemaIdError,
    SchemaInvalidError,
    SchemaRef,
    SchemaTooLargeError,
    UnresolvedRefError,
    canonical_json,
    check_schema,
    check_schema_id,
    digest,
    parse_schema_ref,
)
from coretex.model.schema import validate as validate_instance
from coretex.settings import Settings
from coretex.store._redis import redis_errors

RECORD_FORMAT = "1"
_REFERRER_RE = re.compile(r"[\x21-\x7e]{1,256}")

_REGISTER = """
-- Register a schema version unless the same content is already registered.
--
-- KEYS[1]  <ns>:schema:<id>:versions   hash  version -> record JSON
-- KEYS[2]  <ns>:schema:<id>:digests    hash  sha256 -> version
-- KEYS[3]  <ns>:schema:<id>:meta       hash  seq, latest, ...
-- KEYS[4]  <ns>:schema:<id>:info       hash  version -> {"sha256", "targets"}
-- KEYS[5]  <ns>:schemas                set   ids
-- KEYS[4+2i], KEYS[5+2i] (i = 1..n)    the i-th $ref target's :versions hash and :dependents set
-- ARGV[1]  id         ARGV[2] sha256        ARGV[3] record JSON     ARGV[4] info JSON
-- ARGV[5]  now        ARGV[6] max versions  ARGV[7] max ids
-- ARGV[7+i]           the i-th target's pinned version, "" for its latest
--
-- Returns {"existing", v} | {"created", v} | {"missing_ref", i} | {"too_many_versions", n}
--       | {"too_many_schemas", n}.
local existing = redis.call("HGET", KEYS[2], ARGV[2])
if existing then
  return {"existing", existing}
end
for i = 1, #ARGV - 7 do
  local target, pinned = KEYS[4 + 2 * i], ARGV[7 + i]
  if (pinned == "" and redis.call("HLEN", target) == 0)
      or (pinned ~= "" and redis.call("HEXISTS", target, pinned) == 0) then
    return {"missing_ref", tostring(i)}
  end
end
local count = redis.call("HLEN", KEYS[1])
if count >= tonumber(ARGV[6]) then
  return {"too_many_versions", tostring(count)}
end
if count == 0 then
  local ids = redis.call("SCARD", KEYS[5])
  if ids >= tonumber(ARGV[7]) then
    return {"too_many_schemas", tostring(ids)}
  end
  redis.call("HSET", KEYS[3], "created_at", ARGV[5])
end
local version = tostring(redis.call("HINCRBY", KEYS[3], "seq", 1))
redis.call("HSET", KEYS[1], version, ARGV[3])
redis.call("HSET", KEYS[2], ARGV[2], version)
redis.call("HSET", KEYS[4], version, ARGV[4])
redis.call("HSET", KEYS[3], "schema_version", "1", "id", ARGV[1], "latest", version, "updated_at", ARGV[5])
redis.call("SADD", KEYS[5], ARGV[1])
for i = 1, #ARGV - 7 do
  redis.call("SADD", KEYS[5 + 2 * i], ARGV[1] .. "@" .. version)
end
return {"created", version}
"""

_DELETE = """
-- Delete one version (or all) of a schema unless it is still referenced, or force is set.
--
-- KEYS[1] <ns>:schema:<id>:versions  KEYS[2] :digests  KEYS[3] :meta  KEYS[4] :info
-- KEYS[5] <ns>:schemas               KEYS[6] :refs     KEYS[7] :dependents
-- ARGV[1] id    ARGV[2] version or "" for all    ARGV[3] "1" to force    ARGV[5] now
-- ARGV[4] "<ns>:schema:" — the :dependents sets of the ids a deleted version $refs are
--         "<ARGV[4]><target>:dependents", read from :info (keys derived here: standalone Redis only)
--
-- Returns {"deleted", n} | {"missing"} | {"in_use", n_referrers, referrer..., dependent...}.
local doomed
if ARGV[2] ~= "" then
  if redis.call("HEXISTS", KEYS[1], ARGV[2]) == 0 then
    return {"missing"}
  end
  doomed = {ARGV[2]}
else
  doomed = redis.call("HKEYS", KEYS[1])
  if #doomed == 0 then
    return {"missing"}
  end
end
if ARGV[3] ~= "1" then
  local dying = {}
  for _, v in ipairs(doomed) do
    dying[ARGV[1] .. "@" .. v] = true
  end
  local referrers = redis.call("SMEMBERS", KEYS[6])
  local out = {"in_use", tostring(#referrers)}
  for _, r in ipairs(referrers) do
    out[#out + 1] = r
  end
  for _, d in ipairs(redis.call("SMEMBERS", KEYS[7])) do
    if not dying[d] then
      out[#out + 1] = d
    end
  end
  if #out > 2 then
    return out
  end
end
for _, v in ipairs(doomed) do
  local info = redis.call("HGET", KEYS[4], v)
  if info then
    local decoded = cjson.decode(info)
    redis.call("HDEL", KEYS[2], decoded["sha256"])
    for _, target in ipairs(decoded["targets"]) do
      redis.call("SREM", ARGV[4] .. target .. ":dependents", ARGV[1] .. "@" .. v)
    end
  end
  redis.call("HDEL", KEYS[1], v)
  redis.call("HDEL", KEYS[4], v)
end
local latest = 0
for _, v in ipairs(redis.call("HKEYS", KEYS[1])) do
  latest = math.max(latest, tonumber(v))
end
if latest == 0 then
  redis.call("SREM", KEYS[5], ARGV[1])
end
redis.call("HSET", KEYS[3], "latest", tostring(latest), "updated_at", ARGV[5])
return {"deleted", tostring(#doomed)}
"""

_GET = """
-- Read one version, or the latest, in one step (the latest may be deleted between two reads).
--
-- KEYS[1] <ns>:schema:<id>:meta   KEYS[2] <ns>:schema:<id>:versions
-- ARGV[1] version, or "" for the latest
--
-- Returns {version, record JSON} | {"missing"}.
local version = ARGV[1]
if version == "" then
  version = redis.call("HGET", KEYS[1], "latest")
  if not version or version == "0" then
    return {"missing"}
  end
end
local record = redis.call("HGET", KEYS[2], version)
if not record then
  return {"missing"}
end
return {version, record}
"""

_ADD_REFERENCE = """
-- Record a referrer of a schema that exists, within a bound.
--
-- KEYS[1] <ns>:schema:<id>:versions   KEYS[2] <ns>:schema:<id>:refs
-- ARGV[1] referrer   ARGV[2] max referrers
--
-- Returns "added" | "exists" | "missing" | "full".
if redis.call("HLEN", KEYS[1]) == 0 then
  return "missing"
end
if redis.call("SISMEMBER", KEYS[2], ARGV[1]) == 1 then
  return "exists"
end
if redis.call("SCARD", KEYS[2]) >= tonumber(ARGV[2]) then
  return "full"
end
redis.call("SADD", KEYS[2], ARGV[1])
return "added"
"""


class SchemaInUseError(StoreError):
    """Delete refused: ``referrers`` (outside) or ``dependents`` (schemas that $ref it) still use it."""

    code = "schema_in_use"

    def __init__(self, schema_id: str, referrers: list[str], dependents: list[str]) -> None:
        users = [*referrers, *(f"schema {d}" for d in dependents)]
        super().__init__(f"schema {schema_id} is still used by {', '.join(users)}; delete with force to override")
        self.referrers = referrers
        self.dependents = dependents


class SchemaLimitError(StoreError):
    code = "schema_limit_reached"


@dataclass(frozen=True)
class SchemaRegistryLimits:
    """Bounds of the registry; the lead wires each to the env var named."""

    max_schema_bytes: int = 256 * 1024
    """Largest schema, as canonical JSON bytes: ``CORETEX_SCHEMA_MAX_BYTES``."""
    max_versions: int = 1000
    """Versions one id may hold at once (delete old ones to register more): ``CORETEX_SCHEMA_MAX_VERSIONS``."""
    max_schemas: int = 10_000
    """Distinct ids in the registry: ``CORETEX_SCHEMA_MAX_IDS``."""
    max_referrers: int = 10_000
    """Referrers recorded per id: ``CORETEX_SCHEMA_MAX_REFERRERS``."""
    max_violations: int = 100
    """Violations carried by one :class:`SchemaViolationError`: ``CORETEX_SCHEMA_MAX_VIOLATIONS``."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"schema registry limit {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SchemaRegistration:
    id: str
    version: int
    sha256: str
    created: bool
    """False when the same content was already registered as ``version``."""


@dataclass(frozen=True)
class RegisteredSchema:
    id: str
    version: int
    schema: dict[str, Any]
    sha256: str
    size: int
    created_at: float
    refs: tuple[str, ...]
    """The ``coretex:schema:`` URIs this version $refs directly, as written."""

    @property
    def uri(self) -> str:
        return SchemaRef(self.id, self.version).uri


@dataclass(frozen=True)
class SchemaSummary:
    id: str
    latest_version: int


class SchemaStore:
    def __init__(self, client: redis.Redis, settings: Settings, limits: SchemaRegistryLimits | None = None) -> None:
        self._r = client
        self._prefix = f"{settings.namespace}:schema:"
        self._index = f"{settings.namespace}:schemas"
        self._limits = limits or SchemaRegistryLimits()
        self._register = client.register_script(_REGISTER)
        self._delete = client.register_script(_DELETE)
        self._get = client.register_script(_GET)
        self._add_reference = client.register_script(_ADD_REFERENCE)

    def _key(self, schema_id: str, part: str) -> str:
        return f"{self._prefix}{schema_id}:{part}"

    def register(self, schema_id: str, schema: Mapping[str, Any]) -> SchemaRegistration:
        """Store ``schema`` as the next version of ``schema_id``, or return the version holding it.

        Raises :class:`SchemaInvalidError` (with the path inside the schema), its subclasses
        :class:`SchemaTooLargeError` and :class:`UnresolvedRefError`, or :class:`SchemaLimitError`.
        Nothing is stored when it raises.
        """
        check_schema_id(schema_id)
        if not isinstance(schema, Mapping):
            raise SchemaInvalidError(f"a registered schema must be a JSON object, got {type(schema).__name__}")
        text = canonical_json(schema)
        size = len(text.encode())
        if size > self._limits.max_schema_bytes:
            raise SchemaTooLargeError(
                f"schema {schema_id} is {size} bytes of canonical JSON, over the limit of "
                f"{self._limits.max_schema_bytes}"
            )
        sha = digest(text)
        with redis_errors(f"look up schema {schema_id}"):
            known = cast(str | None, self._r.hget(self._key(schema_id, "digests"), sha))
        if known is not None:
            return SchemaRegistration(schema_id, int(known), sha, created=False)
        normalized = json.loads(text)
        uris = sorted(check_schema(normalized, self._resolve))
        targets = [parse_schema_ref(uri) for uri in uris]
        now = time.time()
        record = {
            "schema_version": RECORD_FORMAT,
            "id": schema_id,
            "sha256": sha,
            "size": size,
            "created_at": now,
            "refs": uris,
            "schema": normalized,
        }
        info = {"sha256": sha, "targets": sorted({t.id for t in targets})}
        keys = [self._key(schema_id, p) for p in ("versions", "digests", "meta", "info")] + [self._index]
        for target in targets:
            keys += [self._key(target.id, "versions"), self._key(target.id, "dependents")]
        args: list[str | int] = [
            schema_id, sha, canonical_json(record), json.dumps(info), repr(now),
            self._limits.max_versions, self._limits.max_schemas,
            *("" if t.version is None else str(t.version) for t in targets),
        ]
        with redis_errors(f"register schema {schema_id}"):
            status, value = cast(list[str], self._register(keys=keys, args=args))
        if status == "missing_ref":
            raise UnresolvedRefError(uris[int(value) - 1])
        if status == "too_many_versions":
            raise SchemaLimitError(f"schema {schema_id} holds {value} versions, the limit; delete old ones first")
        if status == "too_many_schemas":
            raise SchemaLimitError(f"the registry holds {value} schema ids, the limit")
        return SchemaRegistration(schema_id, int(value), sha, created=status == "created")

    def get(self, schema_id: str, version: int | None = None) -> RegisteredSchema:
        """One version of ``schema_id``, or its latest; :class:`NotFoundError` if there is none."""
        check_schema_id(schema_id)
        label = SchemaRef(schema_id, version).uri
        keys = [self._key(schema_id, "meta"), self._key(schema_id, "versions")]
        with redis_errors(f"read {label}"):
            reply = cast(list[str], self._get(keys=keys, args=["" if version is None else str(version)]))
        if reply[0] == "missing":
            raise NotFoundError(f"{label} not found")
        raw = json.loads(reply[1])
        return RegisteredSchema(
            id=schema_id,
            version=int(reply[0]),
            schema=raw["schema"],
            sha256=raw["sha256"],
            size=int(raw["size"]),
            created_at=float(raw["created_at"]),
            refs=tuple(raw["refs"]),
        )

    def versions(self, schema_id: str) -> list[int]:
        check_schema_id(schema_id)
        with redis_errors(f"list versions of schema {schema_id}"):
            found = cast(list[str], self._r.hkeys(self._key(schema_id, "versions")))
        if not found:
            raise NotFoundError(f"schema {schema_id} not found")
        return sorted(int(v) for v in found)

    def delete(self, schema_id: str, version: int | None = None, *, force: bool = False) -> int:
        """Delete one version or (``version=None``) all; return how many versions went.

        While the id has referrers, or other registered schemas $ref it, any delete raises
        :class:`SchemaInUseError` unless ``force``. Force leaves referrers and dependents recorded:
        they still name the id, and block the next delete of a re-registered one.
        """
        check_schema_id(schema_id)
        label = SchemaRef(schema_id, version).uri
        keys = [self._key(schema_id, p) for p in ("versions", "digests", "meta", "info")]
        keys += [self._index, self._key(schema_id, "refs"), self._key(schema_id, "dependents")]
        args = [schema_id, "" if version is None else str(version), "1" if force else "0", self._prefix,
                repr(time.time())]
        with redis_errors(f"delete {label}"):
            reply = cast(list[str], self._delete(keys=keys, args=args))
        if reply[0] == "missing":
            raise NotFoundError(f"{label} not found")
        if reply[0] == "in_use":
            count = int(reply[1])
            raise SchemaInUseError(schema_id, sorted(reply[2 : 2 + count]), sorted(reply[2 + count :]))
        return int(reply[1])

    def add_reference(self, schema_id: str, referrer: str) -> bool:
        """Record that ``referrer`` uses ``schema_id``; False if it already did."""
        check_schema_id(schema_id)
        _check_referrer(referrer)
        keys = [self._key(schema_id, "versions"), self._key(schema_id, "refs")]
        with redis_errors(f"add referrer {referrer} to schema {schema_id}"):
            status = self._add_reference(keys=keys, args=[referrer, self._limits.max_referrers])
        if status == "missing":
            raise NotFoundError(f"schema {schema_id} not found")
        if status == "full":
            raise SchemaLimitError(f"schema {schema_id} has {self._limits.max_referrers} referrers, the limit")
        return bool(status == "added")

    def remove_reference(self, schema_id: str, referrer: str) -> bool:
        """Forget ``referrer``; False if it was not recorded."""
        check_schema_id(schema_id)
        with redis_errors(f"remove referrer {referrer} from schema {schema_id}"):
            return bool(self._r.srem(self._key(schema_id, "refs"), referrer))

    def references(self, schema_id: str) -> list[str]:
        check_schema_id(schema_id)
        with redis_errors(f"read referrers of schema {schema_id}"):
            return sorted(cast(set[str], self._r.smembers(self._key(schema_id, "refs"))))

    def dependents(self, schema_id: str) -> list[str]:
        """Registered schemas (``<id>@<version>``) whose ``$ref`` points at ``schema_id``."""
        check_schema_id(schema_id)
        with redis_errors(f"read dependents of schema {schema_id}"):
            return sorted(cast(set[str], self._r.smembers(self._key(schema_id, "dependents"))))

    def validate(self, instance: Any, schema: Mapping[str, Any] | bool | str | SchemaRef) -> None:
        """Check ``instance`` against an inline schema or a registered one (``SchemaRef`` or its URI).

        Raises :class:`SchemaViolationError` listing every violation (up to the limit),
        :class:`NotFoundError` for an unknown registered schema, :class:`UnresolvedRefError` for a
        ``$ref`` that no longer resolves.
        """
        if isinstance(schema, str | SchemaRef):
            ref = parse_schema_ref(schema) if isinstance(schema, str) else schema
            record = self.get(ref.id, ref.version)
            validate_instance(
                instance, record.schema, self._resolve, schema_checked=True, schema_label=record.uri,
                max_violations=self._limits.max_violations,
            )
        else:
            validate_instance(instance, schema, self._resolve, max_violations=self._limits.max_violations)

    # Kept last among the methods: below it, mypy would read ``list[...]`` annotations as this method.
    def list(self) -> list[SchemaSummary]:
        """Every id with at least one version and its latest version, sorted by id."""
        with redis_errors("list schemas"):
            ids = sorted(cast(set[str], self._r.smembers(self._index)))
            pipe = self._r.pipeline(transaction=False)
            for schema_id in ids:
                pipe.hget(self._key(schema_id, "meta"), "latest")
            latest = cast(list[str | None], pipe.execute())
        return [SchemaSummary(i, int(v)) for i, v in zip(ids, latest, strict=True) if v and v != "0"]

    def _resolve(self, uri: str) -> dict[str, Any]:
        """The resolver handed to the pure checks: ``coretex:schema:`` URIs, from this registry."""
        if not uri.startswith(SCHEMA_REF_PREFIX):
            raise LookupError(uri)
        try:
            ref = parse_schema_ref(uri)
            return self.get(ref.id, ref.version).schema
        except (InvalidSchemaIdError, NotFoundError):
            raise LookupError(uri) from None


def _check_referrer(referrer: str) -> None:
    if not isinstance(referrer, str) or not _REFERRER_RE.fullmatch(referrer):
        raise ConfigError(f"a referrer is 1-256 printable ASCII characters without spaces, got {referrer!r}")

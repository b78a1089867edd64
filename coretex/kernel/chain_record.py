"""One audit record spelled out once, before it is chained to anything.

A chained record's hash is ``sha256(prev_hash + canonical JSON of the record without hash)``
(:func:`coretex.kernel.audit.chain_hash`), and its only parts that depend on the chain are
``seq``, ``prev_hash`` and ``prev_id``. :class:`EncodedRecord` spells the record in the caller's
thread — its canonical JSON with placeholders where the chain fields go, and its stream fields
for ``audit_append_batch.lua`` — so :meth:`EncodedRecord.chain`, which the thread writing a batch
pays per record while every caller of the batch waits, only splices the chain fields in and
hashes.

The placeholders are the numbers 0, 1 and 2: every real value is a string, and inside a JSON
string every ``"`` is escaped, so ``"prev_hash":0`` can only be the placeholder itself. Values
must be ``str`` (a stream stores strings; anything else would hash differently when read back);
a value that is not fails here, for its own caller only, not for the whole batch. A unit test
holds the spliced spelling equal to :func:`coretex.model.canonical.canonical_json`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping

from coretex.model.canonical import canonical_json

CHAIN_FIELDS = ("seq", "prev_hash", "prev_id", "hash")
"""Fields :meth:`EncodedRecord.chain` sets; a record's own values for them are dropped."""
_PLACEHOLDERS = {"prev_hash": 0, "prev_id": 1, "seq": 2}
_PREV_HASH_AT, _PREV_ID_AT, _SEQ_AT = '"prev_hash":0', '"prev_id":1', '"seq":2'
_canonical_string = json.encoder.encode_basestring  # the spelling canonical_json gives a str
_ascii_string = json.encoder.encode_basestring_ascii  # what the payload (read by Lua's cjson) uses


class EncodedRecord:
    """A record (a flat map of strings) with its canonical JSON and stream fields spelled out.

    Build it in the caller's thread; :meth:`chain` is what the writing thread pays per record.
    """

    __slots__ = ("body", "record_id", "_canonical", "_fields")
    _canonical: tuple[bytes, ...]

    def __init__(self, record: Mapping[str, str], id_field: str) -> None:
        body = dict(record)
        for name in CHAIN_FIELDS:
            body.pop(name, None)
        strays = sorted(key for key, value in body.items() if type(value) is not str)
        if strays:
            raise TypeError(f"audit record fields must be strings, not {strays}")
        self.body = body
        """The record without chain fields, in the caller's order (the stream keeps that order)."""
        self.record_id: str = body[id_field]
        spelled = canonical_json({**body, **_PLACEHOLDERS})
        before_hash, found_hash, rest = spelled.partition(_PREV_HASH_AT)
        before_id, found_id, rest = rest.partition(_PREV_ID_AT)
        before_seq, found_seq, after_seq = rest.partition(_SEQ_AT)
        assert found_hash and found_id and found_seq
        # UTF-8 here: a value that cannot be encoded fails this caller, not the writer's whole batch.
        self._canonical = tuple(part.encode("utf-8") for part in (
            before_hash + '"prev_hash":', before_id + '"prev_id":', before_seq + '"seq":"', '"' + after_seq))
        """The canonical JSON (UTF-8) cut where the values of prev_hash, prev_id and seq go."""
        self._fields = json.dumps(list(itertools.chain.from_iterable(body.items())))[1:-1]
        """The stream fields, ``"field","value",...``, ASCII-escaped as the payload JSON wants."""

    def chain(self, seq: int, prev_hash: str, prev_id: str) -> tuple[str, str]:
        """Chain this record after ``prev_hash`` / ``prev_id`` as number ``seq``.

        Return its hash and its entry in the Lua script's batch: a JSON array
        ``[record id, hash, field, value, ...]`` with the chain fields last.
        """
        seq_text = str(seq)
        at_hash, at_id, at_seq, rest = self._canonical
        digest = hashlib.sha256(b"".join((
            prev_hash.encode("utf-8"),
            at_hash, _canonical_string(prev_hash).encode("utf-8"),
            at_id, _canonical_string(prev_id).encode("utf-8"),
            at_seq, seq_text.encode("ascii"), rest,
        ))).hexdigest()
        entry = (
            f'[{_ascii_string(self.record_id)},"{digest}",{self._fields},"seq","{seq_text}",'
            f'"prev_hash",{_ascii_string(prev_hash)},"prev_id",{_ascii_string(prev_id)},"hash","{digest}"]'
        )
        return digest, entry

    def stored(self, seq: int, prev_hash: str, prev_id: str, digest: str) -> dict[str, str]:
        """The record as the stream holds it once chained (what :meth:`ChainedStream.append` returns)."""
        return {**self.body, "seq": str(seq), "prev_hash": prev_hash, "prev_id": prev_id, "hash": digest}

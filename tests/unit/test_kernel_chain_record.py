"""The audit record spelled once and chained by splicing must hash exactly as ``chain_hash`` (which
``coretexctl audit verify`` recomputes from the stream), and carry the same fields to the stream."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coretex.kernel.audit import GENESIS_HASH, chain_hash
from coretex.kernel.chain_record import EncodedRecord

# Keys that sort just before, between and after the chain fields, and values that look like them.
AWKWARD = {
    "id": "rec-1",
    "a": "plain",
    "prev": '"prev_hash":0',
    "prev_hasg": '","prev_id":1,"',
    "prev_hashh": "\\",
    "prev_i": 'quote " and backslash \\ and newline \n',
    "prev_idd": "\u00e9t\u00e9 \u2603 \U0001f600",
    "se": '"seq":2',
    "seqq": "\x00\x1f",
    "zzz": "",
}


def chained(body: dict[str, str], seq: int, prev_hash: str, prev_id: str) -> tuple[str, str, dict[str, str]]:
    record = EncodedRecord(body, "id")
    digest, entry = record.chain(seq, prev_hash, prev_id)
    return digest, entry, record.stored(seq, prev_hash, prev_id, digest)


def test_spliced_hash_is_chain_hash_for_awkward_keys_and_values() -> None:
    for prev_hash, prev_id in ((GENESIS_HASH, ""), ("ab" * 32, "rec-0"), ("x\"y", "caf\u00e9")):
        digest, _, stored = chained(AWKWARD, 41, prev_hash, prev_id)
        assert stored == {**AWKWARD, "seq": "41", "prev_hash": prev_hash, "prev_id": prev_id, "hash": digest}
        assert digest == chain_hash(stored)


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=12),
       st.integers(min_value=1, max_value=10**12), st.text(max_size=70), st.text(max_size=40))
def test_spliced_hash_is_chain_hash(extra: dict[str, str], seq: int, prev_hash: str, prev_id: str) -> None:
    body = {**extra, "id": "rec-1"}
    try:
        digest, _, stored = chained(body, seq, prev_hash, prev_id)
    except UnicodeEncodeError:  # lone surrogates: not storable, refused before any batch
        return
    assert digest == chain_hash(stored)


def test_the_lua_entry_carries_id_hash_then_the_fields_in_order_with_the_chain_last() -> None:
    digest, entry, stored = chained(AWKWARD, 7, GENESIS_HASH, "rec-0")
    assert entry.isascii()  # non-ASCII is escaped, as cjson reads it
    decoded = json.loads(entry)
    assert decoded[:2] == ["rec-1", digest]
    fields = decoded[2:]
    assert list(zip(fields[::2], fields[1::2], strict=True)) == list(stored.items())
    assert fields[-8:] == ["seq", "7", "prev_hash", GENESIS_HASH, "prev_id", "rec-0", "hash", digest]


def test_a_record_s_own_chain_fields_are_dropped() -> None:
    body = {"id": "r", "seq": "99", "hash": "forged", "prev_hash": "p", "prev_id": "q", "v": "1"}
    digest, _, stored = chained(body, 1, GENESIS_HASH, "")
    assert stored == {"id": "r", "v": "1", "seq": "1", "prev_hash": GENESIS_HASH, "prev_id": "", "hash": digest}
    assert digest == chain_hash(stored)


def test_values_must_be_strings_and_utf8() -> None:
    with pytest.raises(TypeError, match="must be strings"):
        EncodedRecord({"id": "r", "n": 1}, "id")  # type: ignore[dict-item]
    with pytest.raises(UnicodeEncodeError):
        EncodedRecord({"id": "r", "v": "\ud800"}, "id")
    with pytest.raises(KeyError):
        EncodedRecord({"v": "no id"}, "id")

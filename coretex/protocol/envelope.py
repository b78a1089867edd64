"""Build, encode and decode CAP ``BusPacket`` envelopes (spec sections 2.1 and 4.7).

Every packet we emit passes the envelope rules of the strictest CAP peer (PyPI 2.17): non-empty
``trace_id`` and ``sender_id``, ``protocol_version == 1``, ``created_at`` present and exactly one
payload. Decoding applies the same rules, because protobuf parsing alone proves almost nothing:
short random byte strings and serialized messages of other types often parse "successfully" into a
``BusPacket`` whose fields are empty or hold nonsense.

Unknown fields are kept, never rejected: peers on newer CAP releases send extra fields (spec 2.9).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from coretex.agent.v1 import alert_pb2, buspacket_pb2, heartbeat_pb2, job_pb2
from coretex.errors import EnvelopeError

PROTOCOL_VERSION = 1
"""The CAP wire version every producer sets and every consumer accepts (spec 1.1)."""

CONTENT_TYPE = "application/x-cap+protobuf"
"""Media type of a serialized BusPacket when it travels as a message body."""

PAYLOAD_KINDS: tuple[str, ...] = (
    "job_request",
    "job_result",
    "heartbeat",
    "alert",
    "job_progress",
    "job_cancel",
)
"""Field names of the ``BusPacket.payload`` oneof, in field-number order."""


def new_packet(
    *,
    sender_id: str,
    trace_id: str | None = None,
    created_at: datetime | None = None,
    job_request: job_pb2.JobRequest | None = None,
    job_result: job_pb2.JobResult | None = None,
    heartbeat: heartbeat_pb2.Heartbeat | None = None,
    alert: alert_pb2.SystemAlert | None = None,
    job_progress: job_pb2.JobProgress | None = None,
    job_cancel: job_pb2.JobCancel | None = None,
) -> buspacket_pb2.BusPacket:
    """Wrap exactly one payload in a fresh envelope.

    ``trace_id`` defaults to a new random id (an empty string counts as absent, since an empty
    trace id is invalid on the wire); ``created_at`` defaults to now and must be timezone-aware.
    The payload is copied, so later changes to the caller's message do not leak into the packet.
    """
    given = {
        "job_request": job_request,
        "job_result": job_result,
        "heartbeat": heartbeat,
        "alert": alert,
        "job_progress": job_progress,
        "job_cancel": job_cancel,
    }
    payloads = {name: message for name, message in given.items() if message is not None}
    if len(payloads) != 1:
        names = ", ".join(sorted(payloads)) or "none"
        raise EnvelopeError(f"a packet needs exactly one payload, got {len(payloads)} ({names})")
    if not sender_id:
        raise EnvelopeError("sender_id must not be empty")
    packet = buspacket_pb2.BusPacket(
        trace_id=trace_id or uuid.uuid4().hex,
        sender_id=sender_id,
        protocol_version=PROTOCOL_VERSION,
    )
    packet.created_at.FromDatetime(_as_utc(created_at))
    ((name, message),) = payloads.items()
    getattr(packet, name).CopyFrom(message)
    return packet


def encode_packet(packet: buspacket_pb2.BusPacket) -> bytes:
    """Validate ``packet`` and serialize it deterministically (map entries sorted by key).

    Deterministic bytes make the golden vectors reproducible and signatures verifiable (spec 4.6).
    """
    _validate(packet)
    return packet.SerializeToString(deterministic=True)


def decode_packet(data: bytes | bytearray | memoryview, *, expect: str | None = None) -> buspacket_pb2.BusPacket:
    """Parse and validate a serialized BusPacket.

    ``expect`` names the payload the caller can handle (e.g. ``"job_request"``); a packet carrying
    any other payload is rejected. Raises :class:`EnvelopeError` for anything unusable.
    """
    if expect is not None and expect not in PAYLOAD_KINDS:
        raise ValueError(f"unknown payload kind {expect!r}; expected one of {', '.join(PAYLOAD_KINDS)}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EnvelopeError(f"a packet must be bytes, got {type(data).__name__}")
    packet = buspacket_pb2.BusPacket()
    try:
        packet.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise EnvelopeError(f"not a CAP BusPacket: {exc}") from exc
    _validate(packet)
    if expect is not None and (kind := payload_kind(packet)) != expect:
        raise EnvelopeError(f"expected a {expect} payload, got {kind}")
    return packet


def payload_kind(packet: buspacket_pb2.BusPacket) -> str:
    """Name of the payload field set in ``packet`` (one of :data:`PAYLOAD_KINDS`)."""
    kind: str | None = packet.WhichOneof("payload")
    if kind is None:
        raise EnvelopeError("missing payload")
    return kind


def _validate(packet: buspacket_pb2.BusPacket) -> None:
    """Apply the envelope rules of spec 4.7; the payload check comes first as the most telling."""
    payload_kind(packet)
    if packet.protocol_version != PROTOCOL_VERSION:
        raise EnvelopeError(
            f"unsupported protocol_version {packet.protocol_version}; only {PROTOCOL_VERSION} is supported"
        )
    if not packet.trace_id:
        raise EnvelopeError("missing trace_id")
    if not packet.sender_id:
        raise EnvelopeError("missing sender_id")
    if not packet.HasField("created_at"):
        raise EnvelopeError("missing created_at")
    try:
        packet.created_at.ToDatetime()
    except ValueError as exc:
        raise EnvelopeError(f"invalid created_at: {exc}") from exc


def _as_utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        # A naive datetime is ambiguous; protobuf would silently read it as UTC.
        raise EnvelopeError("created_at must be timezone-aware")
    return moment.astimezone(UTC)

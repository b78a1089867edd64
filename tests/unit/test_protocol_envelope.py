"""BusPacket envelopes: golden bytes from the spec (section 5), round trips and every rejection."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.message import Message
from kombu.serialization import dumps

from coretex.agent.v1 import alert_pb2, buspacket_pb2, heartbeat_pb2, job_pb2
from coretex.bus import SERIALIZER, register_serializer
from coretex.errors import EnvelopeError
from coretex.protocol import (
    CONTENT_TYPE,
    PAYLOAD_KINDS,
    PROTOCOL_VERSION,
    decode_packet,
    encode_packet,
    new_packet,
    payload_kind,
)

# Golden vectors of spec section 5: deterministic serializations of the upstream example packets.
GOLDEN_JOB_REQUEST = bytes.fromhex(
    "0a0f74726163652d62617369632d3030311209676174657761792d311a0608c09784bc06200152570a0d6a6f622d"
    "62617369632d30303112086a6f622e6563686f1801221972656469733a2f2f6374782f6a6f622d62617369632d30"
    "3031320f0a066c6f63616c651205656e2d5553320e0a0674656e616e74120461636d65"
)
GOLDEN_JOB_RESULT = bytes.fromhex(
    "0a0f74726163652d62617369632d303031120d776f726b65722d6563686f2d311a0608c19784bc0620015a3d0a0d"
    "6a6f622d62617369632d30303110051a1972656469733a2f2f7265732f6a6f622d62617369632d303031220d776f"
    "726b65722d6563686f2d31286e"
)
GOLDEN_HEARTBEAT = bytes.fromhex(
    "0a0c74726163652d68622d303031120d776f726b65722d636f64652d311a0608c59784bc06200162790a0d776f72"
    "6b65722d636f64652d31120a75732d656173742d31611a096370752d746f6f6c73250000c44130013a0670797468"
    "6f6e3a036769743a0762726f777365725a0c6a6f622e636f64652e6c6c6d60046a140a06726567696f6e120a7573"
    "2d656173742d31616a0e0a0772756e74696d651203637075"
)

NOON = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)


def golden_job_request() -> buspacket_pb2.BusPacket:
    request = job_pb2.JobRequest(
        job_id="job-basic-001",
        topic="job.echo",
        priority=job_pb2.JOB_PRIORITY_INTERACTIVE,
        context_ptr="redis://ctx/job-basic-001",
        env={"tenant": "acme", "locale": "en-US"},
    )
    return new_packet(sender_id="gateway-1", trace_id="trace-basic-001", created_at=NOON, job_request=request)


def golden_job_result() -> buspacket_pb2.BusPacket:
    result = job_pb2.JobResult(
        job_id="job-basic-001",
        status=job_pb2.JOB_STATUS_SUCCEEDED,
        result_ptr="redis://res/job-basic-001",
        worker_id="worker-echo-1",
        execution_ms=110,
    )
    return new_packet(
        sender_id="worker-echo-1",
        trace_id="trace-basic-001",
        created_at=NOON + timedelta(seconds=1),
        job_result=result,
    )


def golden_heartbeat() -> buspacket_pb2.BusPacket:
    heartbeat = heartbeat_pb2.Heartbeat(
        worker_id="worker-code-1",
        region="us-east-1a",
        type="cpu-tools",
        cpu_load=24.5,
        gpu_utilization=0.0,
        active_jobs=1,
        capabilities=["python", "git", "browser"],
        pool="job.code.llm",
        max_parallel_jobs=4,
        labels={"runtime": "cpu", "region": "us-east-1a"},
    )
    return new_packet(
        sender_id="worker-code-1",
        trace_id="trace-hb-001",
        created_at=NOON + timedelta(seconds=5),
        heartbeat=heartbeat,
    )


GOLDEN = [
    pytest.param(golden_job_request, GOLDEN_JOB_REQUEST, 127, id="job-request"),
    pytest.param(golden_job_result, GOLDEN_JOB_RESULT, 105, id="job-result"),
    pytest.param(golden_heartbeat, GOLDEN_HEARTBEAT, 162, id="heartbeat"),
]


@pytest.mark.parametrize(("build", "golden", "length"), GOLDEN)
def test_encode_reproduces_golden_bytes(
    build: Callable[[], buspacket_pb2.BusPacket], golden: bytes, length: int
) -> None:
    assert len(golden) == length
    assert encode_packet(build()) == golden


@pytest.mark.parametrize(("build", "golden", "length"), GOLDEN)
def test_decode_golden_bytes_gives_back_the_fields(
    build: Callable[[], buspacket_pb2.BusPacket], golden: bytes, length: int
) -> None:
    assert decode_packet(golden) == build()


def test_golden_job_request_fields() -> None:
    packet = decode_packet(GOLDEN_JOB_REQUEST, expect="job_request")
    assert packet.trace_id == "trace-basic-001"
    assert packet.sender_id == "gateway-1"
    assert packet.protocol_version == 1
    assert packet.created_at.ToDatetime(tzinfo=UTC) == NOON
    request = packet.job_request
    assert request.job_id == "job-basic-001"
    assert request.topic == "job.echo"
    assert request.priority == job_pb2.JOB_PRIORITY_INTERACTIVE
    assert request.context_ptr == "redis://ctx/job-basic-001"
    assert dict(request.env) == {"tenant": "acme", "locale": "en-US"}


def test_golden_job_result_fields() -> None:
    packet = decode_packet(GOLDEN_JOB_RESULT, expect="job_result")
    assert packet.sender_id == "worker-echo-1"
    assert packet.created_at.ToDatetime(tzinfo=UTC) == NOON + timedelta(seconds=1)
    result = packet.job_result
    assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
    assert result.result_ptr == "redis://res/job-basic-001"
    assert result.worker_id == packet.sender_id
    assert result.execution_ms == 110


def test_golden_heartbeat_fields() -> None:
    packet = decode_packet(GOLDEN_HEARTBEAT, expect="heartbeat")
    heartbeat = packet.heartbeat
    assert packet.trace_id == "trace-hb-001"
    assert heartbeat.worker_id == packet.sender_id == "worker-code-1"
    assert heartbeat.cpu_load == pytest.approx(24.5)
    assert heartbeat.gpu_utilization == 0.0
    assert list(heartbeat.capabilities) == ["python", "git", "browser"]
    assert heartbeat.pool == "job.code.llm"
    assert heartbeat.max_parallel_jobs == 4
    assert dict(heartbeat.labels) == {"region": "us-east-1a", "runtime": "cpu"}


def test_every_payload_of_the_cap_oneof_is_a_known_kind() -> None:
    oneof = buspacket_pb2.BusPacket.DESCRIPTOR.oneofs_by_name["payload"]
    assert set(PAYLOAD_KINDS) == {field.name for field in oneof.fields}


def test_packets_travel_as_bare_bytes_under_the_cap_content_type() -> None:
    register_serializer()
    data = encode_packet(new_packet(sender_id="s1", heartbeat=heartbeat_pb2.Heartbeat(worker_id="w1")))
    content_type, encoding, body = dumps(((data,), {}, {}), serializer=SERIALIZER)
    assert (content_type, encoding, body) == (CONTENT_TYPE, "binary", data)
    assert content_type == "application/x-cap+protobuf"  # the name CAP peers look for (cap-v2-spec)


# ---------------------------------------------------------------- round trips

SAMPLE_PAYLOADS: dict[str, Message] = {
    "job_request": job_pb2.JobRequest(
        job_id="j1",
        topic="job.echo",
        priority=job_pb2.JOB_PRIORITY_CRITICAL,
        context_ptr="redis://ctx:j1",
        labels={"b": "2", "a": "1"},
        budget=job_pb2.Budget(max_total_tokens=10_000, deadline_ms=5_000),
        meta=job_pb2.JobMetadata(tenant_id="acme", actor_type=job_pb2.ACTOR_TYPE_SERVICE, risk_tags=["prod"]),
    ),
    "job_result": job_pb2.JobResult(
        job_id="j1",
        status=job_pb2.JOB_STATUS_FAILED,
        worker_id="w1",
        error_code="boom",
        artifact_ptrs=["redis://art:log-1"],
    ),
    "heartbeat": heartbeat_pb2.Heartbeat(worker_id="w1", pool="job.echo", active_jobs=2, cpu_load=12.5),
    "alert": alert_pb2.SystemAlert(level="WARN", message="disk", component="store", code="DISK_LOW"),
    "job_progress": job_pb2.JobProgress(job_id="j1", percent=40, message="halfway-ish"),
    "job_cancel": job_pb2.JobCancel(job_id="j1", reason="user", requested_by="alice"),
}


def test_samples_cover_every_payload_kind() -> None:
    assert set(SAMPLE_PAYLOADS) == set(PAYLOAD_KINDS)


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_round_trip_every_payload_kind(kind: str) -> None:
    payload = SAMPLE_PAYLOADS[kind]
    packet = new_packet(sender_id="w1", trace_id="t-1", **{kind: payload})  # type: ignore[arg-type]
    assert payload_kind(packet) == kind

    decoded = decode_packet(encode_packet(packet), expect=kind)

    assert decoded == packet
    assert getattr(decoded, kind) == payload
    assert payload_kind(decoded) == kind


def test_encoding_is_deterministic_for_maps() -> None:
    first = job_pb2.JobRequest(job_id="j", topic="t", labels={"a": "1", "b": "2", "c": "3"})
    second = job_pb2.JobRequest(job_id="j", topic="t", labels={"c": "3", "b": "2", "a": "1"})
    packets = [new_packet(sender_id="s", trace_id="t", created_at=NOON, job_request=r) for r in (first, second)]
    assert encode_packet(packets[0]) == encode_packet(packets[1])


# ---------------------------------------------------------------- new_packet


def test_new_packet_defaults() -> None:
    before = datetime.now(UTC)
    packet = new_packet(sender_id="gw", job_cancel=job_pb2.JobCancel(job_id="j", requested_by="a"))
    after = datetime.now(UTC)

    assert packet.protocol_version == PROTOCOL_VERSION
    assert packet.sender_id == "gw"
    assert len(packet.trace_id) == 32
    int(packet.trace_id, 16)
    assert before - timedelta(seconds=1) <= packet.created_at.ToDatetime(tzinfo=UTC) <= after
    assert not packet.signature


def test_new_packet_trace_ids_are_unique_and_empty_means_absent() -> None:
    cancel = job_pb2.JobCancel(job_id="j", requested_by="a")
    first = new_packet(sender_id="gw", job_cancel=cancel)
    second = new_packet(sender_id="gw", trace_id="", job_cancel=cancel)
    assert first.trace_id and second.trace_id
    assert first.trace_id != second.trace_id


def test_new_packet_converts_created_at_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    packet = new_packet(
        sender_id="gw",
        created_at=datetime(2025, 1, 10, 14, 0, 0, tzinfo=plus_two),
        alert=alert_pb2.SystemAlert(level="INFO", message="m", component="c", code="x"),
    )
    assert packet.created_at.ToDatetime(tzinfo=UTC) == NOON


def test_new_packet_rejects_naive_created_at() -> None:
    with pytest.raises(EnvelopeError, match="timezone-aware"):
        new_packet(sender_id="gw", created_at=datetime(2025, 1, 10), heartbeat=heartbeat_pb2.Heartbeat())


def test_new_packet_copies_the_payload() -> None:
    request = job_pb2.JobRequest(job_id="j1", topic="job.echo")
    packet = new_packet(sender_id="gw", job_request=request)
    request.topic = "job.changed"
    assert packet.job_request.topic == "job.echo"


def test_new_packet_without_payload_fails() -> None:
    with pytest.raises(EnvelopeError, match="exactly one payload, got 0"):
        new_packet(sender_id="gw")


def test_new_packet_with_two_payloads_fails() -> None:
    with pytest.raises(EnvelopeError, match=r"got 2 \(heartbeat, job_request\)"):
        new_packet(sender_id="gw", job_request=job_pb2.JobRequest(), heartbeat=heartbeat_pb2.Heartbeat())


def test_new_packet_with_empty_sender_fails() -> None:
    with pytest.raises(EnvelopeError, match="sender_id"):
        new_packet(sender_id="", heartbeat=heartbeat_pb2.Heartbeat())


def test_new_packet_accepts_an_empty_payload_message() -> None:
    # An all-defaults payload serializes to zero bytes but the oneof still records which one is set.
    packet = new_packet(sender_id="gw", heartbeat=heartbeat_pb2.Heartbeat())
    assert payload_kind(decode_packet(encode_packet(packet))) == "heartbeat"


# ---------------------------------------------------------------- rejections


def valid_packet() -> buspacket_pb2.BusPacket:
    request = job_pb2.JobRequest(job_id="j1", topic="job.echo")
    return new_packet(sender_id="gw", trace_id="t-1", created_at=NOON, job_request=request)


def without(field: str) -> buspacket_pb2.BusPacket:
    packet = valid_packet()
    packet.ClearField(field)
    return packet


def with_version(version: int) -> buspacket_pb2.BusPacket:
    packet = valid_packet()
    packet.protocol_version = version
    return packet


def with_bad_timestamp() -> buspacket_pb2.BusPacket:
    packet = valid_packet()
    packet.created_at.seconds = 10**15
    return packet


INVALID = [
    pytest.param(lambda: without("job_request"), "missing payload", id="no-payload"),
    pytest.param(lambda: without("trace_id"), "missing trace_id", id="no-trace-id"),
    pytest.param(lambda: without("sender_id"), "missing sender_id", id="no-sender-id"),
    pytest.param(lambda: without("created_at"), "missing created_at", id="no-created-at"),
    pytest.param(lambda: with_version(0), "unsupported protocol_version 0; only 1", id="version-0"),
    pytest.param(lambda: with_version(2), "unsupported protocol_version 2; only 1", id="version-2"),
    pytest.param(with_bad_timestamp, "invalid created_at", id="bad-timestamp"),
]


@pytest.mark.parametrize(("build", "message"), INVALID)
def test_encode_rejects_invalid_packets(build: Callable[[], buspacket_pb2.BusPacket], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        encode_packet(build())


@pytest.mark.parametrize(("build", "message"), INVALID)
def test_decode_rejects_invalid_packets(build: Callable[[], buspacket_pb2.BusPacket], message: str) -> None:
    data = build().SerializeToString(deterministic=True)
    with pytest.raises(EnvelopeError, match=message):
        decode_packet(data)


@pytest.mark.parametrize("data", ["a string", None, 42, ["bytes"]], ids=["str", "none", "int", "list"])
def test_decode_rejects_non_bytes(data: object) -> None:
    with pytest.raises(EnvelopeError, match="must be bytes, got"):
        decode_packet(data)  # type: ignore[arg-type]


def test_decode_accepts_bytes_like_input() -> None:
    assert decode_packet(bytearray(GOLDEN_HEARTBEAT)) == decode_packet(memoryview(GOLDEN_HEARTBEAT))


@pytest.mark.parametrize("data", [b"\xff\xff", b"hello world", b"\x00", b"\x0a\x05ab"], ids=repr)
def test_decode_rejects_corrupt_bytes(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a CAP BusPacket"):
        decode_packet(data)


@pytest.mark.parametrize("data", [b"", b"\x08\x01", b"\x28\x07"], ids=["empty", "mistyped-field-1", "field-5"])
def test_decode_rejects_bytes_that_parse_to_nothing(data: bytes) -> None:
    # These parse without error (unknown or mistyped fields are kept aside), so validation must catch them.
    with pytest.raises(EnvelopeError, match="missing payload"):
        decode_packet(data)


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_decode_rejects_a_bare_payload_message(kind: str) -> None:
    # A serialized JobRequest (etc.) is valid protobuf and may parse as a BusPacket; it is still no envelope.
    data = SAMPLE_PAYLOADS[kind].SerializeToString(deterministic=True)
    with pytest.raises(EnvelopeError):
        decode_packet(data)


def test_decode_with_expect_rejects_other_payloads() -> None:
    with pytest.raises(EnvelopeError, match="expected a job_request payload, got job_result"):
        decode_packet(GOLDEN_JOB_RESULT, expect="job_request")


def test_decode_with_unknown_expect_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown payload kind 'job_requests'"):
        decode_packet(GOLDEN_JOB_REQUEST, expect="job_requests")


def test_payload_kind_of_an_empty_packet() -> None:
    with pytest.raises(EnvelopeError, match="missing payload"):
        payload_kind(buspacket_pb2.BusPacket())


# ---------------------------------------------------------------- forward compatibility


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def test_varint_helper_matches_protobuf() -> None:
    assert field_varint(4, 1) == b"\x20\x01"
    assert field_bytes(200, b"") == b"\xc2\x0c\x00"


def test_unknown_envelope_fields_are_tolerated_and_kept() -> None:
    # Fields 5 (signature_metadata) and 18 (auth_token) come from CAP peers newer than ours; 200 is arbitrary.
    extra = field_bytes(5, field_bytes(1, b"v1")) + field_bytes(18, b"token") + field_varint(200, 7)
    data = GOLDEN_JOB_REQUEST + extra

    packet = decode_packet(data, expect="job_request")

    assert packet.job_request == golden_job_request().job_request
    assert packet.trace_id == "trace-basic-001"
    assert encode_packet(packet) == data


def test_unknown_payload_fields_are_tolerated() -> None:
    # JobRequest.context_ref (20) from PyPI 2.17, nested inside the payload.
    request = SAMPLE_PAYLOADS["job_request"].SerializeToString() + field_bytes(20, field_bytes(2, b"s3://b/k"))
    data = (
        field_bytes(1, b"t-1")
        + field_bytes(2, b"gw")
        + field_bytes(3, field_varint(1, 1_736_510_400))
        + field_varint(4, 1)
        + field_bytes(10, request)
    )

    packet = decode_packet(data, expect="job_request")

    assert packet.job_request.job_id == "j1"
    assert packet.created_at.ToDatetime(tzinfo=UTC) == NOON


def test_unknown_enum_values_are_tolerated() -> None:
    # JOB_STATUS_FAILED_RETRYABLE (10) only exists on newer peers.
    result = field_bytes(1, b"j1") + field_varint(2, 10) + field_bytes(4, b"w1")
    data = GOLDEN_JOB_RESULT[: GOLDEN_JOB_RESULT.index(b"\x5a")] + field_bytes(11, result)

    packet = decode_packet(data, expect="job_result")

    assert packet.job_result.status == 10

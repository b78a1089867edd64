"""CAP packets on Celery queues.

The body of every Coretex job message on the broker is exactly a serialized CAP ``BusPacket``
(content type ``application/x-cap+protobuf``), so a consumer in any language decodes it with the
CAP ``.proto`` files alone. Celery's task protocol 2 keeps the task name, id and routing in the
message headers; the kombu serializer registered here maps Celery's ``(args, kwargs, embed)``
body to and from the packet bytes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.serialization import register

from coretex.agent.v1 import buspacket_pb2
from coretex.errors import EnvelopeError
from coretex.protocol.envelope import CONTENT_TYPE, encode_packet, payload_kind

SERIALIZER = "cap"

DISPATCH_TASK = "coretex.scheduler.dispatch"
"""Control queue: a submitted ``BusPacket{job_request}`` enters the dispatch pipeline."""
RESULT_TASK = "coretex.scheduler.apply_result"
"""Control queue: a worker's ``BusPacket{job_result}`` is applied to the job record."""
EXECUTE_TASK = "coretex.job.execute"
"""Pool queues: a dispatched ``BusPacket{job_request}`` is run by a pack worker."""
TICK_TASK = "coretex.tick"
"""Control queue, from beat: due timers (retries, deadlines, revokes), expired leases, artifact retention."""

HARD_LIMIT_GRACE_S = 5
"""Seconds between Celery's soft time limit (an exception in the handler) and the hard kill."""

_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _encode(body: Any) -> bytes:
    try:
        args, kwargs, _embed = body
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("the cap serializer only carries Celery protocol-2 task bodies") from exc
    if kwargs or len(args) != 1 or not isinstance(args[0], bytes | bytearray):
        raise EnvelopeError("a cap message carries exactly one argument: the serialized BusPacket")
    return bytes(args[0])


def _decode(data: bytes | str) -> tuple[tuple[bytes], dict[str, Any], dict[str, Any]]:
    # Validation happens in the task, where a bad packet can be dead-lettered with a reason.
    raw = data.encode("latin-1") if isinstance(data, str) else bytes(data)
    return (raw,), {}, dict(_EMBED)


def register_serializer() -> None:
    """Register the ``cap`` serializer with kombu (idempotent)."""
    register(  # type: ignore[no-untyped-call]
        SERIALIZER, _encode, _decode, content_type=CONTENT_TYPE, content_encoding="binary")


def send_packet(
    app: Celery,
    task: str,
    packet: buspacket_pb2.BusPacket,
    *,
    queue: str,
    task_id: str | None = None,
    time_limit_s: int | None = None,
    producer: Any = None,
) -> None:
    """Publish ``packet`` as the whole body of a ``task`` message on ``queue``.

    ``task_id`` names the message (see :func:`result_task_id`); ``time_limit_s`` becomes Celery's
    soft time limit on the worker, with a hard limit a few seconds later.
    """
    data = encode_packet(packet)
    kind = payload_kind(packet)
    job_id = getattr(packet, kind).job_id if kind in {"job_request", "job_result"} else ""
    limits = {"soft_time_limit": time_limit_s, "time_limit": time_limit_s + HARD_LIMIT_GRACE_S} if time_limit_s else {}
    app.send_task(
        task,
        args=(data,),
        queue=queue,
        task_id=task_id,
        serializer=SERIALIZER,
        **limits,
        # Shown by Flower and logs instead of the packet bytes: ids only, never payloads.
        argsrepr=f"<BusPacket {kind} job_id={job_id} trace_id={packet.trace_id}>",
        kwargsrepr="{}",
        producer=producer,
    )


def packet_delivery(
    app: Celery,
    task: str,
    packet: buspacket_pb2.BusPacket,
    *,
    queue: str,
    task_id: str | None = None,
    time_limit_s: int | None = None,
) -> tuple[str, str] | None:
    """The Redis list and the message :func:`send_packet` would push there, built by kombu but not
    sent, so the caller can push it in one atomic step with the state change it belongs to. None
    when the broker is not Redis (or kombu no longer builds batches the way this expects): send
    the packet instead.

    Uses kombu's publish batching (``Producer.batch`` hands each message's final Redis commands to
    a collector); the collector here keeps them instead of sending them.
    """
    with app.producer_or_acquire() as producer:
        local = getattr(producer, "_batch_local", None)
        if producer.connection.transport.driver_type != "redis" or local is None or hasattr(local, "current"):
            return None
        prefix = getattr(producer.channel, "global_keyprefix", "") or ""  # kombu's client adds it on sending
        collector = _Delivery()
        local.current = collector
        try:
            send_packet(app, task, packet, queue=queue, task_id=task_id, time_limit_s=time_limit_s, producer=producer)
        finally:
            del local.current
    if len(collector.commands) != 1 or collector.commands[0][0] != "lpush":
        return None
    _name, key, message = collector.commands[0]
    return prefix + str(key), message if isinstance(message, str) else bytes(message).decode()


class _Delivery:
    """Stands in for a producer's publish batch and keeps the commands kombu would send."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, *args))


def register_task(app: Celery, name: str, func: Any, *, bind: bool = False) -> None:
    """Register ``func`` as task ``name`` on ``app`` (results ignored: our job records are the result)."""
    app.task(name=name, ignore_result=True, shared=False, bind=bind)(func)


def result_task_id(job_id: str, attempt: int, outcome: str) -> str:
    """The id of a result message: ``result:<job_id>:<attempt>:<ok|retry|fatal>``.

    CAP v2.0's JobResult carries neither the attempt nor whether a failure is worth retrying (CAP
    2.17 adds FAILED_RETRYABLE / FAILED_FATAL statuses), so Coretex workers put both in the
    message id; a result from any other CAP producer counts as the current attempt, retryable.
    """
    return f"result:{job_id}:{attempt}:{outcome}"


def parse_result_task_id(task_id: str | None) -> tuple[int | None, bool]:
    """(attempt, retryable) from a :func:`result_task_id`; (None, True) for any other id."""
    parts = (task_id or "").split(":")
    if len(parts) >= 4 and parts[0] == "result" and parts[-2].isdigit():
        return int(parts[-2]), parts[-1] != "fatal"
    return None, True


def queue_depth(app: Celery, queue: str) -> int:
    """Messages waiting on ``queue`` (Redis or AMQP alike, through kombu's passive declare).

    A queue nobody declared yet holds nothing: 0.
    """
    with app.pool.acquire(block=True) as connection:
        channel = connection.default_channel
        size = getattr(channel, "_size", None)
        if size is not None:
            # kombu's Redis channel: its passive declare checks existence without the
            # global_keyprefix and answers 404 for a queue that holds messages, so count directly.
            return int(size(queue))
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:
            return 0

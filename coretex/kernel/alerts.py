"""CAP ``SystemAlert`` packets for operators: published live and kept in a bounded stream.

Keys (namespace ``<ns>``)::

    <ns>:alerts   pubsub   the serialized BusPacket{alert} (raw CAP bytes)
    <ns>:alerts   stream   one entry per alert, MAXLEN ~ ALERTS_MAXLEN: level, component, code,
                           message, sender_id, trace_id, created_at and packet (base64 of the
                           BusPacket bytes, so text clients can read the stream)

The channel and the stream share a name (pub/sub channels are not keys). Both are written in
one MULTI/EXEC.
"""

from __future__ import annotations

import base64
from typing import Any, cast

import redis

from coretex.agent.v1 import alert_pb2, buspacket_pb2
from coretex.protocol.envelope import encode_packet, new_packet
from coretex.store._redis import redis_errors

ALERTS_MAXLEN = 1000
CRITICAL = "CRITICAL"
WARNING = "WARNING"


def alerts_key(namespace: str) -> str:
    """The stream key, which is also the pub/sub channel name."""
    return f"{namespace}:alerts"


def alert_packet(sender_id: str, *, code: str, message: str, component: str = "kernel",
                 level: str = CRITICAL) -> buspacket_pb2.BusPacket:
    alert = alert_pb2.SystemAlert(level=level, message=message, component=component, code=code)
    return new_packet(sender_id=sender_id, alert=alert)


def publish_alert(client: redis.Redis, namespace: str, packet: buspacket_pb2.BusPacket) -> None:
    """Append ``packet`` to the alerts stream and publish it; raises StoreError."""
    data = encode_packet(packet)
    alert = packet.alert
    entry: dict[Any, Any] = {  # redis-py's field type is invariant
        "level": alert.level,
        "component": alert.component,
        "code": alert.code,
        "message": alert.message,
        "sender_id": packet.sender_id,
        "trace_id": packet.trace_id,
        "created_at": packet.created_at.ToDatetime().isoformat() + "Z",
        "packet": base64.b64encode(data).decode("ascii"),
    }
    key = alerts_key(namespace)
    with redis_errors(f"publish alert {alert.code}"):
        pipe = client.pipeline(transaction=True)
        pipe.xadd(key, entry, maxlen=ALERTS_MAXLEN, approximate=True)
        pipe.publish(key, data)
        pipe.execute()


def recent_alerts(client: redis.Redis, namespace: str, count: int = 50) -> list[dict[str, Any]]:
    """The newest alerts first (stream fields plus ``id``), from a decode_responses client; raises StoreError."""
    with redis_errors("read alerts"):
        rows = cast(list[tuple[str, dict[str, str]]], client.xrevrange(alerts_key(namespace), count=count))
    return [{"id": entry_id, **fields} for entry_id, fields in rows]

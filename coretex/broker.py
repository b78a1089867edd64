"""A guard for kombu/Celery crashes on a lost Redis broker connection.

Celery 5.7's consumer, on a connection error, collects the connection (its transport's ``client``
becomes None) and closes it while ``acks_late`` tasks are still in flight. Two things then touch
the dead channel and raise ``AttributeError`` (``'NoneType' object has no attribute 'hostname'``
or ``'client'``), which Celery calls unrecoverable, exiting the worker with status 0 (so a
supervisor that restarts failed processes leaves the pool unconsumed):

- closing the channel requeues its unacked messages through the gone client;
- a task that finishes after the reconnect acks (or rejects) its message on the old channel.

Neither is needed. The messages stay in the transport's unacked index (restored after the
visibility timeout), Coretex's leases retry an attempt long before that, and every attempt is
guarded by its number, so a late redelivery changes nothing. So both are skipped, loudly, when
the channel's connection is gone.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _connection_gone(qos: Any) -> bool:
    connection = getattr(qos.channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def guard_redis_channel_after_connection_loss() -> None:
    """Install the guard on kombu's Redis QoS (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos_class: Any = kombu_redis.QoS
    if getattr(qos_class, "coretex_guarded", False):
        return
    restore_unacked, ack, reject = qos_class.restore_unacked, qos_class.ack, qos_class.reject

    def guarded_restore_unacked(self: Any, client: Any = None) -> Any:
        if client is None and _connection_gone(self):
            log.warning("broker connection gone: %d unacked message(s) stay in the unacked index (restored "
                        "after the visibility timeout; their jobs' leases retry them sooner)", len(self._delivered))
            self._delivered.clear()
            return None
        return restore_unacked(self, client)

    def guarded_ack(self: Any, delivery_tag: Any) -> Any:
        if _connection_gone(self):
            log.warning("broker connection gone: message %s not acked; it stays in the unacked index", delivery_tag)
            self._delivered.pop(delivery_tag, None)
            return None
        return ack(self, delivery_tag)

    def guarded_reject(self: Any, delivery_tag: Any, requeue: bool = False) -> Any:
        if _connection_gone(self):
            log.warning("broker connection gone: message %s not rejected; it stays in the unacked index",
                        delivery_tag)
            self._delivered.pop(delivery_tag, None)
            return None
        return reject(self, delivery_tag, requeue)

    for name, method in (("restore_unacked", guarded_restore_unacked), ("ack", guarded_ack),
                         ("reject", guarded_reject)):
        setattr(qos_class, name, method)
    qos_class.coretex_guarded = True

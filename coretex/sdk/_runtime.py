"""The pool-side Celery task: decode the dispatched packet and run it on the active Worker."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from coretex.bus import EXECUTE_TASK, register_task
from coretex.errors import EnvelopeError
from coretex.protocol.envelope import decode_packet
from coretex.sdk._worker import Worker
from coretex.services import Services

log = logging.getLogger(__name__)

_active: list[Worker] = []


def activate(worker: Worker) -> None:
    """Make ``worker`` the one whose handlers this process runs (before the pool forks)."""
    _active[:] = [worker]


def active_worker() -> Worker | None:
    return _active[0] if _active else None


def register_execute_task(app: Celery, services: Callable[[], Services]) -> None:
    def execute(data: bytes) -> None:
        try:
            packet = decode_packet(data, expect="job_request")
        except EnvelopeError as exc:
            log.error("quarantined an undecodable job packet: %s", exc)
            services().dlq.quarantine(EXECUTE_TASK, str(exc), data)
            return
        worker = active_worker()
        if worker is None:
            # Raising makes Celery reject it; acks_late + reject_on_worker_lost bring it back.
            raise RuntimeError("this process has no active coretex.sdk.Worker; start it with `coretex worker`")
        worker.execute(services(), packet)

    register_task(app, EXECUTE_TASK, execute)

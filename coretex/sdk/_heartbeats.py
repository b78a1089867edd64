"""The worker process's CAP ``Heartbeat``: who it is, its pool, capabilities, load and capacity."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from coretex.agent.v1 import heartbeat_pb2
from coretex.errors import CoretexError
from coretex.protocol.envelope import new_packet
from coretex.sdk._worker import Worker
from coretex.services import Services
from coretex.store.workers import DRY_RUN_CAPABILITY, HEARTBEAT_INTERVAL_S

log = logging.getLogger(__name__)



def heartbeat_packet(services: Services, worker: Worker, concurrency: int) -> heartbeat_pb2.Heartbeat:
    load = os.getloadavg()[0] * 100 / (os.cpu_count() or 1)
    return heartbeat_pb2.Heartbeat(
        worker_id=worker.worker_id,
        type="cpu",
        cpu_load=min(load, 100.0),
        active_jobs=services.workers.active_jobs(worker.worker_id),
        capabilities=[*worker.capabilities, *(f"{DRY_RUN_CAPABILITY}{t}" for t in sorted(worker.dry_run_topics))],
        pool=worker.pool,
        max_parallel_jobs=concurrency,
    )


class HeartbeatSender:
    """Send a heartbeat now and then every ``interval_s`` from a daemon thread, until stopped."""

    def __init__(self, services: Callable[[], Services], worker: Worker, concurrency: int,
                 interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self._services, self._worker, self._concurrency = services, worker, concurrency
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coretex-heartbeat", daemon=True)

    def start(self) -> HeartbeatSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def send(self) -> None:
        services = self._services()
        beat = heartbeat_packet(services, self._worker, self._concurrency)
        packet = new_packet(sender_id=self._worker.worker_id, heartbeat=beat)
        services.workers.beat(packet, self._interval_s)

    def _run(self) -> None:
        while True:
            try:
                self.send()
            except CoretexError:
                log.warning("heartbeat of %s not sent", self._worker.worker_id, exc_info=True)
            if self._stop.wait(self._interval_s):
                return

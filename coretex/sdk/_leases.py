"""One lease keeper per worker process: renews the lease of every attempt the process runs.

A thread per job (started and joined around every handler) cost more than a no-op handler itself;
one daemon thread, started lazily in each (forked) process, renews all of them every third of
``CORETEX_LEASE_S`` and passes on cancel requests, so a handler sees ``job.cancelled`` within one
heartbeat. If the process dies, nothing renews: the leases expire and the tick retries the jobs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from coretex.scheduler.cancel import cancel_requested
from coretex.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Held:
    services: Services
    job_id: str
    attempt: int
    cancelled: threading.Event

    def renew(self, now: float) -> None:
        self.services.leases.hold(self.job_id, self.attempt, now + self.services.settings.lease_s)
        if cancel_requested(self.services, self.job_id):
            self.cancelled.set()


class LeaseKeeper:
    def __init__(self) -> None:
        self._held: dict[tuple[str, int], _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0

    def keep(self, services: Services, job_id: str, attempt: int, cancelled: threading.Event) -> None:
        """Renew the (already taken) lease of ``attempt`` until :meth:`drop`."""
        with self._lock:
            self._held[(job_id, attempt)] = _Held(services, job_id, attempt, cancelled)
            if self._pid != os.getpid():  # first job in this process (a fresh fork has no thread)
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="coretex-leases", daemon=True).start()
        self._wake.set()  # a shorter lease than the ones held so far shortens the wait

    def drop(self, job_id: str, attempt: int) -> None:
        with self._lock:
            self._held.pop((job_id, attempt), None)

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                held = list(self._held.values())
            interval = min((h.services.settings.lease_s for h in held), default=30.0) / 3
            wait = last + interval - time.monotonic()
            if wait > 0:  # woken early (a new job, perhaps with a shorter lease): wait out the rest
                self._wake.wait(wait)
                self._wake.clear()
                continue
            last = time.monotonic()
            for entry in held:
                with self._lock:
                    if (entry.job_id, entry.attempt) not in self._held:
                        continue  # it ended meanwhile: renewing would resurrect its lease
                try:
                    entry.renew(time.time())
                except Exception:  # Redis away, a closed client: try again next round, never die
                    log.warning("could not renew the lease of job %s", entry.job_id, exc_info=True)


KEEPER = LeaseKeeper()

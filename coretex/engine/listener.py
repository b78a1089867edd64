"""The control worker's ear for job news: a thread that blocks on the job news stream and hands
each ended job to the engine, then acknowledges it.

A run's step finishing is announced by the job's own transition (``store/job_news.py``), so the
engine hears of it one Redis round trip later, without a queue hop through Celery. Entries a
listener read but did not acknowledge (its process was killed mid-way) are claimed again by the
tick (:meth:`coretex.engine.engine.Engine.tick`), and handling twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from coretex.errors import StoreError
from coretex.store.job_news import JobNews, News

log = logging.getLogger(__name__)

BLOCK_MS = 1000
"""How long one read waits for news: also how soon a stop is noticed."""
BATCH = 16
RETRY_AFTER_S = 1.0


class NewsListener:
    """Reads job news as consumer ``<host>.<pid>.<n>`` and calls ``handle(news)`` for each entry."""

    def __init__(self, news: Callable[[], JobNews], handle: Callable[[News], None], index: int = 0) -> None:
        self._news = news
        self._handle = handle
        self.consumer = f"{socket.gethostname()}.{os.getpid()}.{index}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"coretex-job-news-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except StoreError as exc:  # Redis away: wait and read again; pending entries stay claimed
                log.warning("job news: %s", exc)
                self._stop.wait(RETRY_AFTER_S)
            except Exception:  # never die: a dead listener would leave every run to the reconcile
                log.exception("job news listener failed; going on")
                self._stop.wait(RETRY_AFTER_S)

    def poll(self, block_ms: int = BLOCK_MS) -> int:
        """Read one batch (waiting up to ``block_ms``), handle and acknowledge it; how many."""
        news = self._news()
        entries = news.read(self.consumer, block_ms=block_ms, count=BATCH)
        handle_news(news, entries, self._handle)
        return len(entries)


def handle_news(news: JobNews, entries: list[News], handle: Callable[[News], None]) -> None:
    """Handle each entry once, then acknowledge the batch. A handler failure is logged and the entry
    acknowledged all the same: the job's record still says what happened, and the engine's
    reconcile reads it from there (retrying a failure forever here would block the stream)."""
    for item in entries:
        if not item.job_id:
            continue
        try:
            handle(item)
        except Exception:
            log.exception("job %s: the engine could not take the news; the reconcile will", item.job_id)
    news.ack([item.entry_id for item in entries])

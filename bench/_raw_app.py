"""Raw Celery baseline for the benchmarks: a no-op task with a Redis result backend."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "rawbench",
    broker=os.environ["BENCH_REDIS_URL"],
    backend=os.environ["BENCH_REDIS_URL"],
    set_as_current=False,
)
app.conf.update(
    task_default_queue=os.environ.get("BENCH_RAW_QUEUE", "rawbench"),
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def noop() -> None:
    return None


noop_task = app.task(name="rawbench.noop")(noop)

"""The stack every benchmark runs: a private redis-server, a raw Celery worker for the baseline,
and the governed side (kernel, control worker, echo worker, optionally beat), all with
concurrency 2, in one run on the same Redis."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from coretex.processes import free_port, spawn_group, stop_group, wait_for_port
from coretex.services import Services
from coretex.settings import load_settings
from coretex.testing import ProcessStack, RedisServer

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def bench_stack(prefix: str, *, beat: bool = False) -> Iterator[Services]:
    """Start everything and yield the governed side's Services; the raw side's queue is set in
    the environment for :mod:`bench._raw_app`. Everything is stopped on exit."""
    with RedisServer() as redis_server, tempfile.TemporaryDirectory(prefix="coretex-bench-") as tmp:
        namespace = prefix + uuid.uuid4().hex[:6]
        kernel_addr = f"127.0.0.1:{free_port()}"
        env = {
            "CORETEX_REDIS_URL": redis_server.url,
            "CORETEX_NAMESPACE": namespace,
            "CORETEX_KERNEL_ADDR": kernel_addr,
            "CORETEX_CONFIG_DIR": str(REPO / "config"),
            "CORETEX_POLICIES_DIR": str(REPO / "policies"),
        }
        stack = ProcessStack(env, Path(tmp) / "logs", cwd=REPO)
        raw_env = {**stack.env, "BENCH_REDIS_URL": redis_server.url, "BENCH_RAW_QUEUE": namespace + ".raw"}
        raw_worker = spawn_group(
            [sys.executable, "-m", "celery", "-A", "bench._raw_app", "worker", "-c", "2", "-Q",
             namespace + ".raw", "--loglevel", "WARNING"],
            env=raw_env, log_path=Path(tmp) / "logs" / "raw.log", cwd=REPO,
        )
        os.environ.update({"BENCH_REDIS_URL": redis_server.url, "BENCH_RAW_QUEUE": namespace + ".raw"})
        services = Services(load_settings(stack.env))
        try:
            stack.start("kernel", "kernel", "--listen", kernel_addr)
            stack.start("control", "control", "-c", "2", "--log-level", "warning")
            if beat:
                stack.start("beat", "beat", "--schedule-file", str(Path(tmp) / "beat-schedule"),
                            "--log-level", "warning")
            stack.start("echo", "worker", "--pool", "echo", "--app", "examples.echo.worker:worker", "-c", "2",
                        "--log-level", "warning")
            wait_for_port("127.0.0.1", int(kernel_addr.rsplit(":", 1)[1]), timeout=30)
            yield services
        finally:
            stack.stop_all()
            stop_group(raw_worker.pid)
            services.close()


def wait_stream(services: Services, key: str, done: Callable[[dict[str, str]], str | None],
                timeout: float = 120.0) -> str:
    """Block on stream ``key`` (XREAD) until ``done`` returns something for an entry; return it."""
    last = "0-0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = cast(Any, services.redis.xread({key: last}, block=1000, count=100))
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                if (found := done(fields)) is not None:
                    return found
    raise TimeoutError(f"{key}: nothing ended within {timeout:.0f}s")

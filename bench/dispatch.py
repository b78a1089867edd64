"""Governed jobs vs raw Celery, in one run on the same redis-server.

Governed: submit through the client API (ctx pointer + record), kernel check over gRPC, routing,
publish a CAP BusPacket, a no-op SDK handler, JobResult applied to the record. Raw: Celery
``apply_async().get()`` of a no-op task with a Redis result backend. Both sides use worker
concurrency 2 (the control worker also has 2). Absolute times on shared 2-core machines are noise:
read the ratios.

Latency: one job at a time, submit to terminal state, in rounds alternating raw and governed.
Throughput: ``--clients`` threads submit ``--jobs`` between them, on both sides alike, then wait
for every result; ``--rounds`` such bursts per side, interleaved, and the median burst counts. A
governed submit runs the dispatch pipeline (kernel check included) before it returns, while
``apply_async`` only enqueues, so one submitting thread measures the submit call's latency, not
what the system sustains; the one-client figures are printed too.

    python bench/dispatch.py [--jobs 400] [--latency-jobs 150] [--clients 4] [--rounds 3] [--check]

Targets (issue #4): governed throughput >= 50% of raw; governed p50 round trip <= 2.5x raw.
``--check`` exits 1 when a target is missed. The last line is a one-line summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stack import bench_stack, wait_stream  # noqa: E402
from coretex.model.job import TERMINAL_STATES, JobMeta, JobState  # noqa: E402
from coretex.scheduler.submit import SubmitRequest, submit_job  # noqa: E402
from coretex.services import Services  # noqa: E402

TERMINAL = {s.value for s in TERMINAL_STATES}
LATENCY_ROUNDS = 5
SETTLE_S = 0.5
T = TypeVar("T")


def wait_terminal(services: Services, job_id: str, timeout: float = 60.0) -> str:
    """Block on the job's history stream until it reaches a terminal state."""
    key = f"{services.settings.namespace}:job:{job_id}:events"
    return wait_stream(services, key, lambda fields: fields["to"] if fields.get("to") in TERMINAL else None, timeout)


def in_threads(clients: int, jobs: int, submit: Callable[[], T]) -> list[T]:
    """Call ``submit`` ``jobs`` times from ``clients`` threads; every result, in no set order."""
    shares = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        batches = list(pool.map(lambda n: [submit() for _ in range(n)], shares))
    return [result for batch in batches for result in batch]


def governed(services: Services, jobs: int, latency_jobs: int, clients: int) -> tuple[float, list[float]]:
    meta = JobMeta(tenant_id="bench")
    latencies = []
    for _ in range(latency_jobs):
        start = time.perf_counter()
        job_id = submit_job(services, SubmitRequest("job.echo", {}, meta)).job_id
        state = wait_terminal(services, job_id)
        latencies.append(time.perf_counter() - start)
        assert state == JobState.SUCCEEDED.value, state
    start = time.perf_counter()
    ids = in_threads(clients, jobs, lambda: submit_job(services, SubmitRequest("job.echo", {}, meta)).job_id)
    for job_id in ids:
        state = wait_terminal(services, job_id)
        assert state == JobState.SUCCEEDED.value, state
    return jobs / (time.perf_counter() - start), latencies


def raw(jobs: int, latency_jobs: int, clients: int) -> tuple[float, list[float]]:
    from bench._raw_app import noop_task

    latencies = []
    for _ in range(latency_jobs):
        start = time.perf_counter()
        noop_task.apply_async().get(timeout=30)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    results = in_threads(clients, jobs, noop_task.apply_async)
    for result in results:
        result.get(timeout=60)
    return jobs / (time.perf_counter() - start), latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--latency-jobs", type=int, default=150)
    parser.add_argument("--clients", type=int, default=4, help="submitting threads in the throughput phase")
    parser.add_argument("--rounds", type=int, default=3, help="throughput bursts per side (median counts)")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    with bench_stack("bench") as services:
        # warm up both paths (worker start, connections, script loading)
        raw(20, 5, args.clients)
        governed(services, 20, 5, args.clients)
        raw_lat, gov_lat = [], []
        for _ in range(LATENCY_ROUNDS):  # interleaved, so both sides see the same moments of a shared machine
            time.sleep(SETTLE_S)
            raw_lat += raw(0, args.latency_jobs // LATENCY_ROUNDS, 1)[1]
            time.sleep(SETTLE_S)
            gov_lat += governed(services, 0, args.latency_jobs // LATENCY_ROUNDS, 1)[1]
        rounds: dict[str, list[float]] = {"raw": [], "gov": [], "raw_one": [], "gov_one": []}
        for _ in range(args.rounds):  # each a burst per side, interleaved; the median burst counts
            for key, measure in (("raw", lambda: raw(args.jobs, 0, args.clients)),
                                 ("gov", lambda: governed(services, args.jobs, 0, args.clients)),
                                 ("raw_one", lambda: raw(args.jobs, 0, 1)),
                                 ("gov_one", lambda: governed(services, args.jobs, 0, 1))):
                time.sleep(SETTLE_S)  # what the last burst left running must not slow this one
                rounds[key].append(measure()[0])
        raw_tput, gov_tput, raw_one, gov_one = (statistics.median(rounds[k])
                                                for k in ("raw", "gov", "raw_one", "gov_one"))

    raw_p50, gov_p50 = statistics.median(raw_lat), statistics.median(gov_lat)
    raw_p99 = statistics.quantiles(raw_lat, n=100)[98]
    gov_p99 = statistics.quantiles(gov_lat, n=100)[98]
    tput_ratio, p50_ratio = gov_tput / raw_tput, gov_p50 / raw_p50
    for name, tput, one, p50, p99 in (("raw celery", raw_tput, raw_one, raw_p50, raw_p99),
                                      ("governed", gov_tput, gov_one, gov_p50, gov_p99)):
        print(f"{name:12} throughput {tput:7.1f} jobs/s ({args.clients} clients; 1 client {one:6.1f})   "
              f"p50 {p50 * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms")
    ok = tput_ratio >= 0.5 and p50_ratio <= 2.5
    print(f"dispatch: throughput {gov_tput:.0f}/{raw_tput:.0f} jobs/s = {tput_ratio:.2f}x raw with {args.clients} "
          f"clients (target >= 0.50; 1 client {gov_one / raw_one:.2f}x), "
          f"p50 {gov_p50 * 1000:.2f}/{raw_p50 * 1000:.2f} ms = {p50_ratio:.2f}x raw (target <= 2.50) "
          f"-> {'PASS' if ok else 'MISS'}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

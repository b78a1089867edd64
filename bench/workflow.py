"""Governed workflow runs vs raw Celery canvas, in one run on the same redis-server.

Linear: a 10-step workflow of no-op worker steps (each step a governed job: kernel check,
routing, CAP packet, SDK handler, result pointer, one atomic run commit per transition) vs a raw
Celery ``chain`` of 10 no-op tasks. Fan-out: one ``for_each`` step over 100 items vs a raw Celery
``group`` of 100 no-op tasks. Wall time from start to the end of the run (raw: ``.get()``), median
of several repetitions, the raw and governed runs interleaved. Both sides use worker concurrency 2
(the control worker also has 2).
Absolute times on shared 2-core machines are noise: read the ratios.

    python bench/workflow.py [--repeat 11] [--check] [--phases]

Targets (issue #5): linear <= 3x the chain's wall time; fan-out <= 3x the group's.
``--check`` exits 1 when a target is missed. The last line is a one-line summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stack import bench_stack, wait_stream  # noqa: E402
from coretex.services import Services  # noqa: E402

TENANT = "bench"
SETTLE_S = 0.3
ENDED = {"succeeded", "failed", "cancelled", "timed_out"}
LINEAR = {"id": "bench-linear", "steps": [
    {"id": f"s{i}", "type": "worker", "topic": "job.echo", "input": {"i": i},
     **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(10)]}
FAN_OUT = {"id": "bench-fan-out", "steps": [
    {"id": "each", "type": "worker", "topic": "job.echo", "for_each": "input.items", "input": {"i": "${item}"}}]}


def wait_run(services: Services, run_id: str, timeout: float = 120.0) -> str:
    """Block on the run's timeline stream until the run ends; return its status."""
    key = f"{services.settings.namespace}:run:{run_id}:timeline"
    return wait_stream(services, key, lambda fields: fields["to"] if fields.get("type") == "run_status"
                       and fields.get("to") in ENDED else None, timeout)


def governed(services: Services, workflow_id: str, input: Any, repeat: int,
             runs: list[str] | None = None) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run_id = services.engine.start(TENANT, workflow_id, input, started_by="bench", actor_type="service").run_id
        status = wait_run(services, run_id)
        times.append(time.perf_counter() - start)
        assert status == "succeeded", status
        if runs is not None:
            runs.append(run_id)
    return times


PHASES = ("job created", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED", "run heard it")


def step_phases(services: Services, run_ids: list[str]) -> dict[str, float]:
    """Median milliseconds of each phase of a step, from the run timelines and job histories:
    the run's dispatch -> job created -> SCHEDULED -> DISPATCHED -> RUNNING -> SUCCEEDED -> the
    run's job_result entry."""
    samples: dict[str, list[float]] = {name: [] for name in PHASES}
    for run_id in run_ids:
        timeline = services.engine.runs.timeline(run_id, limit=10_000).entries
        dispatched = {e["step"]: float(e["at"]) for e in timeline if e["type"] == "dispatch"}
        heard = {e["step"]: float(e["at"]) for e in timeline if e["type"] == "job_result"}
        run = services.engine.get(TENANT, run_id)
        for step_id, state in run.steps.items():
            moves = {e["to"]: float(e["at"]) for e in services.jobs.history(state.job_id) if e["from"] != e["to"]}
            marks = [dispatched[step_id], moves["PENDING"], moves["SCHEDULED"], moves["DISPATCHED"],
                     moves["RUNNING"], moves["SUCCEEDED"], heard[step_id]]
            for name, (before, after) in zip(PHASES, zip(marks, marks[1:], strict=False), strict=True):
                samples[name].append((after - before) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def raw_chain(repeat: int) -> list[float]:
    from celery import chain

    from bench._raw_app import noop_task

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        chain(noop_task.si() for _ in range(10)).apply_async().get(timeout=60)
        times.append(time.perf_counter() - start)
    return times


def raw_group(repeat: int) -> list[float]:
    from celery import group

    from bench._raw_app import noop_task

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        group(noop_task.si() for _ in range(100)).apply_async().get(timeout=120)
        times.append(time.perf_counter() - start)
    return times


def settled(measure: Callable[..., list[float]], *args: Any) -> list[float]:
    """``measure(*args)`` after a pause, so what the previous measurement left running (acks,
    outbox and lease bookkeeping) does not slow this one down."""
    time.sleep(SETTLE_S)
    return measure(*args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--phases", action="store_true", help="also print where a linear step's time goes")
    args = parser.parse_args()
    linear_runs: list[str] = []

    with bench_stack("wfbench", beat=True) as services:
        linear_id = services.engine.save_workflow(TENANT, LINEAR, "bench").id
        fan_id = services.engine.save_workflow(TENANT, FAN_OUT, "bench").id
        items = {"items": list(range(100))}
        raw_chain(2), raw_group(1), governed(services, linear_id, {}, 2), governed(services, fan_id, items, 1)
        chain_t: list[float] = []
        group_t: list[float] = []
        linear_t: list[float] = []
        fan_t: list[float] = []
        for _ in range(args.repeat):  # interleaved, so both sides see the same moments of a shared machine
            chain_t += settled(raw_chain, 1)
            linear_t += settled(governed, services, linear_id, {}, 1, linear_runs)
            group_t += settled(raw_group, 1)
            fan_t += settled(governed, services, fan_id, items, 1)
        phases = step_phases(services, linear_runs) if args.phases else {}

    chain_m, group_m = statistics.median(chain_t), statistics.median(group_t)
    linear_m, fan_m = statistics.median(linear_t), statistics.median(fan_t)
    linear_ratio, fan_ratio = linear_m / chain_m, fan_m / group_m
    print(f"raw chain of 10      median {chain_m * 1000:8.1f} ms")
    print(f"workflow, 10 steps   median {linear_m * 1000:8.1f} ms   {linear_ratio:.2f}x the chain")
    print(f"raw group of 100     median {group_m * 1000:8.1f} ms")
    print(f"workflow, fan-out 100 median {fan_m * 1000:7.1f} ms   {fan_ratio:.2f}x the group")
    if phases:
        print("a linear step, median ms: " + ", ".join(f"-> {name} {ms:.2f}" for name, ms in phases.items())
              + f" (sum {sum(phases.values()):.1f}; a raw chain task {chain_m * 100:.1f})")
    ok = linear_ratio <= 3.0 and fan_ratio <= 3.0
    print(f"workflow: linear {linear_m * 1000:.0f} ms = {linear_ratio:.2f}x chain {chain_m * 1000:.0f} ms "
          f"(target <= 3.00), fan-out {fan_m * 1000:.0f} ms = {fan_ratio:.2f}x group {group_m * 1000:.0f} ms "
          f"(target <= 3.00) -> {'PASS' if ok else 'MISS'}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

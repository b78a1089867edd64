"""Property tests of decide(run, event) over random DAGs and random event orders.

A simulated world answers the engine: it picks any outstanding job and answers it (succeeded,
failed with a random code, timed out) in random order, fires random timers (moving its clock to
the timer's due time), sends approvals from random people, and now and then redelivers an old
event, sends a stale result or an ineligible approval, reports a job parked for approval, or
cancels the run. ``Driver`` checks the per-transition invariants (input never mutated, no
(step, attempt, item) dispatched twice, nothing started before its dependencies are done, timer
commands agree with the run's timers, one FinishRun); the tests below check the rest.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflow_helpers import Driver, commands_as_dicts, dep_done, make_run, replay

from coretex.workflow.commands import DispatchJob, StartTimer
from coretex.workflow.decide import decide
from coretex.workflow.definition import Workflow, parse_workflow
from coretex.workflow.events import (
    Approval,
    Cancel,
    Event,
    JobProgress,
    JobResult,
    Start,
    TimerFired,
)
from coretex.workflow.expressions import compile_expression
from coretex.workflow.run import STEP_FAILURES, STEP_TERMINAL, RunStatus, StepStatus, run_to_dict

# celpy raises the recursion limit when its environment is first built; build it before any
# hypothesis test runs, or hypothesis warns that it cannot restore the limit (warnings are errors).
compile_expression("true")

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_000.0
STARTER = "u0"
PEOPLE: dict[str, tuple[str, ...]] = {
    "u0": ("ops",), "u1": ("ops",), "u2": ("ops", "sec"), "u3": ("sec",), "u4": ("ops",), "u5": ("dev",),
}
STEP_TYPES = ["worker", "worker", "worker", "condition", "notify", "delay", "approval"]


# -- random workflows -------------------------------------------------------------------------------


@st.composite
def documents(draw: st.DrawFn, *, for_each: bool = False) -> dict[str, Any]:
    count = draw(st.integers(1, 12))
    steps: list[dict[str, Any]] = []
    for i in range(count):
        step_type = draw(st.sampled_from(STEP_TYPES))
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        if i and i - 1 not in deps and draw(st.booleans()):
            deps.append(i - 1)  # long chains as well as wide fans
        step: dict[str, Any] = {"id": f"s{i}", "type": step_type, "depends_on": [f"s{d}" for d in sorted(deps)]}
        if draw(st.integers(0, 3)) == 0:
            step["on_failure"] = "continue"
        conditions = ["true", "false", "input.flag", "input.n > 2"] + \
            [f"steps.s{d}.status == 'succeeded'" for d in deps]
        if draw(st.integers(0, 4)) == 0:
            step["condition"] = draw(st.sampled_from(conditions))
        if step_type == "worker":
            step["topic"] = f"job.s{i}"
            step["input"] = {"n": "${input.n}", "deps": {f"s{d}": f"${{steps.s{d}.status}}" for d in deps}}
            if draw(st.booleans()):
                step["retry"] = {
                    "max_attempts": draw(st.integers(1, 3)),
                    "initial_backoff_sec": draw(st.sampled_from([0.5, 1, 3])),
                    "max_backoff_sec": draw(st.sampled_from([1, 4, 30])),
                    "multiplier": draw(st.sampled_from([1, 2, 3])),
                    "jitter": draw(st.sampled_from([0, 0.25, 1])),
                    "retry_on": draw(st.sampled_from([[], ["flaky"]])),
                }
            if draw(st.integers(0, 3)) == 0:
                step["timeout_sec"] = draw(st.sampled_from([2, 10, 40]))
            if for_each and draw(st.booleans()):
                step["for_each"] = "input.xs"
                step["max_parallel"] = draw(st.integers(0, 2))
                step["input"] = {"item": "${item}", "index": "${index}"}
        elif step_type == "condition":
            step["expression"] = draw(st.sampled_from(conditions))
        elif step_type == "notify":
            step["message"] = "run ${run.id}: n=${input.n}"
            step["level"] = draw(st.sampled_from(["INFO", "WARNING", "CRITICAL"]))
        elif step_type == "delay":
            if draw(st.integers(0, 3)) == 0:
                step["delay_until"] = "1970-01-01T00:00:00Z"
            else:
                step["delay_sec"] = draw(st.sampled_from([1, 5, 30]))
        else:
            step["approvers"] = draw(st.sampled_from([["ops"], ["ops", "sec"]]))
            step["quorum"] = draw(st.integers(1, 3))
            step["allow_self_approval"] = draw(st.booleans())
            if draw(st.booleans()):
                step["expires_after_sec"] = draw(st.sampled_from([5, 60]))
                step["on_expiry"] = draw(st.sampled_from(["reject", "skip"]))
        steps.append(step)
    document: dict[str, Any] = {"id": "prop", "steps": steps}
    if draw(st.integers(0, 3)) == 0:
        document["timeout_sec"] = draw(st.sampled_from([20, 200]))
    return document


inputs = st.fixed_dictionaries({
    "n": st.integers(0, 5),
    "flag": st.booleans(),
    "xs": st.lists(st.integers(0, 9), max_size=4),
})


# -- the simulated world ----------------------------------------------------------------------------


def eligible_approvers(driver: Driver, step_id: str) -> list[str]:
    step = driver.run.workflow.steps[step_id]
    decided = {a["by"] for a in driver.run.steps[step_id].approvals}
    return [who for who, roles in PEOPLE.items()
            if set(roles) & set(step.approvers) and who not in decided
            and (who != STARTER or step.allow_self_approval)]


def waiting_approvals(driver: Driver) -> list[str]:
    return [k for k, s in driver.run.steps.items()
            if s.status is StepStatus.WAITING and driver.run.workflow.steps[k].type == "approval"]


def event_bound(workflow: Workflow, items: int) -> int:
    """Events a run needs at most to finish (productive ones), by a generous count per step."""
    total = 2
    for step in workflow.steps.values():
        units = max(items, 1) if step.for_each else 1
        total += units * step.retry.max_attempts * 4 + step.quorum + 4
    return total


class World:
    def __init__(self, data: st.DataObject, workflow: Workflow, input: Any, *, noise: bool = True,
                 progress: bool = True, item_redelivery: bool = True) -> None:
        self.data = data
        self.driver = Driver(make_run(workflow, input, started_by=STARTER))
        self.now = T0
        self.noise_left = data.draw(st.integers(0, 12)) if noise else 0
        self.progress = progress
        self.item_redelivery = item_redelivery
        self.productive = 0
        self.ignored_duplicates = 0

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def tick(self) -> float:
        self.now += self.draw(st.integers(0, 3))
        return self.now

    def run_to_the_end(self, bound: int) -> Driver:
        driver = self.driver
        assert driver.apply(Start(self.now)).applied
        while not driver.run.terminal:
            assert self.productive <= bound, f"run did not terminate within {bound} events"
            if self.noise_left and self.draw(st.integers(0, 3)) == 0:
                self.noise_left -= 1
                self.noise()
            else:
                self.productive += 1
                self.step()
        return driver

    def step(self) -> None:
        driver = self.driver
        jobs = [("job", j) for j in driver.jobs]
        # The run's own timeout is the last resort: fired early it would end most runs at once.
        timers = [("timer", t) for t in sorted(driver.run.timers, key=lambda t: (t == "run_timeout", t))]
        approvals = [("approve", s) for s in waiting_approvals(driver) if eligible_approvers(driver, s)]
        assert jobs or timers or approvals, \
            f"run {driver.run.status.value} is stuck: no job, timer or approval outstanding " \
            f"{ {k: v.status.value for k, v in driver.run.steps.items()} }"
        # Mostly answer jobs; sometimes fire a timer or decide an approval (whatever exists).
        preferred = [jobs, jobs, jobs, approvals, timers][self.draw(st.integers(0, 4))]
        pool = preferred or jobs or approvals or timers
        if pool is timers and len(timers) > 1 and timers[-1][1] == "run_timeout" and self.draw(st.integers(0, 9)):
            pool = timers[:-1]
        kind, key = self.draw(st.sampled_from(pool))
        if kind == "job":
            self.answer(key)
        elif kind == "timer":
            self.now = max(self.now, driver.run.timers[key])
            assert driver.apply(TimerFired(self.now, key)).applied
        else:
            who = self.draw(st.sampled_from(eligible_approvers(driver, key)))
            approve = self.draw(st.integers(0, 4)) > 0
            assert driver.apply(Approval(self.tick(), key, who, PEOPLE[who], approve, "why")).applied

    def answer(self, job_id: str) -> None:
        dispatch = self.driver.jobs[job_id]
        status = self.draw(st.sampled_from(["succeeded"] * 6 + ["failed", "timed_out"]))
        code = self.draw(st.sampled_from(["flaky", "fatal"])) if status == "failed" else ""
        output = {"step": dispatch.step_id, "attempt": dispatch.attempt} if status == "succeeded" else None
        event = JobResult(self.tick(), dispatch.step_id, dispatch.attempt, job_id, status, item=dispatch.item,
                          output=output, error_code=code)
        assert self.driver.apply(event).applied, "an outstanding job's result was refused"

    def retry_pending(self, dispatch: DispatchJob) -> bool:
        state = self.driver.run.steps[dispatch.step_id]
        slot = state if dispatch.item is None or state.items is None else state.items[dispatch.item]
        return bool(slot.retry_at) and slot.attempt == dispatch.attempt

    def noise(self) -> None:
        driver = self.driver
        kind = self.draw(st.sampled_from(["duplicate", "stale", "duplicate", "stale", "bad_approval", "progress",
                                          "cancel"]))
        if kind == "duplicate" and driver.log:
            recent = self.draw(st.booleans())  # an immediate redelivery is the likeliest duplicate
            old = self.draw(st.sampled_from(driver.log[-2:] if recent else driver.log))
            if isinstance(old, JobProgress):
                return  # a progress report may legitimately repeat after the job moved on
            if isinstance(old, JobResult) and old.item is not None and not self.item_redelivery:
                return
            assert not driver.apply(old).applied, f"a redelivered {old} was applied again"
            self.ignored_duplicates += 1
        elif kind == "stale" and driver.answered:
            # Prefer the jobs of attempts waiting to be retried: their slot is still active.
            retrying = [j for j, d in driver.answered.items() if self.retry_pending(d)]
            job_id = self.draw(st.sampled_from(retrying or sorted(driver.answered)))
            dispatch = driver.answered[job_id]
            if dispatch.item is not None and not self.item_redelivery:
                return
            status = self.draw(st.sampled_from(["succeeded", "failed", "timed_out", "cancelled"]))
            event = JobResult(self.tick(), dispatch.step_id, dispatch.attempt, job_id, status, item=dispatch.item)
            assert not driver.apply(event).applied, f"stale result {event} was applied"
        elif kind == "bad_approval":
            waiting = waiting_approvals(driver)
            if waiting:
                step_id = self.draw(st.sampled_from(waiting))
                step = driver.run.workflow.steps[step_id]
                bad = [w for w, roles in PEOPLE.items() if not set(roles) & set(step.approvers)]
                if not step.allow_self_approval:
                    bad.append(STARTER)
                who = self.draw(st.sampled_from(bad))
                refused = Approval(self.tick(), step_id, who, PEOPLE[who], self.draw(st.booleans()))
                assert not driver.apply(refused).applied, f"ineligible approval {refused} was applied"
        elif kind == "progress" and self.progress and driver.jobs:
            job_id = self.draw(st.sampled_from(sorted(driver.jobs)))
            dispatch = driver.jobs[job_id]
            state = self.draw(st.sampled_from(["waiting_approval", "running"]))
            driver.apply(JobProgress(self.tick(), dispatch.step_id, dispatch.attempt, job_id, state,
                                     item=dispatch.item, reason="policy"))
        elif kind == "cancel":
            assert driver.apply(Cancel(self.tick(), "operator")).applied
            assert driver.run.status is RunStatus.CANCELLED


def simulate(data: st.DataObject, *, for_each: bool = False, noise: bool = True, progress: bool = True,
             item_redelivery: bool = True) -> World:
    document = data.draw(documents(for_each=for_each), label="document")
    input: dict[str, Any] = data.draw(inputs, label="input")
    workflow = parse_workflow(document)
    world = World(data, workflow, input, noise=noise, progress=progress, item_redelivery=item_redelivery)
    world.run_to_the_end(event_bound(workflow, len(input["xs"])))
    return world


# -- properties -------------------------------------------------------------------------------------


def check_final_state(world: World) -> None:
    driver = world.driver
    run = driver.run
    assert run.terminal and run.timers == {}
    assert driver.jobs == {}, "a job was left running after the run ended"
    assert all(s.status in STEP_TERMINAL for s in run.steps.values())
    assert [f.status for f in driver.finished] == [run.status.value]
    ids = [c.id for c in driver.commands]
    assert len(ids) == len(set(ids)), "command ids repeat within the run"
    assert len(driver.dispatch_keys) == len(set(driver.dispatch_keys)) == len(driver.all_dispatched)
    statuses = {k: s.status for k, s in run.steps.items()}
    fatal = [k for k, s in statuses.items() if s in STEP_FAILURES and run.workflow.steps[k].on_failure == "fail_run"]
    if run.status is RunStatus.SUCCEEDED:
        assert not fatal and StepStatus.BLOCKED not in statuses.values()
        assert all(dep_done(run, k) for k in statuses)
    elif run.status is RunStatus.FAILED:
        assert fatal, "a run failed without a fatal step failure"


def check_terminal_run_ignores_everything(world: World) -> None:
    driver = world.driver
    run = driver.run
    later = world.now + 10_000
    events: list[Event] = [Start(later), Cancel(later, "x")]
    for job_id, dispatch in driver.all_dispatched.items():
        for status in ("succeeded", "failed", "timed_out"):
            events.append(JobResult(later, dispatch.step_id, dispatch.attempt, job_id, status, item=dispatch.item))
        events.append(JobProgress(later, dispatch.step_id, dispatch.attempt, job_id, "running", item=dispatch.item))
    events += [TimerFired(later, timer_id) for timer_id in
               {c.timer_id for c in driver.commands if isinstance(c, StartTimer)} | {"run_timeout"}]
    for step_id, step in run.workflow.steps.items():
        if step.type == "approval":
            events += [Approval(later, step_id, who, roles, True) for who, roles in PEOPLE.items()]
    for event in events:
        outcome = decide(run, event)
        assert not outcome.applied and outcome.run is run and outcome.commands == [], event


def check_replay(world: World) -> None:
    """Replaying the log rebuilds every intermediate state; decide gives the same outcome again."""
    driver = world.driver
    assert driver.initial is not None
    run = driver.initial
    for event, recorded in zip(driver.log, driver.outcomes, strict=True):
        again = decide(run, event)
        assert again.applied == recorded.applied
        assert run_to_dict(again.run) == run_to_dict(recorded.run)
        assert again.commands == recorded.commands and again.timeline == recorded.timeline
        run = again.run
    rebuilt, commands, _ = replay(driver.initial, driver.log)
    assert run_to_dict(rebuilt) == run_to_dict(driver.run)
    assert commands_as_dicts(commands) == commands_as_dicts(driver.commands)


@PROPERTY_SETTINGS
@given(st.data())
def test_random_runs_terminate_and_keep_every_invariant(data: st.DataObject) -> None:
    world = simulate(data)
    check_final_state(world)
    check_terminal_run_ignores_everything(world)


@PROPERTY_SETTINGS
@given(st.data())
def test_decide_is_deterministic_and_replay_rebuilds_the_state(data: st.DataObject) -> None:
    world = simulate(data)
    check_replay(world)


@settings(PROPERTY_SETTINGS, max_examples=120)
@given(st.data())
def test_random_runs_without_noise_finish_by_the_dag_alone(data: st.DataObject) -> None:
    world = simulate(data, noise=False)
    check_final_state(world)
    assert world.driver.run.status is not RunStatus.CANCELLED
    dispatched = {(k[0], k[2]) for k in world.driver.dispatch_keys}
    for step_id, state in world.driver.run.steps.items():
        step = world.driver.run.workflow.steps[step_id]
        if state.status is StepStatus.SUCCEEDED and step.type == "worker" and not step.for_each:
            assert (step_id, None) in dispatched and state.output == {"step": step_id, "attempt": state.attempt}


@settings(PROPERTY_SETTINGS, max_examples=120)
@given(st.data())
def test_for_each_runs_keep_every_invariant(data: st.DataObject) -> None:
    world = simulate(data, for_each=True)
    check_final_state(world)
    check_replay(world)
    run = world.driver.run
    for step_id, state in run.steps.items():
        step = run.workflow.steps[step_id]
        if step.for_each and state.items is not None:
            limit = step.max_parallel or len(state.items)
            assert len(state.items) == len(run.input["xs"]) and limit >= 1 or not state.items
            if state.status is StepStatus.SUCCEEDED:
                assert state.output == [{"step": step_id, "attempt": i.attempt} for i in state.items]


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(st.data())
def test_for_each_never_exceeds_max_parallel(data: st.DataObject) -> None:
    world = simulate(data, for_each=True)
    driver = world.driver
    for outcome in driver.outcomes:
        for step_id, state in outcome.run.steps.items():
            step = outcome.run.workflow.steps[step_id]
            if state.items and step.max_parallel:
                active = sum(1 for i in state.items if i.status in (StepStatus.RUNNING, StepStatus.WAITING))
                assert active <= step.max_parallel

"""decide(run, event): the workflow engine's semantics, one scenario at a time.

Every scenario goes through ``Driver``, which also checks the per-transition invariants (the input
run is never mutated, no (step, attempt, item) is dispatched twice, no dispatch before the
dependencies are done, timer commands agree with the run's timers, one FinishRun at the end).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from workflow_helpers import (
    RUN_ID,
    STARTED_AT,
    Driver,
    build,
    commands_as_dicts,
    dispatched_steps,
    job,
    kinds,
    make_run,
    of_type,
    replay,
    result,
)

from coretex.workflow.commands import (
    CancelJob,
    DispatchJob,
    EmitAlert,
    FinishRun,
    StartTimer,
    StopTimer,
    command_from_dict,
    command_to_dict,
)
from coretex.workflow.decide import approval_problem, backoff_s, decide, job_id_for
from coretex.workflow.events import (
    Approval,
    Cancel,
    Event,
    JobProgress,
    JobResult,
    Rerun,
    Start,
    TimerFired,
    event_from_dict,
    event_kind,
    event_to_dict,
)
from coretex.workflow.run import ItemRun, RunStatus, StepStatus, run_from_dict, run_to_dict

T0 = STARTED_AT


def worker(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "worker", "topic": f"job.{step_id}", **fields}


def approval(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "approvers": ["ops"], **fields}


def started(steps: list[dict[str, Any]], input: Any = None, *, document: dict[str, Any] | None = None,
            **run_kwargs: Any) -> Driver:
    driver = Driver(make_run(build(steps, **(document or {})), input, **run_kwargs))
    assert driver.apply(Start(T0)).applied
    return driver


def status(driver: Driver, step_id: str) -> StepStatus:
    return driver.run.steps[step_id].status


def run_status(driver: Driver) -> RunStatus:
    return driver.run.status


# -- start ----------------------------------------------------------------------------------------


def test_start_dispatches_roots_and_arms_the_run_timeout() -> None:
    driver = Driver(make_run(build([worker("a", input={"x": "${input.x}"}), worker("b"),
                                    worker("c", depends_on=["a"])], timeout_sec=300), {"x": 5}))
    outcome = driver.apply(Start(T0))
    assert driver.run.status is RunStatus.RUNNING and driver.run.started_at == T0
    assert dispatched_steps(outcome.commands) == ["a", "b"]
    assert of_type(outcome.commands, StartTimer) == [StartTimer(f"{RUN_ID}:0:0", "run_timeout", T0 + 300)]
    dispatch = of_type(outcome.commands, DispatchJob)[0]
    meta = driver.run.workflow.steps["a"].meta
    assert dispatch == DispatchJob(dispatch.id, "a", 1, job("a"), "job.a", {"x": 5}, meta)
    assert status(driver, "c") is StepStatus.PENDING
    assert driver.run.seq == 1
    assert any(t["type"] == "dispatch" and t["step"] == "a" for t in outcome.timeline)
    assert not driver.apply(Start(T0 + 1)).applied


def test_job_ids_are_derived_and_distinct() -> None:
    assert job_id_for("r", "a", 1) == job_id_for("r", "a", 1)
    ids = {job_id_for("r", "a", 1), job_id_for("r", "a", 2), job_id_for("r", "b", 1), job_id_for("q", "a", 1),
           job_id_for("r", "a", 1, 0), job_id_for("r", "a", 1, 1)}
    assert len(ids) == 6


def test_events_before_start_are_ignored() -> None:
    run = make_run(build([worker("a")]))
    for event in (result(T0, "a"), TimerFired(T0, "run_timeout"), Approval(T0, "a", "bob", ("ops",), True)):
        assert decide(run, event).applied is False
    assert decide(run, Cancel(T0, "bob")).run.status is RunStatus.CANCELLED


# -- the DAG ----------------------------------------------------------------------------------------


def test_diamond_runs_branches_in_parallel_and_joins() -> None:
    driver = started([worker("a"), worker("b", depends_on=["a"]), worker("c", depends_on=["a"]),
                      worker("d", depends_on=["b", "c"], input={"b": "${steps.b.output}", "c": "${steps.c.output}"})],
                     document={"output": {"result": "${steps.d.output}"}})
    assert dispatched_steps(driver.outcomes[-1].commands) == ["a"]
    both = driver.apply(result(T0 + 1, "a", output="A"))
    assert sorted(dispatched_steps(both.commands)) == ["b", "c"]
    assert status(driver, "b") is StepStatus.RUNNING and status(driver, "c") is StepStatus.RUNNING
    assert dispatched_steps(driver.apply(result(T0 + 2, "c", output="C")).commands) == []
    assert status(driver, "d") is StepStatus.PENDING
    joined = driver.apply(result(T0 + 3, "b", output="B"))
    assert of_type(joined.commands, DispatchJob)[0].input == {"b": "B", "c": "C"}
    end = driver.apply(result(T0 + 4, "d", output={"ok": True}))
    assert of_type(end.commands, FinishRun) == [FinishRun(end.commands[-1].id, "succeeded")]
    assert driver.run.status is RunStatus.SUCCEEDED and driver.run.finished_at == T0 + 4
    assert driver.run.output == {"result": {"ok": True}}
    assert all(s.status is StepStatus.SUCCEEDED for s in driver.run.steps.values())
    assert driver.run.timers == {}


def test_step_templates_see_input_steps_and_run() -> None:
    driver = started([worker("a"), worker("b", depends_on=["a"], input={
        "who": "${run.started_by}", "run": "${run.id}", "wf": "${run.workflow}", "tenant": "${run.tenant}",
        "status": "${steps.a.status}", "out": "${steps.a.output.v}", "ptr": "${steps.a.output_ptr}",
        "dry": "${run.dry_run}", "n": "${input.n * 2}",
    })], {"n": 21}, started_by="alice")
    outcome = driver.apply(result(T0 + 1, "a", output={"v": [1]}, output_ptr="ptr://a"))
    assert of_type(outcome.commands, DispatchJob)[0].input == {
        "who": "alice", "run": RUN_ID, "wf": "wf", "tenant": "acme", "status": "succeeded", "out": [1],
        "ptr": "ptr://a", "dry": False, "n": 42}


def test_template_error_fails_the_step() -> None:
    driver = started([worker("a", input={"x": "${input.missing}"}, retry={"max_attempts": 3})])
    state = driver.run.steps["a"]
    assert state.status is StepStatus.FAILED and state.error_code == "template_error"
    assert "input.missing" in state.error_message
    assert driver.run.status is RunStatus.FAILED and driver.all_dispatched == {}


def test_false_condition_skips_and_dependants_still_run() -> None:
    driver = started([worker("a", condition="input.go"), worker("b", depends_on=["a"]),
                      worker("c", condition="${steps.a.status == 'skipped'}", depends_on=["a"])], {"go": False})
    state = driver.run.steps["a"]
    assert state.status is StepStatus.SKIPPED and "input.go" in state.reason
    assert sorted(dispatched_steps(driver.outcomes[-1].commands)) == ["b", "c"]
    driver.apply(result(T0 + 1, "b"))
    driver.apply(result(T0 + 2, "c"))
    assert driver.run.status is RunStatus.SUCCEEDED
    assert status(driver, "a") is StepStatus.SKIPPED


def test_true_condition_runs_the_step() -> None:
    driver = started([worker("a", condition="input.go")], {"go": True})
    assert dispatched_steps(driver.outcomes[-1].commands) == ["a"]


def test_condition_that_is_not_a_bool_fails_the_step() -> None:
    driver = started([worker("a", condition="input.n")], {"n": 1})
    state = driver.run.steps["a"]
    assert state.status is StepStatus.FAILED and state.error_code == "expression_error"
    assert "step a" in state.error_message and "input.n" in state.error_message
    assert driver.run.status is RunStatus.FAILED


def test_condition_step_output_drives_later_conditions() -> None:
    driver = started([{"id": "check", "type": "condition", "expression": "input.n > 2"},
                      worker("big", depends_on=["check"], condition="steps.check.output"),
                      worker("small", depends_on=["check"], condition="!steps.check.output")], {"n": 5})
    assert driver.run.steps["check"].status is StepStatus.SUCCEEDED
    assert driver.run.steps["check"].output is True
    assert dispatched_steps(driver.outcomes[-1].commands) == ["big"]
    assert status(driver, "small") is StepStatus.SKIPPED


def test_condition_step_with_a_false_value_still_succeeds() -> None:
    driver = started([{"id": "check", "type": "condition", "expression": "input.n > 2"}], {"n": 1})
    assert driver.run.steps["check"].output is False
    assert driver.run.status is RunStatus.SUCCEEDED


def test_notify_emits_an_alert_and_succeeds() -> None:
    driver = started([worker("a"), {"id": "tell", "type": "notify", "depends_on": ["a"], "level": "CRITICAL",
                                    "message": "built ${steps.a.output.image}", "code": "build.done"},
                      {"id": "quiet", "type": "notify", "message": "plain"}])
    first = of_type(driver.outcomes[-1].commands, EmitAlert)
    assert [(a.level, a.code, a.message, a.step_id) for a in first] == [("INFO", "workflow.wf.quiet", "plain",
                                                                         "quiet")]
    outcome = driver.apply(result(T0 + 1, "a", output={"image": "img:7"}))
    alert = of_type(outcome.commands, EmitAlert)
    assert [(a.level, a.code, a.message, a.step_id) for a in alert] == [("CRITICAL", "build.done", "built img:7",
                                                                         "tell")]
    assert driver.run.steps["tell"].status is StepStatus.SUCCEEDED
    assert driver.run.steps["tell"].output == {"level": "CRITICAL", "code": "build.done", "message": "built img:7"}
    assert driver.run.status is RunStatus.SUCCEEDED


# -- delay ----------------------------------------------------------------------------------------


def test_delay_starts_a_timer_and_succeeds_when_it_fires() -> None:
    driver = started([{"id": "wait", "type": "delay", "delay_sec": 30}, worker("after", depends_on=["wait"])])
    assert of_type(driver.outcomes[-1].commands, StartTimer) == [StartTimer(driver.outcomes[-1].commands[0].id,
                                                                            "delay:wait", T0 + 30)]
    assert status(driver, "wait") is StepStatus.RUNNING and driver.run.status is RunStatus.RUNNING
    assert not driver.apply(TimerFired(T0 + 30, "delay:other")).applied
    outcome = driver.apply(TimerFired(T0 + 30, "delay:wait"))
    assert status(driver, "wait") is StepStatus.SUCCEEDED
    assert dispatched_steps(outcome.commands) == ["after"]
    assert not driver.apply(TimerFired(T0 + 31, "delay:wait")).applied, "a timer fires once"


def test_delay_until_in_the_past_succeeds_at_once() -> None:
    driver = started([{"id": "wait", "type": "delay", "delay_until": "1970-01-01T00:00:10Z"}, worker("after",
                                                                                                   depends_on=["wait"])])
    assert status(driver, "wait") is StepStatus.SUCCEEDED
    assert of_type(driver.outcomes[-1].commands, StartTimer) == []
    assert dispatched_steps(driver.outcomes[-1].commands) == ["after"]


def test_delay_until_from_a_template() -> None:
    driver = started([{"id": "wait", "type": "delay", "delay_until": "${input.when}"}],
                     {"when": "1970-01-01T01:00:00+01:00"})  # = epoch 0: in the past
    assert status(driver, "wait") is StepStatus.SUCCEEDED
    future = started([{"id": "wait", "type": "delay", "delay_until": "${input.when}"}],
                     {"when": "2100-01-01T00:00:00Z"})
    timers = of_type(future.outcomes[-1].commands, StartTimer)
    assert [(t.timer_id, t.due) for t in timers] == [("delay:wait", 4102444800.0)]


def test_delay_until_that_renders_to_a_non_time_fails() -> None:
    driver = started([{"id": "wait", "type": "delay", "delay_until": "${input.when}"}], {"when": "soon"})
    assert driver.run.steps["wait"].error_code == "invalid_delay"
    assert driver.run.status is RunStatus.FAILED


# -- approvals --------------------------------------------------------------------------------------


def test_approval_quorum_of_distinct_approvers() -> None:
    driver = started([approval("gate", quorum=2, approvers=["ops", "sec"]), worker("go", depends_on=["gate"])],
                     started_by="alice")
    assert status(driver, "gate") is StepStatus.WAITING and driver.run.status is RunStatus.WAITING
    assert driver.apply(Approval(T0 + 1, "gate", "bob", ("ops",), True, "lgtm")).applied
    assert status(driver, "gate") is StepStatus.WAITING
    assert not driver.apply(Approval(T0 + 2, "gate", "bob", ("ops",), True)).applied, "same approver twice"
    outcome = driver.apply(Approval(T0 + 3, "gate", "carol", ("sec", "dev"), True))
    assert status(driver, "gate") is StepStatus.SUCCEEDED
    assert driver.run.steps["gate"].output == {"approved_by": ["bob", "carol"]}
    assert [a["by"] for a in driver.run.steps["gate"].approvals] == ["bob", "carol"]
    assert driver.run.steps["gate"].approvals[0]["reason"] == "lgtm"
    assert dispatched_steps(outcome.commands) == ["go"]
    assert not driver.apply(Approval(T0 + 4, "gate", "dave", ("ops",), True)).applied, "already decided"


def test_approval_needs_a_matching_role() -> None:
    driver = started([approval("gate")], started_by="alice")
    assert not driver.apply(Approval(T0 + 1, "gate", "bob", ("dev",), True)).applied
    assert "roles ops" in str(approval_problem(driver.run, "gate", "bob", ("dev",)))
    assert status(driver, "gate") is StepStatus.WAITING


def test_separation_of_duties() -> None:
    driver = started([approval("gate")], started_by="alice")
    assert "separation of duties" in str(approval_problem(driver.run, "gate", "alice", ("ops",)))
    assert not driver.apply(Approval(T0 + 1, "gate", "alice", ("ops",), True)).applied
    assert not driver.apply(Approval(T0 + 1, "gate", "alice", ("ops",), False)).applied, "nor reject it"
    assert driver.apply(Approval(T0 + 2, "gate", "bob", ("ops",), True)).applied
    assert driver.run.status is RunStatus.SUCCEEDED


def test_self_approval_when_allowed() -> None:
    driver = started([approval("gate", allow_self_approval=True)], started_by="alice")
    assert approval_problem(driver.run, "gate", "alice", ("ops",)) is None
    assert driver.apply(Approval(T0 + 1, "gate", "alice", ("ops",), True)).applied
    assert driver.run.status is RunStatus.SUCCEEDED


def test_approval_problem_for_other_steps() -> None:
    driver = started([worker("a"), approval("gate", depends_on=["a"])], started_by="alice")
    assert "no approval step 'a'" in str(approval_problem(driver.run, "a", "bob", ("ops",)))
    assert "no approval step 'ghost'" in str(approval_problem(driver.run, "ghost", "bob", ("ops",)))
    assert "pending, not waiting" in str(approval_problem(driver.run, "gate", "bob", ("ops",)))
    assert not driver.apply(Approval(T0 + 1, "gate", "bob", ("ops",), True)).applied


def test_reject_fails_the_step() -> None:
    driver = started([approval("gate", quorum=2, expires_after_sec=60), worker("go", depends_on=["gate"]),
                      worker("side")], started_by="alice")
    driver.apply(Approval(T0 + 1, "gate", "bob", ("ops",), True))
    outcome = driver.apply(Approval(T0 + 2, "gate", "carol", ("ops",), False, "too risky"))
    gate = driver.run.steps["gate"]
    assert gate.status is StepStatus.FAILED and gate.error_code == "approval_rejected"
    assert "carol" in gate.error_message and "too risky" in gate.error_message
    assert status(driver, "go") is StepStatus.BLOCKED
    assert driver.run.status is RunStatus.FAILED and driver.run.error_code == "approval_rejected"
    assert [c.job_id for c in of_type(outcome.commands, CancelJob)] == [job("side")]
    assert [c.timer_id for c in of_type(outcome.commands, StopTimer)] == ["approval_expiry:gate"]
    assert driver.run.timers == {}


def test_approval_expiry_rejects() -> None:
    driver = started([approval("gate", expires_after_sec=60), worker("go", depends_on=["gate"])])
    assert driver.run.timers == {"approval_expiry:gate": T0 + 60}
    driver.apply(TimerFired(T0 + 60, "approval_expiry:gate"))
    gate = driver.run.steps["gate"]
    assert gate.status is StepStatus.FAILED and gate.error_code == "approval_expired"
    assert status(driver, "go") is StepStatus.BLOCKED and driver.run.status is RunStatus.FAILED


def test_approval_expiry_skips() -> None:
    driver = started([approval("gate", expires_after_sec=60, on_expiry="skip"), worker("go", depends_on=["gate"])])
    outcome = driver.apply(TimerFired(T0 + 60, "approval_expiry:gate"))
    assert status(driver, "gate") is StepStatus.SKIPPED and driver.run.steps["gate"].reason == "approval expired"
    assert dispatched_steps(outcome.commands) == ["go"]
    assert not driver.apply(Approval(T0 + 61, "gate", "bob", ("ops",), True)).applied


def test_quorum_reached_stops_the_expiry_timer() -> None:
    driver = started([approval("gate", expires_after_sec=60), worker("go", depends_on=["gate"])], started_by="al")
    outcome = driver.apply(Approval(T0 + 1, "gate", "bob", ("ops",), True))
    assert [c.timer_id for c in of_type(outcome.commands, StopTimer)] == ["approval_expiry:gate"]
    assert not driver.apply(TimerFired(T0 + 60, "approval_expiry:gate")).applied


# -- retries ----------------------------------------------------------------------------------------


RETRY = {"max_attempts": 3, "initial_backoff_sec": 2, "multiplier": 3, "max_backoff_sec": 10}


def test_the_policy_max_retries_budget_caps_step_retries() -> None:
    driver = started([worker("a", retry={"max_attempts": 5, "initial_backoff_sec": 1})])
    driver.apply(result(T0 + 1, "a", "failed", error_code="boom", retry_cap=1))
    assert driver.run.steps["a"].retry_pending  # one retry is within the budget
    driver.apply(TimerFired(T0 + 2, "retry:a:2"))
    last = driver.apply(result(T0 + 3, "a", "failed", attempt=2, error_code="boom", retry_cap=1))
    assert status(driver, "a") is StepStatus.FAILED and driver.run.steps["a"].attempt == 2
    assert not of_type(last.commands, StartTimer)
    assert run_status(driver) is RunStatus.FAILED


def test_retry_with_exponential_capped_backoff_then_fail() -> None:
    driver = started([worker("a", retry=RETRY), worker("b", depends_on=["a"])])
    first = driver.apply(result(T0 + 1, "a", "failed", error_code="boom", error_message="kaput"))
    assert of_type(first.commands, StartTimer) == [StartTimer(first.commands[0].id, "retry:a:2", T0 + 3)]
    assert driver.run.steps["a"].status is StepStatus.RUNNING and driver.run.steps["a"].retry_at == T0 + 3
    assert driver.run.steps["a"].error_code == "boom" and driver.run.status is RunStatus.RUNNING
    second = driver.apply(TimerFired(T0 + 3, "retry:a:2"))
    assert [(d.step_id, d.attempt, d.job_id) for d in of_type(second.commands, DispatchJob)] == [("a", 2, job("a", 2))]
    driver.apply(result(T0 + 4, "a", "failed", attempt=2))
    assert driver.run.timers["retry:a:3"] == T0 + 4 + 6
    driver.apply(TimerFired(T0 + 10, "retry:a:3"))
    last = driver.apply(result(T0 + 11, "a", "failed", attempt=3, error_code="boom"))
    assert status(driver, "a") is StepStatus.FAILED and driver.run.steps["a"].attempt == 3
    assert status(driver, "b") is StepStatus.BLOCKED
    assert run_status(driver) is RunStatus.FAILED and driver.run.error_code == "boom"
    assert of_type(last.commands, CancelJob) == [], "the job that failed needs no cancel"


def test_backoff_is_capped() -> None:
    step = build([worker("a", retry=RETRY)]).steps["a"]
    assert [backoff_s(step, "r", attempt) for attempt in (1, 2, 3, 4)] == [2.0, 6.0, 10.0, 10.0]


def test_retry_then_success() -> None:
    driver = started([worker("a", retry=RETRY)])
    driver.apply(result(T0 + 1, "a", "timed_out"))
    assert driver.run.steps["a"].error_code == "timeout"
    driver.apply(TimerFired(T0 + 3, "retry:a:2"))
    driver.apply(result(T0 + 4, "a", attempt=2, output=1))
    state = driver.run.steps["a"]
    assert state.status is StepStatus.SUCCEEDED and state.output == 1 and state.error_code == ""
    assert driver.run.status is RunStatus.SUCCEEDED


def test_jitter_is_deterministic_and_bounded() -> None:
    step = build([worker("a", retry={**RETRY, "jitter": 0.5})]).steps["a"]
    for attempt in range(1, 6):
        base = min(10, 2 * 3 ** (attempt - 1))
        values = {backoff_s(step, run_id, attempt, item) for run_id in ("r1", "r2", "r3") for item in (None, 0)}
        assert all(base <= v <= base * 1.5 for v in values)
        assert len(values) > 1, "jitter differs between runs and items"
        assert backoff_s(step, "r1", attempt) == backoff_s(step, "r1", attempt)
    driver = started([worker("a", retry={**RETRY, "jitter": 0.5})])
    driver.apply(result(T0 + 1, "a", "failed"))
    assert driver.run.timers["retry:a:2"] == T0 + 1 + backoff_s(step, RUN_ID, 1)


@pytest.mark.parametrize("code,retried", [("flaky", True), ("fatal", False), ("", False)])
def test_retry_on_filters_error_codes(code: str, retried: bool) -> None:
    driver = started([worker("a", retry={**RETRY, "retry_on": ["flaky"]})])
    driver.apply(result(T0 + 1, "a", "failed", error_code=code))
    assert ("retry:a:2" in driver.run.timers) is retried
    assert (driver.run.status is RunStatus.FAILED) is not retried


@pytest.mark.parametrize("outcome,code", [("cancelled", "job_cancelled"), ("denied", "policy.deny")])
def test_cancelled_and_denied_jobs_are_not_retried(outcome: str, code: str) -> None:
    driver = started([worker("a", retry=RETRY)])
    driver.apply(result(T0 + 1, "a", outcome, error_code="policy.deny"))
    state = driver.run.steps["a"]
    assert state.error_code == code and driver.run.timers == {}
    expected = StepStatus.CANCELLED if outcome == "cancelled" else StepStatus.FAILED
    assert state.status is expected and driver.run.status is RunStatus.FAILED


def test_stale_results() -> None:
    driver = started([worker("a", retry=RETRY), worker("b")])
    assert not driver.apply(JobResult(T0 + 1, "a", 1, "not-the-job", "succeeded")).applied
    assert not driver.apply(JobResult(T0 + 1, "a", 2, job("a", 1), "succeeded")).applied, "wrong attempt"
    assert not driver.apply(result(T0 + 1, "a", attempt=2)).applied, "attempt not dispatched"
    assert not driver.apply(result(T0 + 1, "ghost")).applied
    assert not driver.apply(result(T0 + 1, "a", item=0)).applied, "not a for_each step"
    driver.apply(result(T0 + 1, "a", "failed"))
    assert not driver.apply(result(T0 + 2, "a", "succeeded")).applied, "after the retry was scheduled"
    assert not driver.apply(result(T0 + 2, "a", "failed")).applied, "duplicate failure"
    assert not driver.apply(TimerFired(T0 + 2, "retry:a:3")).applied
    driver.apply(TimerFired(T0 + 3, "retry:a:2"))
    assert not driver.apply(result(T0 + 4, "a", "succeeded")).applied, "the first attempt's late success"
    assert driver.apply(result(T0 + 4, "a", attempt=2)).applied
    assert not driver.apply(result(T0 + 5, "a", attempt=2)).applied, "duplicate success"
    assert driver.run.seq == 4
    assert driver.run.status is RunStatus.RUNNING and status(driver, "b") is StepStatus.RUNNING


# -- timeouts ---------------------------------------------------------------------------------------


def test_step_timeout_cancels_the_job_and_retries() -> None:
    driver = started([worker("a", timeout_sec=30, retry={"max_attempts": 2, "initial_backoff_sec": 5})])
    first = of_type(driver.outcomes[-1].commands, DispatchJob)[0]
    assert first.timeout_sec == 30 and driver.run.timers["step_timeout:a:1"] == T0 + 30
    outcome = driver.apply(TimerFired(T0 + 30, "step_timeout:a:1"))
    assert [c.job_id for c in of_type(outcome.commands, CancelJob)] == [job("a", 1)]
    assert driver.run.timers == {"retry:a:2": T0 + 35}
    assert driver.run.steps["a"].error_code == "step_timeout"
    assert not driver.apply(result(T0 + 31, "a", "cancelled")).applied, "the cancelled job's own result"
    driver.apply(TimerFired(T0 + 35, "retry:a:2"))
    assert driver.run.timers == {"step_timeout:a:2": T0 + 65}
    done = driver.apply(result(T0 + 40, "a", attempt=2))
    assert [c.timer_id for c in of_type(done.commands, StopTimer)] == ["step_timeout:a:2"]
    assert driver.run.status is RunStatus.SUCCEEDED


def test_step_timeout_without_retries_fails_the_run() -> None:
    driver = started([worker("a", timeout_sec=30), worker("b")])
    outcome = driver.apply(TimerFired(T0 + 30, "step_timeout:a:1"))
    assert sorted(c.job_id for c in of_type(outcome.commands, CancelJob)) == sorted([job("a"), job("b")])
    assert driver.run.steps["a"].status is StepStatus.TIMED_OUT
    assert driver.run.steps["b"].status is StepStatus.CANCELLED
    assert driver.run.status is RunStatus.FAILED and driver.run.error_code == "step_timeout"


def test_stale_step_timeout_is_ignored() -> None:
    driver = started([worker("a", timeout_sec=30, retry={"max_attempts": 2})])
    driver.apply(result(T0 + 1, "a", "failed"))
    assert "step_timeout:a:1" not in driver.run.timers, "a finished attempt's timeout is stopped"
    assert not driver.apply(TimerFired(T0 + 30, "step_timeout:a:1")).applied


def test_run_timeout_cancels_every_running_job() -> None:
    driver = started([worker("a"), worker("b", retry={"max_attempts": 2}), worker("c", depends_on=["a"]),
                      {"id": "wait", "type": "delay", "delay_sec": 1000}, approval("gate", expires_after_sec=500)],
                     document={"timeout_sec": 100})
    driver.apply(result(T0 + 1, "a"))
    driver.apply(result(T0 + 2, "b", "failed"))  # b waits to retry: no job to cancel
    outcome = driver.apply(TimerFired(T0 + 100, "run_timeout"))
    assert sorted(c.job_id for c in of_type(outcome.commands, CancelJob)) == [job("c")]
    assert sorted(c.timer_id for c in of_type(outcome.commands, StopTimer)) == \
        ["approval_expiry:gate", "delay:wait", "retry:b:2"]
    assert driver.run.status is RunStatus.TIMED_OUT and driver.run.error_code == "run_timeout"
    assert {k: s.status for k, s in driver.run.steps.items()} == {
        "a": StepStatus.SUCCEEDED, "b": StepStatus.CANCELLED, "c": StepStatus.CANCELLED,
        "wait": StepStatus.CANCELLED, "gate": StepStatus.CANCELLED}
    assert kinds(outcome.commands)[-1] == "FinishRun"
    assert [f.status for f in of_type(outcome.commands, FinishRun)] == ["timed_out"]
    assert driver.run.timers == {} and driver.run.finished_at == T0 + 100


def test_run_timeout_with_two_parallel_jobs() -> None:
    driver = started([worker("a"), worker("b")], document={"timeout_sec": 10})
    outcome = driver.apply(TimerFired(T0 + 10, "run_timeout"))
    assert sorted(c.job_id for c in of_type(outcome.commands, CancelJob)) == sorted([job("a"), job("b")])
    assert not driver.apply(result(T0 + 11, "a")).applied


# -- failures ---------------------------------------------------------------------------------------


def test_fail_run_cancels_running_siblings_and_blocks_dependants() -> None:
    driver = started([worker("a"), worker("b"), worker("c", depends_on=["a"]), worker("d", depends_on=["c"]),
                      worker("e", depends_on=["b"])])
    outcome = driver.apply(result(T0 + 1, "a", "failed", error_code="boom", error_message="it broke"))
    assert [c.job_id for c in of_type(outcome.commands, CancelJob)] == [job("b")]
    assert dispatched_steps(outcome.commands) == []
    statuses = {k: s.status for k, s in driver.run.steps.items()}
    assert statuses == {"a": StepStatus.FAILED, "b": StepStatus.CANCELLED, "c": StepStatus.BLOCKED,
                        "d": StepStatus.BLOCKED, "e": StepStatus.CANCELLED}
    assert "dependency a failed" == driver.run.steps["c"].reason
    assert "dependency c blocked" == driver.run.steps["d"].reason
    assert driver.run.status is RunStatus.FAILED and driver.run.error_code == "boom"
    assert "step a failed" in driver.run.error_message and "it broke" in driver.run.error_message
    assert not driver.apply(result(T0 + 2, "b")).applied


def test_no_job_is_dispatched_by_the_transition_that_fails_the_run() -> None:
    driver = started([worker("a"), {"id": "b", "type": "condition", "expression": "steps.a.output.ok",
                                    "depends_on": ["a"]}, worker("c", depends_on=["a"])])
    outcome = driver.apply(result(T0 + 1, "a", output={}))
    assert driver.run.status is RunStatus.FAILED and driver.run.steps["b"].error_code == "expression_error"
    assert kinds(outcome.commands) == ["FinishRun"]


def test_on_failure_continue_lets_dependants_run() -> None:
    driver = started([worker("a", on_failure="continue"), worker("b", depends_on=["a"],
                                                                 input={"prev": "${steps.a.status}"})],
                     document={"output": {"a": "${steps.a.status}"}})
    outcome = driver.apply(result(T0 + 1, "a", "failed"))
    assert status(driver, "a") is StepStatus.FAILED
    assert of_type(outcome.commands, DispatchJob)[0].input == {"prev": "failed"}
    driver.apply(result(T0 + 2, "b"))
    assert driver.run.status is RunStatus.SUCCEEDED and driver.run.output == {"a": "failed"}


def test_run_output_error_fails_the_run() -> None:
    driver = started([worker("a")], document={"output": "${steps.a.output.missing}"})
    driver.apply(result(T0 + 1, "a", output={}))
    assert driver.run.status is RunStatus.FAILED and driver.run.error_code == "output_error"


# -- cancel -----------------------------------------------------------------------------------------


def test_cancel_stops_jobs_and_timers() -> None:
    driver = started([worker("a", timeout_sec=60), worker("b"), {"id": "wait", "type": "delay", "delay_sec": 5},
                      worker("c", depends_on=["b"])], document={"timeout_sec": 600})
    timers = set(driver.run.timers)
    assert timers == {"run_timeout", "step_timeout:a:1", "delay:wait"}
    outcome = driver.apply(Cancel(T0 + 1, "bob", "wrong target"))
    assert sorted(c.job_id for c in of_type(outcome.commands, CancelJob)) == sorted([job("a"), job("b")])
    assert {c.timer_id for c in of_type(outcome.commands, StopTimer)} == timers
    assert driver.run.status is RunStatus.CANCELLED and driver.run.timers == {}
    assert driver.run.error_message == "cancelled by bob: wrong target"
    assert all(s.status is StepStatus.CANCELLED for s in driver.run.steps.values())
    assert driver.run.steps["c"].reason == "run cancelled before it started"
    assert not driver.apply(Cancel(T0 + 2, "bob")).applied
    assert not driver.apply(result(T0 + 2, "a")).applied
    assert not driver.apply(TimerFired(T0 + 5, "delay:wait")).applied


# -- for_each ---------------------------------------------------------------------------------------


def active_items(driver: Driver, step_id: str) -> int:
    items = driver.run.steps[step_id].items or []
    return sum(1 for i in items if i.status in (StepStatus.RUNNING, StepStatus.WAITING))


def test_for_each_respects_max_parallel_and_keeps_order() -> None:
    driver = started([worker("fan", for_each="input.hosts", max_parallel=2,
                             input={"host": "${item}", "i": "${index}", "label": "${index}:${item}"}),
                      worker("after", depends_on=["fan"], input="${steps.fan.output}")],
                     {"hosts": ["h0", "h1", "h2", "h3", "h4"]})
    first = of_type(driver.outcomes[-1].commands, DispatchJob)
    assert [(d.item, d.input) for d in first] == [(0, {"host": "h0", "i": 0, "label": "0:h0"}),
                                                  (1, {"host": "h1", "i": 1, "label": "1:h1"})]
    assert [d.job_id for d in first] == [job("fan", 1, 0), job("fan", 1, 1)]
    order = [1, 0, 3, 2, 4]
    for n, item in enumerate(order):
        driver.apply(result(T0 + 1 + n, "fan", item=item, output=f"out{item}"))
        assert active_items(driver, "fan") <= 2
    assert driver.run.steps["fan"].status is StepStatus.SUCCEEDED
    assert driver.run.steps["fan"].output == ["out0", "out1", "out2", "out3", "out4"]
    assert [d.input for d in of_type(driver.outcomes[-1].commands, DispatchJob)] == \
        [["out0", "out1", "out2", "out3", "out4"]]
    assert [k[2] for k in driver.dispatch_keys if k[0] == "fan"] == [0, 1, 2, 3, 4]


def test_for_each_without_max_parallel_dispatches_every_item() -> None:
    driver = started([worker("fan", for_each="input.xs")], {"xs": [10, 20, 30]})
    assert [d.item for d in of_type(driver.outcomes[-1].commands, DispatchJob)] == [0, 1, 2]
    items = driver.run.steps["fan"].items
    assert items is not None and [(i.index, i.value) for i in items] == [(0, 10), (1, 20), (2, 30)]


def test_for_each_over_an_empty_list_succeeds_with_no_jobs() -> None:
    driver = started([worker("fan", for_each="input.xs"), worker("after", depends_on=["fan"])], {"xs": []})
    assert driver.run.steps["fan"].status is StepStatus.SUCCEEDED and driver.run.steps["fan"].output == []
    assert dispatched_steps(driver.outcomes[-1].commands) == ["after"]


@pytest.mark.parametrize("xs", ["abc", 3, {"a": 1}])
def test_for_each_over_a_non_list_fails(xs: Any) -> None:
    driver = started([worker("fan", for_each="input.xs")], {"xs": xs})
    assert driver.run.steps["fan"].error_code == "expression_error"
    assert driver.run.status is RunStatus.FAILED


def test_for_each_item_retry_and_failure() -> None:
    driver = started([worker("fan", for_each="input.xs", max_parallel=2, retry={"max_attempts": 2})],
                     {"xs": [1, 2, 3]})
    driver.apply(result(T0 + 1, "fan", "failed", item=0))
    assert "retry:fan:2:0" in driver.run.timers
    assert active_items(driver, "fan") == 2, "an item waiting to retry keeps its place"
    outcome = driver.apply(TimerFired(T0 + 2, "retry:fan:2:0"))
    assert [(d.item, d.attempt) for d in of_type(outcome.commands, DispatchJob)] == [(0, 2)]
    outcome = driver.apply(result(T0 + 3, "fan", "failed", attempt=2, item=0, error_code="bad"))
    assert [c.job_id for c in of_type(outcome.commands, CancelJob)] == [job("fan", 1, 1)]
    state = driver.run.steps["fan"]
    assert state.status is StepStatus.FAILED and state.error_message.startswith("item 0:")
    assert state.items is not None and [i.status for i in state.items] == \
        [StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.PENDING]
    assert driver.run.status is RunStatus.FAILED


def test_for_each_item_step_timeout() -> None:
    driver = started([worker("fan", for_each="input.xs", timeout_sec=5)], {"xs": ["a", "b"]})
    assert set(driver.run.timers) == {"step_timeout:fan:1:0", "step_timeout:fan:1:1"}
    outcome = driver.apply(TimerFired(T0 + 5, "step_timeout:fan:1:1"))
    assert sorted(c.job_id for c in of_type(outcome.commands, CancelJob)) == \
        sorted([job("fan", 1, 0), job("fan", 1, 1)])
    assert driver.run.steps["fan"].status is StepStatus.TIMED_OUT and driver.run.timers == {}


def test_duplicate_result_for_a_finished_item_is_ignored() -> None:
    driver = started([worker("fan", for_each="input.xs", max_parallel=1)], {"xs": [1, 2]})
    driver.apply(result(T0 + 1, "fan", item=0, output="x"))
    assert not driver.apply(result(T0 + 2, "fan", item=0, output="x")).applied


def test_conflicting_late_result_for_a_finished_item_is_ignored() -> None:
    driver = started([worker("fan", for_each="input.xs", max_parallel=1)], {"xs": [1, 2]})
    driver.apply(result(T0 + 1, "fan", item=0, output="x"))
    driver.apply(result(T0 + 2, "fan", "failed", item=0))
    assert driver.run.steps["fan"].status is StepStatus.RUNNING
    assert driver.run.status is RunStatus.RUNNING


def test_late_progress_for_a_finished_item_is_ignored() -> None:
    driver = started([worker("fan", for_each="input.xs")], {"xs": [1, 2]})
    driver.apply(result(T0 + 1, "fan", item=0, output="x"))
    late = driver.apply(JobProgress(T0 + 2, "fan", 1, job("fan", 1, 0), "running", item=0))
    driver.apply(result(T0 + 3, "fan", item=1, output="y"))
    assert driver.run.status is RunStatus.SUCCEEDED, "every item's job succeeded"
    assert not late.applied


# -- job progress -----------------------------------------------------------------------------------


def test_parked_job_makes_step_and_run_wait_then_run() -> None:
    driver = started([worker("a")])
    outcome = driver.apply(JobProgress(T0 + 1, "a", 1, job("a"), "waiting_approval", reason="needs review",
                                       decision="REQUIRE_APPROVAL", rule_id="r-7"))
    state = driver.run.steps["a"]
    assert state.status is StepStatus.WAITING and driver.run.status is RunStatus.WAITING
    assert (state.reason, state.decision, state.rule_id) == ("needs review", "REQUIRE_APPROVAL", "r-7")
    assert outcome.commands == []
    assert not driver.apply(JobProgress(T0 + 1, "a", 1, job("a"), "waiting_approval")).applied
    assert not driver.apply(JobProgress(T0 + 1, "a", 1, "other", "running")).applied
    assert not driver.apply(JobProgress(T0 + 1, "a", 2, job("a"), "running")).applied
    driver.apply(JobProgress(T0 + 2, "a", 1, job("a"), "running"))
    assert state is not driver.run.steps["a"]
    assert status(driver, "a") is StepStatus.RUNNING and run_status(driver) is RunStatus.RUNNING
    driver.apply(result(T0 + 3, "a"))
    assert run_status(driver) is RunStatus.SUCCEEDED


def test_parked_items_make_the_run_wait() -> None:
    driver = started([worker("fan", for_each="input.xs")], {"xs": [1, 2]})
    driver.apply(JobProgress(T0 + 1, "fan", 1, job("fan", 1, 0), "waiting_approval", item=0))
    driver.apply(JobProgress(T0 + 1, "fan", 1, job("fan", 1, 1), "waiting_approval", item=1))
    items = driver.run.steps["fan"].items
    assert items is not None and all(i.status is StepStatus.WAITING for i in items)
    assert driver.run.status is RunStatus.WAITING


def test_a_parked_job_can_still_finish() -> None:
    driver = started([worker("a")])
    driver.apply(JobProgress(T0 + 1, "a", 1, job("a"), "waiting_approval"))
    driver.apply(result(T0 + 2, "a"))
    assert driver.run.status is RunStatus.SUCCEEDED


def test_attached_job_replaces_the_job_id() -> None:
    driver = started([worker("a")])
    assert not driver.apply(JobProgress(T0 + 1, "a", 1, "existing", "attached", replaces="wrong")).applied
    assert not driver.apply(JobProgress(T0 + 1, "a", 1, job("a"), "attached", replaces=job("a"))).applied
    outcome = driver.apply(JobProgress(T0 + 1, "a", 1, "existing", "attached", replaces=job("a")))
    assert outcome.applied and driver.run.steps["a"].job_id == "existing"
    assert any(t["type"] == "job_attached" for t in outcome.timeline)
    assert not driver.apply(result(T0 + 2, "a")).applied, "the replaced job's result"
    assert driver.apply(JobResult(T0 + 2, "a", 1, "existing", "succeeded", output=3)).applied
    assert driver.run.steps["a"].output == 3 and driver.run.status is RunStatus.SUCCEEDED


# -- schemas ----------------------------------------------------------------------------------------


INPUT_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
OUTPUT_SCHEMA = {"type": "object", "properties": {"url": {"type": "string"},
                                                  "ports": {"type": "array", "items": {"type": "integer"}}}}


def test_input_schema_violation_names_the_pointer() -> None:
    driver = started([worker("a", input={"n": "${input.n}"}, input_schema=INPUT_SCHEMA,
                             retry={"max_attempts": 3})], {"n": "seven"})
    state = driver.run.steps["a"]
    assert state.status is StepStatus.FAILED and state.error_code == "input_schema_violation"
    assert "/n" in state.error_message and driver.all_dispatched == {}
    assert driver.run.status is RunStatus.FAILED and driver.run.timers == {}


def test_valid_input_is_dispatched() -> None:
    driver = started([worker("a", input={"n": "${input.n}"}, input_schema=INPUT_SCHEMA)], {"n": 7})
    assert of_type(driver.outcomes[-1].commands, DispatchJob)[0].input == {"n": 7}


def test_output_schema_violation_from_a_pinned_registry_schema() -> None:
    driver = started([worker("a", output_schema="acme.out@1", retry={"max_attempts": 3})],
                     schemas={"acme.out@1": OUTPUT_SCHEMA})
    driver.apply(result(T0 + 1, "a", output={"url": "u", "ports": [80, "http"]}))
    state = driver.run.steps["a"]
    assert state.status is StepStatus.FAILED and state.error_code == "output_schema_violation"
    assert "/ports/1" in state.error_message and state.output is None
    assert driver.run.timers == {}, "a schema violation is not retried"


def test_valid_output_passes_the_schema() -> None:
    driver = started([worker("a", output_schema="acme.out@1")], schemas={"acme.out@1": OUTPUT_SCHEMA})
    driver.apply(result(T0 + 1, "a", output={"url": "u", "ports": [80]}))
    assert driver.run.status is RunStatus.SUCCEEDED


def test_unpinned_schema_fails_the_step() -> None:
    driver = started([worker("a", input_schema="acme.in@1")])
    assert "not pinned" in driver.run.steps["a"].error_message


# -- dry run ----------------------------------------------------------------------------------------


def test_dry_run_template_errors_do_not_fail_and_jobs_are_marked() -> None:
    driver = started([worker("a"), worker("b", depends_on=["a"], input={"url": "${steps.a.output.url}"})],
                     dry_run=True)
    assert of_type(driver.outcomes[-1].commands, DispatchJob)[0].dry_run is True
    outcome = driver.apply(result(T0 + 1, "a", output=None, simulated=True))
    dispatch = of_type(outcome.commands, DispatchJob)[0]
    assert dispatch.dry_run is True and dispatch.input == {"url": "${steps.a.output.url}"}
    assert status(driver, "b") is StepStatus.RUNNING
    assert any(t["type"] == "template_unresolved" for t in outcome.timeline)


def test_dry_run_simulated_output_skips_the_output_schema() -> None:
    driver = started([worker("a", output_schema=OUTPUT_SCHEMA)], dry_run=True)
    driver.apply(result(T0 + 1, "a", output={"would": "dispatch"}, simulated=True))
    assert driver.run.status is RunStatus.SUCCEEDED


def test_real_run_checks_the_output_schema_even_when_marked_simulated_is_false() -> None:
    driver = started([worker("a", output_schema=OUTPUT_SCHEMA)])
    driver.apply(result(T0 + 1, "a", output={"url": 1}))
    assert driver.run.status is RunStatus.FAILED


def test_dry_run_output_template_errors_do_not_fail_the_run() -> None:
    driver = started([worker("a")], document={"output": {"url": "${steps.a.output.url}"}}, dry_run=True)
    driver.apply(result(T0 + 1, "a", output={"topic": "job.a", "input": None}, simulated=True))
    assert driver.run.status is RunStatus.SUCCEEDED, driver.run.error_message


def test_dry_run_notify_template_errors_do_not_fail_the_run() -> None:
    driver = started([worker("a"), {"id": "tell", "type": "notify", "depends_on": ["a"],
                                    "message": "deployed ${steps.a.output.url}"}], dry_run=True)
    driver.apply(result(T0 + 1, "a", output={"topic": "job.a", "input": None}, simulated=True))
    assert driver.run.status is RunStatus.SUCCEEDED, driver.run.error_message


# -- rerun ------------------------------------------------------------------------------------------


def test_rerun_reuses_upstream_outputs() -> None:
    workflow = build([worker("a"), worker("b", depends_on=["a"], input={"from_a": "${steps.a.output}"}),
                      worker("c", depends_on=["b"])])
    driver = Driver(make_run(workflow, rerun_of="run-0", rerun_from="b"))
    outcome = driver.apply(Rerun(T0, reused={"a": {"output": {"v": 1}, "output_ptr": "ptr://a", "from_run": "run-0"},
                                             "ghost": {"output": 1}}))
    state = driver.run.steps["a"]
    assert state.status is StepStatus.SUCCEEDED and state.reused_from == "run-0"
    assert state.output == {"v": 1} and state.output_ptr == "ptr://a"
    dispatches = of_type(outcome.commands, DispatchJob)
    assert [(d.step_id, d.input) for d in dispatches] == [("b", {"from_a": {"v": 1}})]
    assert "ghost" not in driver.run.steps
    assert not driver.apply(Rerun(T0 + 1)).applied
    driver.apply(result(T0 + 1, "b"))
    driver.apply(result(T0 + 2, "c"))
    assert driver.run.status is RunStatus.SUCCEEDED and ("a", 1, None) not in driver.dispatch_keys


# -- purity, serialization, replay ------------------------------------------------------------------


def busy_driver() -> Driver:
    """A run with items, approvals, retries and timers in flight."""
    driver = started([worker("fan", for_each="input.xs", max_parallel=2, retry={"max_attempts": 2},
                             timeout_sec=50),
                      approval("gate", quorum=2, expires_after_sec=100), worker("w", on_failure="continue"),
                      {"id": "wait", "type": "delay", "delay_sec": 10}],
                     {"xs": [1, 2, 3]}, document={"timeout_sec": 1000}, started_by="alice", trace_id="tr")
    driver.apply(result(T0 + 1, "fan", "failed", item=0, error_code="flaky"))
    driver.apply(result(T0 + 2, "fan", item=1, output={"k": [1, None]}))
    driver.apply(Approval(T0 + 3, "gate", "bob", ("ops",), True, "ok"))
    driver.apply(JobProgress(T0 + 4, "w", 1, job("w"), "waiting_approval", decision="REQUIRE_APPROVAL"))
    return driver


def test_decide_never_mutates_its_input() -> None:
    driver = busy_driver()
    run = driver.run
    snapshot = run_to_dict(run)
    items = run.steps["fan"].items
    approvals = list(run.steps["gate"].approvals)
    events: list[Event] = [
        result(T0 + 5, "fan", item=2), TimerFired(T0 + 5, "retry:fan:2:0"), Approval(T0 + 5, "gate", "carol",
                                                                                      ("ops",), False),
        Approval(T0 + 5, "gate", "carol", ("ops",), True), TimerFired(T0 + 10, "delay:wait"),
        TimerFired(T0 + 100, "approval_expiry:gate"), TimerFired(T0 + 1000, "run_timeout"), Cancel(T0 + 5, "x"),
        JobProgress(T0 + 5, "w", 1, job("w"), "running"), result(T0 + 5, "w", "failed"),
        TimerFired(T0 + 51, "step_timeout:fan:1:2"),
    ]
    for event in events:
        outcome = decide(run, event)
        assert outcome.applied
        assert outcome.run is not run
        assert run_to_dict(run) == snapshot, f"{event} mutated the input run"
        assert run.steps["fan"].items is items and run.steps["gate"].approvals == approvals


def test_decide_is_deterministic() -> None:
    driver = busy_driver()
    for event in (Cancel(T0 + 5, "x"), result(T0 + 5, "fan", item=2), TimerFired(T0 + 1000, "run_timeout")):
        one, two = decide(driver.run, event), decide(driver.run, event)
        assert run_to_dict(one.run) == run_to_dict(two.run)
        assert one.commands == two.commands and one.timeline == two.timeline


def test_replaying_the_event_log_rebuilds_the_state() -> None:
    driver = busy_driver()
    driver.apply(Cancel(T0 + 6, "bob"))
    assert driver.initial is not None
    rebuilt, commands, applied = replay(driver.initial, driver.log)
    assert run_to_dict(rebuilt) == run_to_dict(driver.run)
    assert commands_as_dicts(commands) == commands_as_dicts(driver.commands)
    assert applied == [o.applied for o in driver.outcomes]


def test_run_round_trips_through_a_dict_and_json() -> None:
    driver = busy_driver()
    run = driver.run
    data = run_to_dict(run)
    assert data["workflow_id"] == "wf" and data["status"] == "running" and data["steps"]["fan"]["items"]
    restored = run_from_dict(json.loads(json.dumps(data)), run.workflow)
    assert restored == run
    assert run_to_dict(restored) == data
    assert isinstance(restored.steps["fan"].items[0], ItemRun)  # type: ignore[index]
    assert restored.steps["fan"].items[1].output == {"k": [1, None]}  # type: ignore[index]
    # and the restored run behaves the same
    event = result(T0 + 5, "fan", item=2)
    assert run_to_dict(decide(restored, event).run) == run_to_dict(decide(run, event).run)
    assert decide(restored, event).commands == decide(run, event).commands


def test_finished_run_round_trips() -> None:
    driver = started([worker("a")], {"x": 1})
    driver.apply(result(T0 + 1, "a", output=[1, 2]))
    data = run_to_dict(driver.run)
    assert data["steps"]["a"]["items"] is None
    assert run_from_dict(json.loads(json.dumps(data)), driver.run.workflow) == driver.run


EVENTS: list[Event] = [
    Start(1.0),
    Rerun(2.0, reused={"a": {"output": {"x": [1]}, "output_ptr": "p", "from_run": "r0"}}),
    JobResult(3.0, "a", 2, "j", "failed", item=4, output={"o": 1}, output_ptr="p", error_code="e",
              error_message="m", simulated=True),
    JobProgress(4.0, "a", 1, "j2", "attached", item=None, reason="r", decision="d", rule_id="x", replaces="j"),
    Approval(5.0, "gate", "bob", ("ops", "sec"), False, "no"),
    TimerFired(6.0, "retry:a:2:0"),
    Cancel(7.0, "bob", "because"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_a_dict_and_json(event: Event) -> None:
    data = event_to_dict(event)
    assert data["kind"] == event_kind(event)
    assert event_from_dict(json.loads(json.dumps(data))) == event


def test_command_round_trips_through_a_dict_and_json() -> None:
    driver = busy_driver()
    driver.apply(TimerFired(T0 + 1000, "run_timeout"))
    commands = driver.commands
    assert {type(c) for c in commands} >= {DispatchJob, CancelJob, StartTimer, StopTimer, FinishRun}
    for command in commands + [EmitAlert("x", "INFO", "c", "m", "s")]:
        assert command_from_dict(json.loads(json.dumps(command_to_dict(command)))) == command


def test_command_ids_are_unique_within_a_run() -> None:
    driver = busy_driver()
    driver.apply(TimerFired(T0 + 1000, "run_timeout"))
    ids = [c.id for c in driver.commands]
    assert len(ids) == len(set(ids))


def test_zero_backoff_retry_at_time_zero() -> None:
    run = make_run(build([worker("a", retry={"max_attempts": 2, "initial_backoff_sec": 0})]))
    run = decide(run, Start(0.0)).run
    run = decide(run, JobResult(0.0, "a", 1, job("a"), "failed")).run
    assert run.timers == {"retry:a:2": 0.0}
    outcome = decide(run, TimerFired(0.0, "retry:a:2"))
    assert dispatched_steps(outcome.commands) == ["a"]


def test_a_fan_out_over_too_many_items_fails_the_step_naming_the_limit() -> None:
    driver = started([worker("each", for_each="input.items", input={"x": "${item}"})], {"items": list(range(1001))})
    state = driver.run.steps["each"]
    assert state.status is StepStatus.FAILED and state.error_code == "expression_error"
    assert "at most 1000 items" in state.error_message and "of 1001" in state.error_message
    assert run_status(driver) is RunStatus.FAILED

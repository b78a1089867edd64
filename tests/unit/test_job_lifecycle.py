"""The job lifecycle, budgets and retry backoff: pure rules, no services."""

from __future__ import annotations

import random

import pytest

from coretex.agent.v1 import safety_pb2
from coretex.errors import ConfigError, RoutingError
from coretex.model.job import TERMINAL_STATES, JobState, can_transition, sources_of
from coretex.policy.constraints import Constraints, Network, Sandbox
from coretex.scheduler.budgets import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, JobBudget, budget_for
from coretex.scheduler.retries import BACKOFF_CAP_S, backoff_s
from coretex.scheduler.routing import PoolRouter

S = JobState


@pytest.mark.parametrize(("current", "target"), [
    (S.PENDING, S.SCHEDULED), (S.SCHEDULED, S.DISPATCHED), (S.DISPATCHED, S.RUNNING), (S.RUNNING, S.SUCCEEDED),
    (S.SCHEDULED, S.APPROVAL_REQUIRED), (S.APPROVAL_REQUIRED, S.SCHEDULED), (S.RUNNING, S.SCHEDULED),
    (S.DISPATCHED, S.SCHEDULED), (S.RUNNING, S.TIMEOUT), (S.PENDING, S.CANCELLED), (S.RUNNING, S.CANCELLED),
])
def test_forward_moves_and_retries_are_allowed(current: JobState, target: JobState) -> None:
    assert can_transition(current, target)
    assert current in sources_of(target)


@pytest.mark.parametrize(("current", "target"), [
    (S.RUNNING, S.DISPATCHED), (S.SCHEDULED, S.PENDING), (S.PENDING, S.RUNNING), (S.APPROVAL_REQUIRED, S.RUNNING),
    (S.PENDING, S.SUCCEEDED),
])
def test_backward_and_skipping_moves_are_refused(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_never_move_but_repeat_idempotently(terminal: JobState) -> None:
    assert can_transition(terminal, terminal)
    assert not any(can_transition(terminal, other) for other in JobState if other != terminal)


def test_budget_prefers_exact_topic_then_longest_glob_then_default() -> None:
    timeouts = {
        "default": {"timeout_seconds": 100, "max_retries": 5},
        "topics": {
            "job.a.*": {"timeout_seconds": 10},
            "job.a.b.*": {"max_retries": 1},
            "job.a.b.c": {"timeout_seconds": 3},
        },
    }
    assert (budget_for(timeouts, "job.a.b.c").timeout_s, budget_for(timeouts, "job.a.b.c").max_retries) == (3, 5)
    assert (budget_for(timeouts, "job.a.b.x").timeout_s, budget_for(timeouts, "job.a.b.x").max_retries) == (100, 1)
    assert budget_for(timeouts, "job.a.x").timeout_s == 10
    assert budget_for({}, "job.z") == budget_for({"topics": {}}, "job.z")
    assert (budget_for({}, "job.z").timeout_s, budget_for({}, "job.z").max_retries) == (
        DEFAULT_TIMEOUT_S, DEFAULT_MAX_RETRIES)


def test_policy_constraints_only_tighten_the_budget() -> None:
    timeouts = {"default": {"timeout_seconds": 60, "max_retries": 3}}
    tight = safety_pb2.PolicyConstraints(budgets=safety_pb2.BudgetConstraints(max_runtime_ms=2500, max_retries=1))
    loose = safety_pb2.PolicyConstraints(budgets=safety_pb2.BudgetConstraints(max_runtime_ms=10**9, max_retries=9))
    assert (budget_for(timeouts, "t", tight).timeout_s, budget_for(timeouts, "t", tight).max_retries) == (3, 1)
    assert (budget_for(timeouts, "t", loose).timeout_s, budget_for(timeouts, "t", loose).max_retries) == (60, 3)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(BACKOFF_CAP_S, 2.0 ** (attempt - 1))
        delays = [backoff_s(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, so synchronized retries spread out


def test_routing_by_capabilities_hints_and_never_by_ordinary_labels() -> None:
    router = PoolRouter.from_config({
        "pools": {"cpu": {"requires": ["git"]}, "gpu": {"requires": ["git", "gpu"]}, "bare": {}},
        "topics": {"job.train": ["cpu", "gpu"], "job.x.*": "bare"},
    })
    assert router.route("job.train", ["git"]) == "cpu"
    assert router.route("job.train", ["gpu"]) == "gpu"  # the only eligible pool
    assert router.route("job.train", ["git"], preferred="gpu") == "gpu"  # a capable hint wins
    assert router.route("job.train", ["gpu"], preferred="cpu") == "gpu"  # an incapable hint is ignored
    assert router.route("job.x.y", [], preferred="nope") == "bare"
    with pytest.raises(RoutingError, match="provides \\['tpu'\\]"):
        router.route("job.train", ["tpu"])
    with pytest.raises(RoutingError, match="no pool is mapped"):
        router.route("job.none")


def test_runner_profiles_keep_jobs_off_pools_more_permissive_than_their_policy() -> None:
    router = PoolRouter.from_config({
        "pools": {
            "open": {},
            "sandboxed": {"profile": {"isolated": True, "network": "none", "fs": "ro", "tools": ["git"]}},
        },
        "topics": {"job.build": ["open", "sandboxed"], "job.open": "open"},
    })
    closed = Constraints(sandbox=Sandbox(isolated=True, network=Network.NONE))
    git_only = Constraints(tools=("git", "make"))

    assert router.route("job.build") == "open"  # no constraints: the first pool listed
    assert router.route("job.build", constraints=closed) == "sandboxed"
    assert router.route("job.build", constraints=git_only) == "sandboxed"  # "open" declares no tool list
    assert router.route("job.build", preferred="open", constraints=closed) == "sandboxed"  # hints never loosen
    with pytest.raises(RoutingError, match="runs as strictly as the policy demands"):
        router.route("job.open", constraints=closed)


def test_a_bad_pool_profile_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="pools/x/profile/network"):
        PoolRouter.from_config({"pools": {"x": {"profile": {"network": "sometimes"}}}, "topics": {}})


def test_a_jobs_own_budget_replaces_its_topics_and_policy_still_tightens_it() -> None:
    timeouts = {"default": {"timeout_seconds": 60, "max_retries": 3}}
    mine = JobBudget(timeout_s=5, max_retries=0)
    assert budget_for(timeouts, "t", requested=mine) == JobBudget(5, 0)
    assert budget_for(timeouts, "t", requested=JobBudget(0, -1)) == JobBudget(60, 3)  # nothing requested
    generous = JobBudget(timeout_s=600, max_retries=9)
    policy = safety_pb2.PolicyConstraints(budgets=safety_pb2.BudgetConstraints(max_runtime_ms=30_000, max_retries=2))
    assert budget_for(timeouts, "t", policy, generous) == JobBudget(30, 2)


def test_the_dispatcher_hands_the_policys_constraints_to_the_worker() -> None:
    from coretex.agent.v1 import job_pb2
    from coretex.model.job import JobMeta, JobRecord
    from coretex.scheduler.dispatcher import _constraints_to_env
    from coretex.scheduler.pipeline import Dispatch

    record = JobRecord("j", "job.x", "t", JobState.SCHEDULED, "tr", "redis://ctx:j", 0.0, 0.0, JobMeta())
    constraints = safety_pb2.PolicyConstraints(
        budgets=safety_pb2.BudgetConstraints(max_artifact_bytes=1024), redaction_level="strict",
        sandbox=safety_pb2.SandboxProfile(isolated=True),
    )
    env: dict[str, str] = {}
    _constraints_to_env(Dispatch(record, job_pb2.JobRequest(), constraints=constraints), env)

    assert env["coretex.max_artifact_bytes"] == "1024" and env["coretex.redaction_level"] == "strict"
    assert '"isolated":true' in env["coretex.sandbox"] and '"network":"none"' in env["coretex.sandbox"]

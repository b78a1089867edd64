"""Job news: a run's job that ends is announced in the same atomic move, read by the control
workers' listeners through a consumer group, and whatever a dead reader left is claimed again."""

from __future__ import annotations

import threading
import time

import pytest
from job_support import scheduled_job

from coretex.engine.listener import NewsListener, handle_news
from coretex.errors import IllegalTransitionError
from coretex.model.job import JobState
from coretex.services import Services
from coretex.store.job_news import News

pytestmark = pytest.mark.integration


def _announced(services: Services) -> list[str]:
    return [fields["job_id"] for _, fields in services.redis.xrange(services.job_news.key)]


def _to_running(services: Services, job_id: str) -> None:
    services.jobs.transition(job_id, JobState.DISPATCHED, attempts=1)
    services.jobs.transition(job_id, JobState.RUNNING, attempt=1)


def test_only_a_runs_job_that_ends_or_waits_for_approval_is_announced(services: Services) -> None:
    lone = scheduled_job(services)
    step, waiting = scheduled_job(services, run_id="r1"), scheduled_job(services, run_id="r1")
    for job_id in (lone, step):
        _to_running(services, job_id)
    assert _announced(services) == []  # moves that leave the job active say nothing

    services.jobs.transition(lone, JobState.SUCCEEDED, attempt=1)
    services.jobs.transition(step, JobState.SUCCEEDED, attempt=1)
    services.jobs.transition(step, JobState.SUCCEEDED, attempt=1)  # a repeated result: applied once
    services.jobs.transition(waiting, JobState.APPROVAL_REQUIRED)
    assert _announced(services) == [step, waiting]


def test_news_of_a_success_names_its_run_and_result_pointer(services: Services) -> None:
    step = scheduled_job(services, run_id="r9")
    _to_running(services, step)
    pointer = services.pointers.put_result(step, "t1", {"v": 1})
    services.jobs.transition(step, JobState.SUCCEEDED, attempt=1, result_ptr=pointer.uri)
    (news,) = services.job_news.read("reader", block_ms=100)
    assert (news.job_id, news.run_id, news.result_ptr) == (step, "r9", pointer.uri)


def test_a_refused_move_announces_nothing(services: Services) -> None:
    step = scheduled_job(services, run_id="r1")
    _to_running(services, step)
    with pytest.raises(IllegalTransitionError, match="no longer on attempt"):
        services.jobs.transition(step, JobState.SUCCEEDED, attempt=7)  # a late result of another attempt
    assert _announced(services) == []
    services.jobs.transition(step, JobState.CANCELLED, attempt=1)
    with pytest.raises(IllegalTransitionError, match="not allowed"):
        services.jobs.transition(step, JobState.FAILED)  # an ended job never moves again
    assert _announced(services) == [step]
    assert services.jobs.get(step).state is JobState.CANCELLED


def test_a_listener_hands_each_ended_job_over_once_and_acknowledges_it(services: Services) -> None:
    heard: list[News] = []
    arrived = threading.Event()

    def handle(news: News) -> None:
        heard.append(news)
        arrived.set()

    listener = NewsListener(lambda: services.job_news, handle)
    listener.start()
    try:
        step = scheduled_job(services, run_id="r1")
        _to_running(services, step)
        services.jobs.transition(step, JobState.SUCCEEDED, attempt=1)
        assert arrived.wait(5), "the listener never heard of the job"
    finally:
        listener.stop()
    assert [(n.job_id, n.run_id, n.result_ptr) for n in heard] == [(step, "r1", "")]
    assert services.job_news.pending() == 0


def test_a_handler_failure_is_acknowledged_and_the_listener_goes_on(services: Services) -> None:
    first, second = scheduled_job(services, run_id="r1"), scheduled_job(services, run_id="r1")
    heard: list[str] = []

    def handle(news: News) -> None:
        heard.append(news.job_id)
        if news.job_id == first:
            raise RuntimeError("engine hiccup")

    for job_id in (first, second):
        services.jobs.transition(job_id, JobState.CANCELLED)
    listener = NewsListener(lambda: services.job_news, handle)
    assert listener.poll(block_ms=100) == 2
    assert heard == [first, second]
    assert services.job_news.pending() == 0  # the reconcile, not a retry loop, catches the failed one


def test_news_a_dead_reader_took_is_claimed_again_and_handled_once(services: Services) -> None:
    step = scheduled_job(services, run_id="r1")
    services.jobs.transition(step, JobState.CANCELLED)
    taken = services.job_news.read("dead-reader", block_ms=100)  # ... and its process is killed here
    assert [news.job_id for news in taken] == [step]
    assert services.job_news.claim_stale("tick", min_idle_ms=60_000) == []  # not stale yet

    time.sleep(0.05)
    heard: list[News] = []
    handle_news(services.job_news, services.job_news.claim_stale("tick", min_idle_ms=10), heard.append)
    assert [news.job_id for news in heard] == [step]
    assert services.job_news.pending() == 0
    assert services.job_news.claim_stale("tick", min_idle_ms=0) == []


def test_news_survives_losing_its_group_and_stream(services: Services) -> None:
    services.job_news.ensure_group()
    services.redis.delete(services.job_news.key)  # Redis restarted empty, say
    step = scheduled_job(services, run_id="r1")
    services.jobs.transition(step, JobState.CANCELLED)  # announced before any group exists again
    assert [news.job_id for news in services.job_news.read("reader", block_ms=100)] == [step]

"""On a Redis broker the move to DISPATCHED pushes the attempt's message itself: the job is never
DISPATCHED without its message, nor its message queued without the move."""

from __future__ import annotations

import json
import time

import pytest
from job_support import scheduled_job

from coretex.agent.v1 import job_pb2
from coretex.bus import EXECUTE_TASK, packet_delivery, send_packet
from coretex.model.job import JobState
from coretex.protocol.envelope import new_packet
from coretex.services import Services
from coretex.store.jobs import ActiveLimit, ConcurrencyLimitError

pytestmark = pytest.mark.integration


def _undispatched(services: Services) -> list[str]:
    return services.jobs.undispatched(time.time() + 60)


def test_the_message_built_ahead_is_the_one_send_packet_queues(services: Services) -> None:
    queue = services.settings.pool_queue("echo")
    packet = new_packet(sender_id="s", trace_id="tr", job_request=job_pb2.JobRequest(job_id="j1", topic="job.echo"))
    delivery = packet_delivery(services.app, EXECUTE_TASK, packet, queue=queue, task_id="j1:1", time_limit_s=30)
    assert delivery is not None
    key, message = delivery
    assert services.redis.llen(key) == 0  # built, not sent

    send_packet(services.app, EXECUTE_TASK, packet, queue=queue, task_id="j1:1", time_limit_s=30)

    (sent,) = services.redis.lrange(key, 0, -1)  # the very list kombu's own send used
    built, sent_body = json.loads(message), json.loads(sent)
    for fields in (built, sent_body):
        fields["properties"].pop("delivery_tag")  # unique per message
    assert built == sent_body


def test_the_move_to_dispatched_pushes_the_message_and_leaves_nothing_undispatched(services: Services) -> None:
    queue = f"{services.settings.namespace}:q"
    job_id = scheduled_job(services)
    assert job_id in _undispatched(services)

    assert services.jobs.transition(job_id, JobState.DISPATCHED, attempts=1, deliver=(queue, "message-1"))

    assert services.redis.lrange(queue, 0, -1) == ["message-1"]
    assert job_id not in _undispatched(services)  # sent with the move: nothing for the tick to resend
    assert services.jobs.transition(job_id, JobState.DISPATCHED, attempts=1, deliver=(queue, "again")) is False
    assert services.redis.lrange(queue, 0, -1) == ["message-1"]  # a repeated move sends nothing


def test_a_refused_move_queues_no_message(services: Services) -> None:
    queue = f"{services.settings.namespace}:q"
    busy, waiting = scheduled_job(services), scheduled_job(services)
    full = [ActiveLimit("pool:echo", 1)]
    services.jobs.transition(busy, JobState.DISPATCHED, attempts=1, limits=full, deliver=(queue, "busy"))

    with pytest.raises(ConcurrencyLimitError):
        services.jobs.transition(waiting, JobState.DISPATCHED, attempts=1, limits=full, deliver=(queue, "waiting"))

    assert services.redis.lrange(queue, 0, -1) == ["busy"]
    assert services.jobs.get(waiting).state is JobState.SCHEDULED
    assert waiting in _undispatched(services)


def test_without_a_message_the_move_waits_in_the_undispatched_set(services: Services) -> None:
    job_id = scheduled_job(services)
    services.jobs.transition(job_id, JobState.DISPATCHED, attempts=1)  # a broker elsewhere: sent after
    assert job_id in _undispatched(services)
    services.jobs.forget_undispatched(job_id)
    assert job_id not in _undispatched(services)

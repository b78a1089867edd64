"""Celery settings for every Coretex process, built from :class:`coretex.settings.Settings`.

Choices and why (see shared/design/PITFALLS.md):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job whose worker dies is redelivered.
- ``worker_prefetch_multiplier = 1``: no task parks behind a busy process.
- ``task_ignore_result``: our job records are the result; Celery's backend would cost throughput.
- only the CAP protobuf serializer and JSON are accepted; never pickle.
- Redis transport keys and queue names carry the deployment namespace, so two stacks (or two
  tests) on one Redis never eat each other's messages.
- the visibility timeout outlives the longest hard time limit; long delays never use broker ETAs.
"""

from __future__ import annotations

from typing import Any

from coretex.protocol.envelope import CONTENT_TYPE
from coretex.settings import Settings

VISIBILITY_TIMEOUT_S = 3600
TICK_INTERVAL_S = 1.0


def from_settings(settings: Settings) -> dict[str, Any]:
    control = settings.control_queue
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_serializer": "json",
        "accept_content": [CONTENT_TYPE, "application/json"],
        "task_default_queue": control,
        "task_create_missing_queues": True,
        # Task events cost three broker publishes per task; Flower can switch them on at runtime
        # (`celery control enable_events`) when someone is looking.
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "beat_schedule": {
            "coretex-tick": {
                "task": "coretex.tick",
                "schedule": TICK_INTERVAL_S,
                "options": {"queue": control, "expires": 10},
            }
        },
    }
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        config["broker_transport_options"] = {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "global_keyprefix": f"{settings.namespace}:celery:",
        }
    return config

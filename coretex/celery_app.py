"""The one explicit Celery app of Coretex (never ``shared_task`` or ``current_app``).

``celery -A coretex.celery_app worker -Q <ns>.control`` runs the control tasks; pack workers run
through ``coretex worker``, which uses the same app on their pool queue.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

import celeryconfig
from coretex.broker import guard_redis_channel_after_connection_loss
from coretex.bus import register_serializer
from coretex.engine.engine import Engine
from coretex.engine.listener import NewsListener
from coretex.scheduler.tasks import register_control_tasks
from coretex.sdk._runtime import register_execute_task
from coretex.services import Services
from coretex.settings import Settings, load_settings


class ProcessServices:
    """Hands each process (and each forked pool child) its own :class:`Services`."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self._settings = settings
        self._app = app
        self._services: Services | None = None

    def __call__(self) -> Services:
        if self._services is None or self._services.pid != os.getpid():
            self._services = Services(self._settings, self._app)
        return self._services


def _tell_engine(services: Services, job_id: str) -> None:
    _control_engine(services).job_changed(job_id)


def _engine_tick(services: Services, now: float) -> None:
    _control_engine(services).tick(now)


def _control_engine(services: Services) -> Engine:
    engine = services.engine
    engine.inline_dispatch = True  # this is a control worker: steps' jobs enter the pipeline here
    return engine


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    register_serializer()
    guard_redis_channel_after_connection_loss()
    celery = Celery("coretex", set_as_current=False)
    celery.conf.update(celeryconfig.from_settings(settings))
    services = ProcessServices(settings, celery)
    celery.coretex_services = services  # one per process, for its own threads
    register_control_tasks(celery, services, job_listener=_tell_engine, tick_hook=_engine_tick)
    register_execute_task(celery, services)
    _listen_for_job_news(celery, services, settings)
    return celery


def _listen_for_job_news(celery: Celery, services: ProcessServices, settings: Settings) -> None:
    """A worker of ``celery`` that consumes the control queue also listens for job news: one
    listener in each prefork child, or one per thread of a thread pool. Pack workers do not."""
    listeners: list[NewsListener] = []
    control = [False]

    def start(count: int) -> None:
        for index in range(count):
            listener = NewsListener(lambda: services().job_news, lambda news: _control_engine(services()).hear(news),
                                    index)
            listener.start()
            listeners.append(listener)

    def on_init(sender: Any, **_: Any) -> None:
        queues = celery.amqp.queues
        consumed = queues.consume_from if queues.consume_from is not None else queues
        control[0] = getattr(sender, "app", None) is celery and settings.control_queue in consumed

    def on_child_init(**_: Any) -> None:
        if control[0]:
            listeners.clear()  # (a copy of the parent's, if any: threads do not survive a fork)
            start(1)

    def on_ready(sender: Any, **_: Any) -> None:
        from celery.concurrency.prefork import TaskPool

        if control[0] and not isinstance(sender.pool, TaskPool):
            start(max(1, int(sender.controller.concurrency or 1)))

    def on_stop(**_: Any) -> None:
        for listener in listeners:
            listener.stop()

    signals.worker_init.connect(on_init, weak=False)
    signals.worker_process_init.connect(on_child_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_process_shutdown.connect(on_stop, weak=False)
    signals.worker_shutdown.connect(on_stop, weak=False)


app = create_app()

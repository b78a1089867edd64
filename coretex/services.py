"""The wiring of one process: settings -> Redis client, stores, kernel client, router, Celery app.

Built lazily and once per process id: Celery's prefork children get their own Redis connections
and gRPC channel (neither may cross ``fork()``).
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from coretex.config import ConfigService
from coretex.config.live import LiveConfig
from coretex.kernel.client import KernelClient
from coretex.scheduler.routing_table import RoutingTable
from coretex.settings import Settings
from coretex.store import DLQStore, JobStore, PointerStore, connect
from coretex.store.approvals import ApprovalStore
from coretex.store.artifacts import ArtifactStore
from coretex.store.job_news import JobNews
from coretex.store.leases import LeaseStore
from coretex.store.schemas import SchemaStore
from coretex.store.timers import TimerStore
from coretex.store.workers import WorkerRegistry

if TYPE_CHECKING:
    from celery import Celery

    from coretex.engine.engine import Engine


class Services:
    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self._app = app
        self.pid = os.getpid()

    @cached_property
    def app(self) -> Celery:
        if self._app is None:
            from coretex.celery_app import create_app

            self._app = create_app(self.settings)
        return self._app

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.redis, self.settings)

    @cached_property
    def job_news(self) -> JobNews:
        return JobNews(self.redis, self.settings)

    @cached_property
    def pointers(self) -> PointerStore:
        return PointerStore(self.redis, self.settings)

    @cached_property
    def dlq(self) -> DLQStore:
        return DLQStore(self.redis, self.settings)

    @cached_property
    def timers(self) -> TimerStore:
        return TimerStore(self.redis, self.settings)

    @cached_property
    def leases(self) -> LeaseStore:
        return LeaseStore(self.redis, self.settings)

    @cached_property
    def workers(self) -> WorkerRegistry:
        return WorkerRegistry(self.redis, self.settings)

    @cached_property
    def approvals(self) -> ApprovalStore:
        return ApprovalStore(self.redis, self.settings)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.redis, self.settings, self.settings.artifacts,
                             retention_ttls=lambda: self.live_config.section("retention"))

    @cached_property
    def schemas(self) -> SchemaStore:
        return SchemaStore(self.redis, self.settings)

    @cached_property
    def engine(self) -> Engine:
        """The workflow engine (built on first use: job-only processes never load it)."""
        from coretex.engine.engine import Engine

        return Engine(self)

    @cached_property
    def kernel(self) -> KernelClient:
        return KernelClient(self.settings.kernel_addr, self.settings.kernel_timeout_s)

    @cached_property
    def config(self) -> ConfigService:
        return ConfigService(self.redis, self.settings)

    @cached_property
    def live_config(self) -> LiveConfig:
        """The effective config, followed live (one watcher thread per process)."""
        return LiveConfig(self.redis, self.settings)

    @cached_property
    def router(self) -> RoutingTable:
        """Topic -> pool routing of the effective config, following its changes live."""
        return RoutingTable(self.live_config)

    def close(self) -> None:
        if "live_config" in self.__dict__:
            self.live_config.close()
        if "kernel" in self.__dict__:
            self.kernel.close()
        if "redis" in self.__dict__:
            self.redis.close()

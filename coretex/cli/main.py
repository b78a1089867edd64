"""``coretex``: run one platform process (kernel, gateway, control, beat, worker) or the local stack."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from coretex import __version__
from coretex.errors import CoretexError
from coretex.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except CoretexError as exc:
        raise click.UsageError(str(exc)) from exc


def _logging(level: str) -> None:
    from coretex.observability import configure_logging

    configure_logging(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="coretex")
def main() -> None:
    """Coretex platform processes. Settings come from CORETEX_* environment variables."""


@main.command()
@click.option("--listen", envvar="CORETEX_KERNEL_ADDR", default="127.0.0.1:50051", show_default=True,
              help="HOST:PORT for the gRPC safety kernel (env CORETEX_KERNEL_ADDR).")
@click.option("--metrics-listen", envvar="CORETEX_KERNEL_METRICS_ADDR", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics (reload failures, snapshot version) here.")
@click.option("--log-level", default="info", show_default=True)
def kernel(listen: str, metrics_listen: str | None, log_level: str) -> None:
    """Serve the CAP SafetyKernel gRPC service: signed policy from files and the config service,
    hot-reloaded, every decision audited."""
    import dataclasses

    from coretex.kernel.server import serve

    _logging(log_level)
    settings = _settings()
    if metrics_listen:
        settings = dataclasses.replace(settings, kernel_metrics_addr=metrics_listen)
    serve(settings, listen)


@main.command()
@click.option("--listen", envvar="CORETEX_GATEWAY_ADDR", default="127.0.0.1:8080", show_default=True,
              help="HOST:PORT for the REST gateway (env CORETEX_GATEWAY_ADDR).")
@click.option("--log-level", default="info", show_default=True)
def gateway(listen: str, log_level: str) -> None:
    """Serve the REST control plane (/api/v1, OpenAPI at /api/v1/openapi.json)."""
    from coretex.gateway.server import serve

    _logging(log_level)
    settings = _settings()
    _require_compatible_store(settings)
    serve(settings, listen)


@main.command()
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes (or threads).")
@click.option("--pool", "pool_kind", type=click.Choice(["prefork", "threads"]), default="prefork", show_default=True,
              help="Celery execution pool. Control tasks wait on Redis and the kernel, so threads save the "
                   "hand-over to a child process on every message.")
@click.option("--log-level", default="info", show_default=True)
def control(concurrency: int, pool_kind: str, log_level: str) -> None:
    """Run the control worker: scheduler and workflow engine tasks on the <namespace>.control queue."""
    from coretex.celery_app import create_app

    _logging(log_level)
    settings = _settings()
    _require_compatible_store(settings)
    _load_base_config(settings)
    create_app(settings).worker_main([
        "worker", "-Q", settings.control_queue, "-n", f"control.{settings.namespace}.{os.getpid()}@%h",
        "-c", str(concurrency), "--pool", pool_kind, "--loglevel", log_level.upper(),
    ])


@main.command()
@click.option("--schedule-file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(".coretex/celerybeat-schedule"), show_default=True)
@click.option("--log-level", default="info", show_default=True)
def beat(schedule_file: Path, log_level: str) -> None:
    """Run Celery beat: the tick that drives timers, leases and housekeeping."""
    from coretex.celery_app import create_app

    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    create_app(_settings()).start(["beat", "-s", str(schedule_file), "--loglevel", log_level.upper()])


@main.command()
@click.option("--pool", required=True, help="Pool whose queue this worker consumes.")
@click.option("--app", "app_ref", required=True, metavar="MODULE:ATTR",
              help="The coretex.sdk.Worker object, e.g. examples.echo.worker:worker.")
@click.option("--concurrency", "-c", default=2, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def worker(pool: str, app_ref: str, concurrency: int, log_level: str) -> None:
    """Run a pack worker: handle the topics of an SDK Worker on one pool's queue."""
    from coretex.celery_app import create_app
    from coretex.sdk import Worker
    from coretex.sdk._runtime import activate

    _logging(log_level)
    settings = _settings()
    sdk_worker = _load_worker(app_ref)
    if not isinstance(sdk_worker, Worker):
        raise click.UsageError(f"{app_ref} is a {type(sdk_worker).__name__}, not a coretex.sdk.Worker")
    if sdk_worker.pool != pool:
        raise click.UsageError(f"{app_ref} declares pool {sdk_worker.pool!r}, not {pool!r}")
    activate(sdk_worker)
    app = create_app(settings)
    _send_heartbeats(app, sdk_worker, concurrency)
    app.worker_main([
        "worker", "-Q", settings.pool_queue(pool), "-n", f"{pool}.{settings.namespace}.{os.getpid()}@%h",
        "-c", str(concurrency), "--loglevel", log_level.upper(),
    ])


def _send_heartbeats(app: Any, sdk_worker: Any, concurrency: int) -> None:
    """Beat from the worker's main process once its pool is up, until it shuts down."""
    from celery.signals import worker_ready, worker_shutdown

    from coretex.sdk._heartbeats import HeartbeatSender

    sender = HeartbeatSender(app.coretex_services, sdk_worker, concurrency)
    worker_ready.connect(lambda **_: sender.start(), weak=False)
    worker_shutdown.connect(lambda **_: sender.stop(), weak=False)


def _load_worker(ref: str) -> object:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise click.UsageError(f"--app must look like module:attribute, got {ref!r}")
    if os.getcwd() not in sys.path:  # like `celery -A`, find modules of the current project
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise click.UsageError(f"{module_name} has no attribute {attr!r}") from exc


@main.command()
def migrate() -> None:
    """Upgrade stored records to this Coretex's store schema version (idempotent)."""
    from coretex.store import connect
    from coretex.store.migrations import STORE_SCHEMA_VERSION
    from coretex.store.migrations import migrate as run_migrations

    settings = _settings()
    try:
        applied = run_migrations(connect(settings), settings)
    except CoretexError as exc:
        raise click.ClickException(str(exc)) from exc
    for version, changed in applied:
        click.echo(f"migrated to version {version}: {changed} records")
    click.echo(f"store schema version {STORE_SCHEMA_VERSION} (namespace {settings.namespace})")


def _require_compatible_store(settings: Settings) -> None:
    """The control plane refuses to start against a store newer than it understands."""
    from coretex.store import connect
    from coretex.store.migrations import ensure_compatible

    try:
        ensure_compatible(connect(settings), settings)
    except CoretexError as exc:
        raise click.ClickException(str(exc)) from exc


def _load_base_config(settings: Settings) -> None:
    """Publish config/*.yaml as the system base (a no-op when the content is unchanged)."""
    from coretex.config import ConfigService
    from coretex.store import connect

    try:
        snapshot = ConfigService(connect(settings), settings).load_base(settings.config_dir)
    except CoretexError as exc:
        raise click.ClickException(f"cannot load base config from {settings.config_dir}: {exc}") from exc
    logging.getLogger("coretex.config").info("effective config version %s sha256 %s",
                                             snapshot.version, snapshot.sha256[:12])


@main.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".coretex"),
              show_default=True, help="Where logs, pid files and the dev API key go.")
@click.option("--demo/--no-demo", default=True, show_default=True, help="Run the echo job at the end.")
def up(state_dir: Path, demo: bool) -> None:
    """Start the whole stack locally (redis-server too, when none is reachable) and run a demo job."""
    from coretex.cli.stack import Stack

    sys.exit(Stack(state_dir).up(demo=demo))


@main.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".coretex"),
              show_default=True)
def down(state_dir: Path) -> None:
    """Stop exactly what `coretex up` started."""
    from coretex.cli.stack import Stack

    sys.exit(Stack(state_dir).down())


if __name__ == "__main__":
    main()

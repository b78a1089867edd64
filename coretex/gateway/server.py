"""``coretex gateway``: the app under gunicorn (gthread workers), configured in code.

Each worker builds its own app after the fork (no ``preload_app``), so Redis connections, the
Celery producer pool and the kernel's gRPC channel never cross ``fork()``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from coretex.settings import Settings, parse_listen

WORKERS = 2
THREADS = 4


class GatewayServer(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        from coretex.gateway.app import create_app
        from coretex.observability import redact_logger_handlers

        # Runs in each worker after gunicorn configured its loggers, which do not propagate to root.
        redact_logger_handlers("gunicorn.error", "gunicorn.access")
        return create_app(self._settings)


def gunicorn_options(listen: str, *, workers: int = WORKERS, threads: int = THREADS) -> dict[str, Any]:
    """Options for ``listen`` (``HOST:PORT``); raises ConfigError for a bad address."""
    host, port = parse_listen(listen)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "bind": [bind],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "accesslog": "-",
        "errorlog": "-",
        "preload_app": False,
        "proc_name": "coretex-gateway",
        # gunicorn's control socket defaults to one per-user path: two gateways (a stack and a
        # test run) would fight over it, and we do not use it.
        "control_socket_disable": True,
        # Job submission waits on Redis and the broker, each bounded far below this.
        "timeout": 60,
        "graceful_timeout": 20,
    }


def serve(settings: Settings, listen: str) -> None:
    """Run the gateway on ``listen`` until SIGTERM/SIGINT."""
    GatewayServer(settings, gunicorn_options(listen)).run()

"""Run real Coretex processes for an integration test and stop every one of them afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from coretex.processes import group_alive, spawn_group, stop_group

TEST_BROKER_ENV = "CORETEX_TEST_BROKER_URL"
"""Set it (e.g. to amqp://guest:guest@127.0.0.1:5672//) to run the stacks on another broker; state
stays in Redis. `make test` runs the integration suites once more on RabbitMQ this way."""


class ProcessStack:
    """Start ``python -m coretex <command>`` processes sharing one environment.

    ``env`` is laid over the current environment with every inherited ``CORETEX_*`` variable
    removed first, so a test never talks to a developer's stack by accident. ``self.env`` is the
    complete environment: build the test's own Settings from it so both sides use one broker. The processes run
    in dev mode (``CORETEX_DEV_MODE=1``: the kernel accepts unsigned policy bundles) unless
    ``env`` sets ``CORETEX_DEV_MODE`` itself.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, cwd: Path | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
        self.env = {**base, "CORETEX_DEV_MODE": "1", **env}
        broker = os.environ.get(TEST_BROKER_ENV)
        if broker and "CORETEX_BROKER_URL" not in env:
            self.env["CORETEX_BROKER_URL"] = broker
        self.log_dir = log_dir
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        if name in self.procs and group_alive(self.procs[name].pid):
            raise RuntimeError(f"{name} is already running")
        proc = spawn_group([sys.executable, "-m", "coretex", *args], env=self.env,
                           log_path=self.log_dir / f"{name}.log", cwd=self.cwd)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        stop_group(proc.pid, grace_s=10)
        proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

"""A throwaway redis-server for tests: its own port, no persistence, killed on stop."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from coretex.processes import free_port, wait_for_port


class RedisServer:
    """Start ``redis-server`` on a free loopback port; ``url`` points at database 0."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = found
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.start_on(free_port())
        return self

    def start_on(self, port: int) -> None:
        """Start on ``port`` (used by :meth:`restart` to come back where clients expect it)."""
        self.port = port
        self._dir = tempfile.TemporaryDirectory(prefix="coretex-redis-")
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--maxmemory-policy", "noeviction",
                "--logfile", str(Path(self._dir.name) / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", port)

    def restart(self) -> None:
        """Stop and start again on the same port (data is lost: no persistence)."""
        port = self.port
        self.stop()
        self.start_on(port)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The local development stack behind ``coretex up`` / ``coretex down`` (and ``make up/down``).

``up`` finds a Redis (``CORETEX_REDIS_URL`` when it answers, else a redis-server of its own,
installing Debian's package when root), creates a dev API key, starts kernel, control worker,
beat, the echo worker and the gateway as background process groups with logs and pid files under
the state folder, runs an echo job end to end and prints how to reach everything. ``down`` stops
exactly the process groups whose pid files ``up`` wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml
from rich.console import Console

from coretex.errors import ConfigError
from coretex.processes import free_port, group_alive, port_open, spawn_group, stop_group, wait_for_port
from coretex.settings import DEFAULT_GATEWAY_ADDR, DEFAULT_KERNEL_ADDR, DEFAULT_REDIS_URL, parse_listen

REPO = Path(__file__).resolve().parents[2]
DEMO_WORKFLOW = REPO / "examples" / "echo" / "workflow.yaml"


@dataclass(frozen=True)
class Component:
    name: str
    argv: tuple[str, ...]


class Stack:
    def __init__(self, state_dir: Path, console: Console | None = None) -> None:
        self.dir = state_dir.resolve()
        self.logs = self.dir / "logs"
        self.pids = self.dir / "pids"
        self.console = console or Console(soft_wrap=True)

    # ---- up -------------------------------------------------------------------------------
    def up(self, *, demo: bool = True) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        running = self._alive()
        if running and set(running) >= {c.name for c in self._components({})}:
            env = json.loads((self.dir / "stack.json").read_text())
            env["CORETEX_API_KEY"] = (self.dir / "api-key").read_text().strip()
            self.console.print("[green]stack already running[/green]; reusing it")
        else:
            if running:
                self.down()
            try:
                env = self._start_all()
            except (ConfigError, RuntimeError, TimeoutError) as exc:
                self.console.print(f"[red]coretex up failed:[/red] {exc}")
                self.down(quiet=True)
                return 1
        if demo and not self._demo(env):
            return 1
        self._print_urls(env)
        return 0

    def _start_all(self) -> dict[str, str]:
        env = self._environment()
        public = {k: v for k, v in env.items() if k != "CORETEX_API_KEY"}
        (self.dir / "stack.json").write_text(json.dumps(public, indent=2))
        for component in self._components(env):
            self._spawn(component, env)
        with self.console.status("waiting for the kernel and the gateway"):
            wait_for_port(*parse_listen(env["CORETEX_KERNEL_ADDR"]), timeout=30)
            self._wait_gateway(env, timeout=60)
        self.console.print(f"[green]started[/green] {', '.join(sorted(self._alive()))} (logs in {self.logs})")
        if env["CORETEX_DEV_MODE"] == "1":
            self.console.print("[yellow]dev mode[/yellow] (CORETEX_DEV_MODE=1): the kernel accepts unsigned policy "
                               "bundles; production kernels require signatures (coretexctl policy sign)")
        return env

    def _environment(self) -> dict[str, str]:
        env = {
            "CORETEX_REDIS_URL": self._redis_url(),
            "CORETEX_NAMESPACE": os.environ.get("CORETEX_NAMESPACE") or "coretex",
            "CORETEX_KERNEL_ADDR": _free_addr(os.environ.get("CORETEX_KERNEL_ADDR") or DEFAULT_KERNEL_ADDR),
            "CORETEX_GATEWAY_ADDR": _free_addr(os.environ.get("CORETEX_GATEWAY_ADDR") or DEFAULT_GATEWAY_ADDR),
            "CORETEX_CONFIG_DIR": os.environ.get("CORETEX_CONFIG_DIR") or str(REPO / "config"),
            "CORETEX_POLICIES_DIR": os.environ.get("CORETEX_POLICIES_DIR") or str(REPO / "policies"),
            "CORETEX_API_KEYS_FILE": str(self.dir / "api-keys.yaml"),
            # A local stack runs the unsigned bundles of policies/; production kernels refuse them.
            "CORETEX_DEV_MODE": os.environ.get("CORETEX_DEV_MODE") or "1",
        }
        if os.environ.get("CORETEX_BROKER_URL"):
            env["CORETEX_BROKER_URL"] = os.environ["CORETEX_BROKER_URL"]
        env["CORETEX_API_KEY"] = self._dev_key(Path(env["CORETEX_API_KEYS_FILE"]))
        return env

    def _dev_key(self, keys_file: Path) -> str:
        from coretex.gateway.auth import new_api_key, write_key_file

        key = new_api_key()
        write_key_file(keys_file, [{"name": "dev", "key": key, "tenant": "default", "role": "admin"}])
        key_path = self.dir / "api-key"
        key_path.write_text(key + "\n")
        key_path.chmod(0o600)
        return key

    def _components(self, env: dict[str, str]) -> list[Component]:
        py = (sys.executable, "-m", "coretex")
        return [
            Component("kernel", (*py, "kernel", "--listen", env.get("CORETEX_KERNEL_ADDR", ""))),
            Component("control", (*py, "control", "-c", "2")),
            Component("beat", (*py, "beat", "--schedule-file", str(self.dir / "celerybeat-schedule"))),
            Component("worker-echo", (*py, "worker", "--pool", "echo", "--app", "examples.echo.worker:worker",
                                      "-c", "2")),
            Component("gateway", (*py, "gateway", "--listen", env.get("CORETEX_GATEWAY_ADDR", ""))),
        ]

    def _spawn(self, component: Component, env: dict[str, str]) -> int:
        child_env = {**os.environ, **{k: v for k, v in env.items() if k != "CORETEX_API_KEY"}}
        proc = spawn_group(component.argv, env=child_env, log_path=self.logs / f"{component.name}.log", cwd=REPO)
        (self.pids / f"{component.name}.pid").write_text(f"{proc.pid}\n")
        return proc.pid

    # ---- redis ----------------------------------------------------------------------------
    def _redis_url(self) -> str:
        url = os.environ.get("CORETEX_REDIS_URL") or DEFAULT_REDIS_URL
        if _redis_answers(url):
            _check_eviction_policy(url)
            self.console.print(f"using Redis at {url}")
            return url
        binary = shutil.which("redis-server") or self._install_redis()
        port = free_port()
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        self._spawn(
            Component("redis", (binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(data), "--maxmemory-policy", "noeviction")),
            {},
        )
        wait_for_port("127.0.0.1", port, timeout=15)
        local = f"redis://127.0.0.1:{port}/0"
        self.console.print(f"no Redis answered at {url}; started redis-server at {local}")
        return local

    def _install_redis(self) -> str:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError(
                "no Redis answers at CORETEX_REDIS_URL and redis-server is not installed. "
                "Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`) "
                "or point CORETEX_REDIS_URL at a running Redis."
            )
        with self.console.status("installing redis-server (apt-get)"):
            subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True,
                           stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("apt-get installed redis-server but it is not on PATH")
        return found

    # ---- demo and status ------------------------------------------------------------------
    def _wait_gateway(self, env: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _ = _http(env, "GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            if "gateway" not in self._alive():
                raise RuntimeError(f"the gateway exited; see {self.logs / 'gateway.log'}")
            time.sleep(0.2)
        raise TimeoutError(f"the gateway did not answer /health in {timeout:.0f}s; see {self.logs}")

    def _demo(self, env: dict[str, str]) -> bool:
        body = {"topic": "job.echo", "input": {"message": "hello from coretex", "n": 42}}
        status, submitted = _http(env, "POST", "/api/v1/jobs", body)
        if status not in (200, 202):
            self.console.print(f"[red]demo submit failed[/red] ({status}): {submitted}")
            return False
        job_id = submitted["job_id"]
        self.console.print(f"submitted echo job [bold]{job_id}[/bold]")
        job = self._until(env, f"/api/v1/jobs/{job_id}", "state",
                          {"SUCCEEDED", "FAILED", "DENIED", "CANCELLED", "TIMEOUT"}, "waiting for the echo job")
        if job.get("state") != "SUCCEEDED":
            self.console.print(f"[red]demo job ended {job.get('state', 'UNKNOWN')}[/red]: {json.dumps(job)}")
            self.console.print(f"logs: {self.logs}")
            return False
        self.console.print(f"[green]echo job SUCCEEDED[/green] (decision {job['decision']} by rule "
                           f"{job['rule_id']}); result:")
        self.console.print_json(json.dumps(job["result"]))
        return self._demo_workflow(env)

    def _demo_workflow(self, env: dict[str, str]) -> bool:
        """Save examples/echo/workflow.yaml and run it to the end: worker, condition, notify steps."""
        document = yaml.safe_load(DEMO_WORKFLOW.read_text())
        status, saved = _http(env, "POST", "/api/v1/workflows", document)
        if status not in (200, 201):
            self.console.print(f"[red]demo workflow refused[/red] ({status}): {saved}")
            return False
        status, started = _http(env, "POST", f"/api/v1/workflows/{document['id']}/runs",
                                {"input": {"name": "coretex", "n": 42}})
        if status not in (200, 201):
            self.console.print(f"[red]demo run refused[/red] ({status}): {started}")
            return False
        run_id = started["run_id"]
        self.console.print(f"started run [bold]{run_id}[/bold] of workflow {document['id']} v{saved['version']}")
        run = self._until(env, f"/api/v1/runs/{run_id}", "status", {"succeeded", "failed", "cancelled", "timed_out"},
                          "waiting for the demo workflow")
        steps = ", ".join(f"{s['id']} {s['status']}" for s in run.get("steps", []))
        if run.get("status") != "succeeded":
            self.console.print(f"[red]demo workflow ended {run.get('status', 'UNKNOWN')}[/red]: {steps}")
            self.console.print(f"logs: {self.logs}")
            return False
        self.console.print(f"[green]demo workflow SUCCEEDED[/green] ({steps}); output:")
        self.console.print_json(json.dumps(run["output"]))
        return True

    def _until(self, env: dict[str, str], path: str, field: str, ended: set[str], doing: str,
               timeout: float = 60) -> dict[str, Any]:
        """GET ``path`` until its ``field`` is one of ``ended`` (or ``timeout`` runs out); the last answer."""
        deadline = time.monotonic() + timeout
        answer: dict[str, Any] = {}
        with self.console.status(doing):
            while time.monotonic() < deadline:
                _, answer = _http(env, "GET", path)
                if answer.get(field) in ended:
                    break
                time.sleep(0.2)
        return answer

    def _print_urls(self, env: dict[str, str]) -> None:
        base = f"http://{env['CORETEX_GATEWAY_ADDR']}"
        key_file = self.dir / "api-key"
        self.console.print(
            f"\n[bold]Coretex is up[/bold]\n"
            f"  gateway   {base}/api/v1   (OpenAPI {base}/api/v1/openapi.json, docs {base}/api/docs)\n"
            f"  kernel    grpc://{env['CORETEX_KERNEL_ADDR']}\n"
            f"  redis     {env['CORETEX_REDIS_URL']}   namespace {env['CORETEX_NAMESPACE']}\n"
            f"  api key   {key_file}\n"
            f"  logs      {self.logs}\n\n"
            f"  KEY=$(cat {key_file})\n"
            f"  curl -s -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n"
            f"       -d '{{\"topic\": \"job.echo\", \"input\": {{\"hi\": 1}}}}' {base}/api/v1/jobs\n"
            f"  curl -s -H \"Authorization: Bearer $KEY\" {base}/api/v1/jobs/<job_id>\n"
            f"  curl -s -H \"Authorization: Bearer $KEY\" {base}/api/v1/runs/<run_id>/timeline\n\n"
            f"  stop everything with: make down"
        )

    # ---- down -----------------------------------------------------------------------------
    def down(self, *, quiet: bool = False) -> int:
        order = ["gateway", "worker-echo", "beat", "control", "kernel", "redis"]
        files = sorted(self.pids.glob("*.pid"), key=lambda p: order.index(p.stem) if p.stem in order else -1)
        for pid_file in files:
            pid = int(pid_file.read_text().strip() or 0)
            stopped = stop_group(pid)
            pid_file.unlink()
            if not quiet:
                self.console.print(f"{pid_file.stem}: {'stopped' if stopped else 'was not running'}")
        if not files and not quiet:
            self.console.print("nothing to stop")
        return 0

    def _alive(self) -> dict[str, int]:
        alive = {}
        for pid_file in self.pids.glob("*.pid") if self.pids.is_dir() else ():
            pid = int(pid_file.read_text().strip() or 0)
            if pid and group_alive(pid):
                alive[pid_file.stem] = pid
        return alive


def _http(env: dict[str, str], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = f"http://{env['CORETEX_GATEWAY_ADDR']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {env['CORETEX_API_KEY']}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, ValueError):
        return False


def _check_eviction_policy(url: str) -> None:
    """Key eviction would delete kombu's bindings and our state: refuse anything but noeviction."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "noeviction")
    except redis.RedisError:
        return  # CONFIG is disabled on some managed servers; nothing more we can check
    finally:
        client.close()
    if policy != "noeviction":
        raise ConfigError(f"Redis at {url} has maxmemory-policy {policy}; Coretex needs noeviction")


def _free_addr(addr: str) -> str:
    host, port = parse_listen(addr)
    return addr if not port_open(host, port) else f"{host}:{free_port(host)}"


def gateway_base(state_dir: Path) -> tuple[str, str] | None:
    """(base URL, API key) of a stack started by ``coretex up`` in ``state_dir``, if any."""
    try:
        env = json.loads((state_dir / "stack.json").read_text())
        key = (state_dir / "api-key").read_text().strip()
    except (OSError, ValueError):
        return None
    return f"http://{env['CORETEX_GATEWAY_ADDR']}", key

"""Process settings, read once from ``CORETEX_*`` environment variables.

Every process (gateway, kernel, control worker, beat, pack workers, coretexctl) builds one
:class:`Settings` with :func:`load_settings` and passes it down; nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from coretex.errors import ConfigError
from coretex.model.artifact import ArtifactConfig

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KERNEL_ADDR = "127.0.0.1:50051"
DEFAULT_GATEWAY_ADDR = "127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    redis_url: str
    """State store (and default broker): ``CORETEX_REDIS_URL``."""
    broker_url: str
    """Celery broker: ``CORETEX_BROKER_URL``, defaulting to the Redis URL (amqp:// works too)."""
    namespace: str
    """Prefix of every Redis key and Celery queue of this deployment: ``CORETEX_NAMESPACE``."""
    kernel_addr: str
    """host:port of the safety kernel gRPC server: ``CORETEX_KERNEL_ADDR``."""
    gateway_addr: str
    """host:port the gateway listens on: ``CORETEX_GATEWAY_ADDR``."""
    config_dir: Path
    """Folder holding pools.yaml, timeouts.yaml, system.yaml: ``CORETEX_CONFIG_DIR``."""
    policies_dir: Path
    """Folder of base policy bundles (*.yaml): ``CORETEX_POLICIES_DIR``."""
    kernel_timeout_s: float
    """Deadline of one kernel Check call; past it the caller fails closed: ``CORETEX_KERNEL_TIMEOUT``."""
    api_keys_file: Path | None
    """YAML file of API key hashes, tenants and roles: ``CORETEX_API_KEYS_FILE``."""
    max_input_bytes: int
    """Largest accepted job input (canonical JSON bytes): ``CORETEX_MAX_INPUT_BYTES``."""
    result_ttl_s: int
    """How long ctx:/res: pointers and job records live: ``CORETEX_RESULT_TTL``."""
    sender_id: str
    """CAP ``sender_id`` this process stamps on the packets it emits: ``CORETEX_SENDER_ID``."""
    artifacts: ArtifactConfig = ArtifactConfig()
    """Artifact limits, retention TTLs and encryption key: ``CORETEX_ARTIFACT_*``."""
    idempotency_window_s: int = 24 * 3600
    """How long a tenant's idempotency key maps to its first job: ``CORETEX_IDEMPOTENCY_WINDOW_S``."""
    kernel_wait_s: float = 60.0
    """How long a job waits (pending ``kernel_unavailable``, re-checked every second) for an
    unreachable kernel before it is DENIED: ``CORETEX_KERNEL_WAIT_S``. It never runs unchecked."""
    lease_s: float = 30.0
    """A running job's lease; its worker renews it every third of that: ``CORETEX_LEASE_S``."""
    dev_mode: bool = False
    """Local development (``CORETEX_DEV_MODE=1``): the kernel accepts unsigned policy sources, with a
    loud warning. Off by default: outside dev mode an unsigned or badly signed source is refused."""
    policy_url: str | None = None
    """Base policy bundle fetched over HTTP(S) instead of the files of ``policies_dir``, with its
    detached signature at ``<url>.sig``: ``CORETEX_POLICY_URL``."""
    policy_config_disabled: bool = False
    """Ignore config-service policy bundles (files/URL only; the kernel then needs no Redis for its
    policy): ``CORETEX_POLICY_CONFIG_DISABLE=1``."""
    policy_config_scope: str = "system"
    """Config-service scope of the kernel's policy bundles: ``CORETEX_POLICY_CONFIG_SCOPE``."""
    policy_config_id: str = "policy"
    """Config-service id of the kernel's policy bundles: ``CORETEX_POLICY_CONFIG_ID``."""
    policy_config_key: str | None = None
    """Load only this config-service bundle id (e.g. ``secops/workflows``): ``CORETEX_POLICY_CONFIG_KEY``."""
    policy_trusted_keys: Path | None = None
    """YAML/JSON file mapping policy signing key id -> base64 Ed25519 public key (re-read on every
    reload, so keys rotate without a restart): ``CORETEX_POLICY_TRUSTED_KEYS``."""
    policy_signing_key: Path | None = None
    """PEM Ed25519 private key the control plane signs published bundles with (not read by the
    kernel): ``CORETEX_POLICY_SIGNING_KEY``."""
    policy_lkg_path: Path | None = None
    """Local copy of the kernel's last-known-good policy (besides the one in Redis):
    ``CORETEX_POLICY_LKG_PATH``."""
    policy_max_age_s: float | None = None
    """Fail closed (DENY ``POLICY_STALE``) when the active policy was not re-verified against its
    sources for this long; unset = never: ``CORETEX_POLICY_MAX_AGE_S``."""
    policy_poll_s: float = 1.0
    """How often the kernel re-reads its policy sources (pub/sub wakes it sooner): ``CORETEX_POLICY_POLL_S``."""
    kernel_id: str = ""
    """Name of this kernel in its status record; empty = ``<hostname>:<port>``: ``CORETEX_KERNEL_ID``."""
    kernel_metrics_addr: str | None = None
    """HOST:PORT where the kernel serves Prometheus metrics; unset = not served: ``CORETEX_KERNEL_METRICS_ADDR``."""
    lost_submit_s: float = 20.0
    """A job waiting this long for the scheduler with no timer to move it lost its submit packet and
    is submitted again by the tick: ``CORETEX_LOST_SUBMIT_S``."""
    queue_submits: bool = False
    """Hand new jobs to the control queue instead of running the dispatch pipeline in the submitting
    process (a gateway that should not call the kernel itself): ``CORETEX_QUEUE_SUBMITS=1``."""
    kernel_threads: int = 4
    """Threads serving the kernel's RPCs: ``CORETEX_KERNEL_THREADS``. Decisions are Python work under
    one GIL, so more threads add lock contention, not throughput (bench/kernel.py, 8 clients:
    16 threads ~1,500 checks/s, 4 threads ~1,700-1,900/s); scale out with more kernel processes."""

    @property
    def control_queue(self) -> str:
        return f"{self.namespace}.control"

    def pool_queue(self, pool: str) -> str:
        return f"{self.namespace}.pool.{pool}"


def _repo_default(name: str) -> Path:
    here = Path.cwd() / name
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / name


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _bool(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/0 (or true/false), got {env.get(name)!r}")


def _optional_path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment; raise :class:`ConfigError` naming the bad variable."""
    env = dict(os.environ if environ is None else environ)
    redis_url = env.get("CORETEX_REDIS_URL") or DEFAULT_REDIS_URL
    namespace = env.get("CORETEX_NAMESPACE") or "coretex"
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigError(
            f"CORETEX_NAMESPACE must match {_NAMESPACE_RE.pattern} (lowercase, no ':' or '.'), got {namespace!r}"
        )
    keys_file = env.get("CORETEX_API_KEYS_FILE")
    return Settings(
        redis_url=redis_url,
        broker_url=env.get("CORETEX_BROKER_URL") or redis_url,
        namespace=namespace,
        kernel_addr=env.get("CORETEX_KERNEL_ADDR") or DEFAULT_KERNEL_ADDR,
        gateway_addr=env.get("CORETEX_GATEWAY_ADDR") or DEFAULT_GATEWAY_ADDR,
        config_dir=Path(env["CORETEX_CONFIG_DIR"]) if env.get("CORETEX_CONFIG_DIR") else _repo_default("config"),
        policies_dir=(
            Path(env["CORETEX_POLICIES_DIR"]) if env.get("CORETEX_POLICIES_DIR") else _repo_default("policies")
        ),
        kernel_timeout_s=_float(env, "CORETEX_KERNEL_TIMEOUT", 2.0),
        api_keys_file=Path(keys_file) if keys_file else None,
        max_input_bytes=_int(env, "CORETEX_MAX_INPUT_BYTES", 256 * 1024),
        result_ttl_s=_int(env, "CORETEX_RESULT_TTL", 7 * 24 * 3600),
        lease_s=_float(env, "CORETEX_LEASE_S", 30.0),
        kernel_wait_s=_float(env, "CORETEX_KERNEL_WAIT_S", 60.0),
        kernel_threads=_int(env, "CORETEX_KERNEL_THREADS", 4),
        lost_submit_s=_float(env, "CORETEX_LOST_SUBMIT_S", 20.0),
        queue_submits=_bool(env, "CORETEX_QUEUE_SUBMITS"),
        idempotency_window_s=_int(env, "CORETEX_IDEMPOTENCY_WINDOW_S", 24 * 3600),
        sender_id=env.get("CORETEX_SENDER_ID") or f"coretex-{os.uname().nodename}-{os.getpid()}",
        artifacts=ArtifactConfig.from_env(env),
        dev_mode=_bool(env, "CORETEX_DEV_MODE"),
        policy_url=env.get("CORETEX_POLICY_URL") or None,
        policy_config_disabled=_bool(env, "CORETEX_POLICY_CONFIG_DISABLE"),
        policy_config_scope=env.get("CORETEX_POLICY_CONFIG_SCOPE") or "system",
        policy_config_id=env.get("CORETEX_POLICY_CONFIG_ID") or "policy",
        policy_config_key=env.get("CORETEX_POLICY_CONFIG_KEY") or None,
        policy_trusted_keys=_optional_path(env, "CORETEX_POLICY_TRUSTED_KEYS"),
        policy_signing_key=_optional_path(env, "CORETEX_POLICY_SIGNING_KEY"),
        policy_lkg_path=_optional_path(env, "CORETEX_POLICY_LKG_PATH"),
        policy_max_age_s=(
            _float(env, "CORETEX_POLICY_MAX_AGE_S", 0.0) if env.get("CORETEX_POLICY_MAX_AGE_S") else None
        ),
        policy_poll_s=_float(env, "CORETEX_POLICY_POLL_S", 1.0),
        kernel_id=env.get("CORETEX_KERNEL_ID") or "",
        kernel_metrics_addr=env.get("CORETEX_KERNEL_METRICS_ADDR") or None,
    )


def parse_listen(addr: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) and check the port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)

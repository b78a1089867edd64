"""Hot reload of the kernel's policy: notice a change, check it stage by stage, swap or refuse.

A daemon thread wakes on ``<ns>:cfg:policy:changed`` (config-service bundle writes) and at least
every ``CORETEX_POLICY_POLL_S`` (files, URL, trusted keys, and anything pub/sub dropped). Each
wake-up reads every source and fingerprints the bytes, signatures and trusted keys:

- unchanged since a successful run: the active snapshot counts as re-verified (max age restarts);
- unchanged since a failed run: nothing to do, the failure stands (alerted once);
- changed: verify -> parse -> compile -> test (:mod:`.pipeline`), then one atomic swap
  (:meth:`SafetyKernelService.install`), so an evaluation sees the old or the new policy, never
  neither. The new snapshot's sources are saved as the last-known-good.

A failure keeps the current snapshot serving, sets the status to DEGRADED (NOT_READY without a
snapshot) with the failing stage, and — once per distinct failure — increments
``coretex_policy_reload_failures_total{stage}`` and emits a CRITICAL ``POLICY_RELOAD_FAILED``
alert. At start, when the sources fail, the last-known-good is re-verified and served instead.
The status record (:mod:`.status`) is rewritten every wake-up, which also refreshes its TTL.

Redis problems never stop the kernel: config-service sources then fail at ``fetch``; status,
alerts, the shared version and the Redis copy of the last-known-good are skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import redis
from prometheus_client import Counter, Gauge
from redis.client import PubSub

from coretex.errors import StoreError
from coretex.kernel.alerts import alert_packet, publish_alert
from coretex.kernel.pipeline import PolicyReloadError, SignatureCheck, Stage, build_policy, merged_sha256
from coretex.kernel.service import SafetyKernelService
from coretex.kernel.signing_keys import load_trusted_keys
from coretex.kernel.snapshots import LastKnownGood, PolicySnapshot, SnapshotVersions
from coretex.kernel.sources import PolicySource, PolicySourceError, PolicySources
from coretex.kernel.status import KernelStatus, Readiness, clear_kernel_status, write_kernel_status
from coretex.policy import PolicySet
from coretex.policy.signing import PolicySignatureError, TrustedKeys
from coretex.settings import Settings
from coretex.store._redis import redis_errors

log = logging.getLogger("coretex.kernel")

RELOAD_FAILURES = Counter(
    "coretex_policy_reload_failures", "Policy reloads refused, by failing stage (each distinct failure once)", ["stage"]
)
SNAPSHOT_VERSION = Gauge("coretex_policy_snapshot_version", "Version of the policy snapshot served (0: none)")
SNAPSHOT_AGE = Gauge(
    "coretex_policy_snapshot_age_seconds", "Seconds since the served policy was last verified against its sources"
)

RELOAD_FAILED = "POLICY_RELOAD_FAILED"
POLICY_STALE = "POLICY_STALE"
_SLICE_S = 0.2
"""Longest blocking wait, so stop() is honoured quickly."""


@dataclass(frozen=True)
class Failure:
    stage: Stage
    message: str


class PolicyReloader:
    """Keeps ``service`` on the newest verified policy; one per kernel process."""

    def __init__(
        self,
        service: SafetyKernelService,
        settings: Settings,
        client: redis.Redis,
        *,
        kernel_id: str,
        addr: str,
        on_state: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_state`` runs after every wake-up (the server refreshes its health status there)."""
        self.kernel_id = kernel_id
        self.addr = addr
        self._service = service
        self._settings = settings
        self._r = client
        self._sources = PolicySources(settings, client)
        self._versions = SnapshotVersions(client, settings.namespace)
        self._lkg = LastKnownGood(client, settings.namespace, settings.policy_lkg_path)
        self._on_state = on_state
        self._snapshot: PolicySnapshot | None = None
        self._from_lkg = ""
        """Where the served snapshot came from when it is a last-known-good (empty otherwise)."""
        self._lkg_problem = ""
        """Why no last-known-good could be served at start (while no snapshot is loaded)."""
        self._attempted: str | None = None
        """Fingerprint of the sources last run through the pipeline ..."""
        self._attempt_failure: Failure | None = None
        """... and how that run failed (None: it passed)."""
        self._failure: Failure | None = None
        self._reported: Failure | None = None
        self._stale_reported = False
        self._store_ok = True
        self._warned_unsigned = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if settings.dev_mode:
            log.warning("CORETEX_DEV_MODE=1: unsigned policy sources will be accepted. Never run production like this.")

    @property
    def snapshot(self) -> PolicySnapshot | None:
        return self._snapshot

    @property
    def failure(self) -> Failure | None:
        return self._failure

    def describe_sources(self) -> str:
        return self._sources.describe()

    # --- one wake-up ---------------------------------------------------------------------------

    def load_initial(self) -> None:
        """First load at start: the sources, else a verified last-known-good, else NOT READY."""
        with self._lock:
            self._attempt()
            if self._snapshot is None and self._failure is not None:
                self._fall_back_to_lkg(self._failure)
            self._publish()

    def step(self) -> None:
        """One reload check (the thread calls this every wake-up)."""
        with self._lock:
            self._attempt()
            self._publish()

    def _attempt(self) -> None:
        now = time.time()
        try:
            sources = self._sources.fetch()
        except PolicySourceError as exc:
            self._failure = Failure(Stage.FETCH, str(exc))
            return
        try:
            trusted, key_bytes = load_trusted_keys(self._settings.policy_trusted_keys)
        except PolicySignatureError as exc:
            self._attempted = None
            self._failure = Failure(Stage.VERIFY, str(exc))
            return
        fingerprint = _fingerprint(sources, key_bytes)
        if fingerprint == self._attempted:
            self._failure = self._attempt_failure
            if self._attempt_failure is None:
                self._service.mark_verified(now)
            return
        self._attempted = fingerprint
        try:
            policy = build_policy(sources, self._check(trusted))
        except PolicyReloadError as exc:
            self._attempt_failure = self._failure = Failure(exc.stage, exc.detail)
            return
        self._attempt_failure = self._failure = None
        self._warn_unsigned(sources)
        self._install(policy, sources, verified_at=now, save=True)
        self._from_lkg = ""

    def _check(self, trusted: TrustedKeys) -> SignatureCheck:
        return SignatureCheck(trusted, allow_unsigned=self._settings.dev_mode)

    def _install(self, policy: PolicySet, sources: Sequence[PolicySource], *, verified_at: float, save: bool) -> None:
        sha = merged_sha256(policy)
        version = self._versions.version_for(sha)
        snapshot = PolicySnapshot(version, sha, policy, tuple(sources), loaded_at=time.time())
        self._service.install(policy, snapshot_id=snapshot.snapshot_id, verified_at=verified_at)
        self._snapshot = snapshot
        SNAPSHOT_VERSION.set(version)
        log.info("policy snapshot %s (%s) active from %d source(s)", snapshot.snapshot_id, policy.snapshot_id,
                 len(sources))
        if save:
            self._lkg.save(snapshot)

    def _fall_back_to_lkg(self, failure: Failure) -> None:
        saved, problems = self._lkg.load()
        try:
            trusted, _ = load_trusted_keys(self._settings.policy_trusted_keys)
        except PolicySignatureError as exc:
            trusted, problems = {}, [*problems, str(exc)]
        for candidate in saved:
            try:
                policy = build_policy(candidate.sources, self._check(trusted))
            except PolicyReloadError as exc:
                problems.append(f"last-known-good from {candidate.origin} refused at {exc}")
                continue
            self._install(policy, candidate.sources, verified_at=candidate.saved_at, save=False)
            self._from_lkg = f"{candidate.origin}, saved {_iso(candidate.saved_at)}"
            log.error("policy sources failed (%s: %s); serving the last-known-good from %s", failure.stage.value,
                      failure.message, self._from_lkg)
            return
        self._lkg_problem = "; ".join(problems) if problems else "no last-known-good saved"

    def _warn_unsigned(self, sources: Sequence[PolicySource]) -> None:
        unsigned = [s.name for s in sources if s.signature is None]
        if unsigned and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("DEV MODE: serving UNSIGNED policy sources %s (refused outside CORETEX_DEV_MODE)",
                        ", ".join(unsigned))

    # --- reporting -----------------------------------------------------------------------------

    def status(self, now: float | None = None) -> KernelStatus:
        now = time.time() if now is None else now
        snapshot, failure = self._snapshot, self._failure
        active = self._service.active
        base = KernelStatus(kernel_id=self.kernel_id, addr=self.addr, status=Readiness.READY, updated_at=now,
                            dev_mode=self._settings.dev_mode)
        if snapshot is None or active is None:
            stage = failure.stage.value if failure else ""
            message = failure.message if failure else "no policy loaded yet"
            if self._lkg_problem:
                message += f"; {self._lkg_problem}"
            return replace(base, status=Readiness.NOT_READY, stage=stage, message=message)
        filled = replace(
            base, version=snapshot.version, sha256=snapshot.sha256, snapshot_id=snapshot.snapshot_id,
            policy_snapshot=snapshot.policy.snapshot_id, sources=dict(snapshot.source_hashes),
            loaded_at=snapshot.loaded_at, verified_at=active.verified_at,
        )
        note = f"; last reload failed at {failure.stage.value}: {failure.message}" if failure else ""
        if self._service.is_stale(now):
            message = (f"snapshot {snapshot.snapshot_id} not re-verified for {now - active.verified_at:.0f}s "
                       f"(max {self._service.max_age_s:g}s): every decision is DENY {POLICY_STALE}{note}")
            return replace(filled, status=Readiness.NOT_READY, stage=Stage.MAX_AGE.value, message=message)
        if failure is not None or self._from_lkg:
            lkg = f"serving the last-known-good ({self._from_lkg})" if self._from_lkg else ""
            message = (lkg + note) if lkg else note[2:]
            stage = failure.stage.value if failure else ""
            return replace(filled, status=Readiness.DEGRADED, stage=stage, message=message)
        return filled

    def _publish(self) -> None:
        status = self.status()
        if self._snapshot is None:
            stage = f" (last failure at stage {status.stage})" if status.stage else ""
            self._service.unavailable_reason = f"the kernel has no verified policy snapshot{stage}"
        self._on_state()
        SNAPSHOT_AGE.set(max(0.0, status.updated_at - status.verified_at) if status.verified_at else 0)
        self._report_failure()
        self._report_stale(status)
        self._store("write kernel status", lambda: write_kernel_status(self._r, self._settings.namespace, status))

    def _report_failure(self) -> None:
        failure = self._failure
        if failure == self._reported:
            return
        self._reported = failure
        if failure is None:
            log.info("policy reload recovered: sources verified again")
            return
        RELOAD_FAILURES.labels(stage=failure.stage.value).inc()
        if self._snapshot is not None:
            serving = f"still serving {self._snapshot.snapshot_id}"
        else:
            lkg = f" ({self._lkg_problem})" if self._lkg_problem else ""
            serving = f"no policy loaded{lkg}: every decision is DENY POLICY_UNAVAILABLE"
        stage = failure.stage.value
        message = f"kernel {self.kernel_id}: policy reload failed at {stage}: {failure.message}; {serving}"
        log.error("%s", message)
        self._alert(RELOAD_FAILED, message)

    def _report_stale(self, status: KernelStatus) -> None:
        stale = status.stage == Stage.MAX_AGE.value
        if stale and not self._stale_reported:
            log.error("%s", status.message)
            self._alert(POLICY_STALE, f"kernel {self.kernel_id}: {status.message}")
        self._stale_reported = stale

    def _alert(self, code: str, message: str) -> None:
        packet = alert_packet(self._settings.sender_id, code=code, message=message)
        self._store(f"publish alert {code}", lambda: publish_alert(self._r, self._settings.namespace, packet))

    def _store(self, action: str, write: Callable[[], None]) -> None:
        """Run a Redis write; warn once when Redis stops answering, and once when it is back."""
        try:
            write()
        except StoreError as exc:
            if self._store_ok:
                log.warning("kernel cannot %s (will keep trying): %s", action, exc)
            self._store_ok = False
            return
        if not self._store_ok:
            log.info("kernel reaches Redis again")
        self._store_ok = True

    # --- the thread ----------------------------------------------------------------------------

    def start(self) -> PolicyReloader:
        if self._thread is not None:
            raise RuntimeError("PolicyReloader already started")
        self._thread = threading.Thread(target=self._run, name=f"coretex-policy-reload-{self.kernel_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, remove this kernel's status record and release Redis."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("policy reload thread did not stop within %.1fs", timeout)
        try:
            clear_kernel_status(self._r, self._settings.namespace, self.kernel_id)
        except StoreError:
            pass  # expires by itself
        self._r.close()

    def _run(self) -> None:
        pubsub: PubSub | None = None
        while not self._stop.is_set():
            if pubsub is None and self._sources.channel is not None:
                pubsub = self._subscribe(self._sources.channel)
            try:
                self.step()
            except Exception:  # the loop must outlive any bug: the current snapshot keeps serving
                log.exception("policy reload step failed")
            pubsub = self._wait(pubsub)
        _close(pubsub)

    def _subscribe(self, channel: str) -> PubSub | None:
        try:
            with redis_errors(f"subscribe to {channel}"):
                pubsub: PubSub = self._r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                try:
                    pubsub.subscribe(channel)
                except redis.RedisError:
                    _close(pubsub)
                    raise
            return pubsub
        except StoreError:
            return None  # polling still notices changes; subscribing is retried next wake-up

    def _wait(self, pubsub: PubSub | None) -> PubSub | None:
        """Until a change is announced, the poll interval passes or stop() is called."""
        remaining = self._settings.policy_poll_s
        while remaining > 0 and not self._stop.is_set():
            step = min(_SLICE_S, remaining)
            if pubsub is None:
                self._stop.wait(step)
            else:
                try:
                    if pubsub.get_message(timeout=step) is not None:
                        return pubsub
                except (redis.RedisError, OSError, ValueError):
                    _close(pubsub)
                    pubsub = None
            remaining -= step
        return pubsub


def _fingerprint(sources: Sequence[PolicySource], key_bytes: bytes) -> str:
    parts = [hashlib.sha256(key_bytes).hexdigest()]
    parts += [json.dumps([s.name, s.kind.value, s.sha256, s.signature]) for s in sources]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _close(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except (redis.RedisError, OSError):
            log.debug("closing the policy pub/sub failed", exc_info=True)

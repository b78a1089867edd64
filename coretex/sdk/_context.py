"""What a handler receives for one job."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coretex.errors import CoretexError
from coretex.model.job import JobMeta
from coretex.secrets import redact, redact_text


class JobCancelledError(CoretexError):
    """Raised by :meth:`JobContext.raise_if_cancelled` once the job was cancelled."""

    code = "cancelled"


ArtifactWriter = Callable[[bytes, str, str, Mapping[str, str]], str]
"""(content, content_type, retention, labels) -> artifact pointer URI."""

_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/yaml")


@dataclass(frozen=True)
class JobContext:
    job_id: str
    topic: str
    trace_id: str
    input: Any
    """The job input, already read from its ctx: pointer."""
    meta: JobMeta
    redaction_level: str = "standard"
    """How hard evidence is scrubbed before it is stored: ``none``, ``standard`` or ``strict``."""
    write_artifact: ArtifactWriter | None = field(default=None, repr=False)
    artifact_ptrs: list[str] = field(default_factory=list)
    """Pointers of the artifacts this job stored, reported in its JobResult."""
    report_progress: Callable[[int, str], None] | None = field(default=None, repr=False)
    renew_lease: Callable[[], None] | None = field(default=None, repr=False)
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set within one heartbeat of a cancel; long handlers check it (or call ``raise_if_cancelled``)."""
    dry_run: bool = False
    """A dry run: simulate and report what would be done, with no external side effects."""

    def progress(self, percent: int, message: str = "") -> None:
        """Report how far the job got (0-100); shown on the job and sent as a CAP JobProgress."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0..100, got {percent}")
        if self.report_progress is not None:
            self.report_progress(percent, redact_text(message, self.redaction_level))

    def heartbeat(self) -> None:
        """Renew the job's lease now (it is also renewed automatically every third of the lease)."""
        if self.renew_lease is not None:
            self.renew_lease()

    def raise_if_cancelled(self) -> None:
        """Stop here if the job was cancelled: nothing the handler returns afterwards is applied."""
        if self.cancelled.is_set():
            raise JobCancelledError(f"job {self.job_id} was cancelled")

    def redact(self, value: Any) -> Any:
        """``value`` with secrets replaced by ``[REDACTED:<kind>]`` markers, at the job's level."""
        return redact(value, self.redaction_level)

    def put_artifact(
        self,
        content: bytes | str,
        *,
        content_type: str = "text/plain",
        retention: str = "standard",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Store evidence (logs, diffs, reports) and return its ``redis://art:`` pointer.

        Text content (``str``, or bytes of a text/JSON/YAML content type) is redacted at the job's
        redaction level first; binary content is stored as given.
        """
        if self.write_artifact is None:
            raise RuntimeError("this JobContext has no artifact store (run the handler through a coretex Worker)")
        if isinstance(content, str) or content_type.startswith(_TEXT_TYPES):
            text = content if isinstance(content, str) else content.decode("utf-8", errors="replace")
            content = redact_text(text, self.redaction_level).encode("utf-8")
        pointer = self.write_artifact(content, content_type, retention, dict(labels or {}))
        self.artifact_ptrs.append(pointer)
        return pointer

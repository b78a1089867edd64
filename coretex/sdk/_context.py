"""What a handler receives for one job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coretex.model.job import JobMeta


@dataclass(frozen=True)
class JobContext:
    job_id: str
    topic: str
    trace_id: str
    input: Any
    """The job input, already read from its ctx: pointer."""
    meta: JobMeta

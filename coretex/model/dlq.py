"""Dead-letter entries: the CAP DLQ format (error_code, error_message, last_state, attempts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DLQEntry:
    job_id: str
    topic: str
    tenant_id: str
    error_code: str
    error_message: str
    last_state: str
    attempts: int
    created_at: float

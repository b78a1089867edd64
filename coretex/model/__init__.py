"""Plain data of the domain: jobs, their lifecycle, DLQ entries. Pure: no I/O, no adapters."""

from coretex.model.dlq import DLQEntry
from coretex.model.job import (
    TERMINAL_STATES,
    JobMeta,
    JobRecord,
    JobState,
    can_transition,
    sources_of,
)

__all__ = [
    "TERMINAL_STATES",
    "DLQEntry",
    "JobMeta",
    "JobRecord",
    "JobState",
    "can_transition",
    "sources_of",
]

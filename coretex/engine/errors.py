"""Errors of the workflow engine (leaves of :mod:`coretex.errors`)."""

from __future__ import annotations

from coretex.errors import CoretexError


class RunRefusedError(CoretexError):
    """The kernel did not allow the run to start (DENY, or an approval a run start cannot wait for)."""

    code = "run_denied"


class ApprovalRefusedError(CoretexError):
    """This approver may not decide this step (role, separation of duties, not waiting, twice)."""

    code = "approval_refused"


class StepNotWaitingError(CoretexError):
    """The approval step is not waiting for a decision (pending, decided, or its run ended)."""

    code = "not_waiting"

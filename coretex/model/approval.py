"""Human approvals of jobs the policy parked with REQUIRE_APPROVAL.

An approval is bound to what was decided: the hash of the job's request and the policy snapshot
that asked for it. Approving after either changed is refused, so an approval can never carry a
job (or a policy) that the approver did not see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from coretex.model.canonical import canonical_json, sha256_hex


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Approval:
    job_id: str
    tenant_id: str
    status: ApprovalStatus
    rule_id: str
    reason: str
    policy_snapshot: str
    request_hash: str
    requested_by: str
    """The job's actor: separation of duties forbids them to approve it."""
    requested_at: float
    decided_by: str = ""
    decided_at: float = 0.0
    note: str = ""


def request_hash(topic: str, tenant_id: str, meta: dict[str, Any], input_sha256: str) -> str:
    """sha256 over the canonical form of everything the policy decided on, input content included."""
    return sha256_hex(canonical_json({"topic": topic, "tenant": tenant_id, "meta": meta, "input_sha256": input_sha256}))

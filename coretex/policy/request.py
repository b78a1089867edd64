"""What rules match on: the policy-relevant facts of one job, independent of the wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SECRETS_LABEL = "secrets_present"
"""Label whose value ``true`` (any case) says the job carries secrets."""
SECRETS_RISK_TAG = "secrets"
"""Risk tag that says the job carries secrets."""
PRIORITIES = ("interactive", "batch", "critical")
"""Values ``PolicyRequest.priority`` takes besides ``""`` (CAP ``JobPriority`` 1..3, lower-cased)."""


@dataclass(frozen=True, kw_only=True)
class PolicyRequest:
    """One job as the policy engine sees it. Only ``topic`` is required; the rest default to empty."""

    job_id: str = ""
    """Job under evaluation (reported, never matched on)."""
    topic: str
    """Target topic, e.g. ``job.echo``."""
    tenant: str = ""
    """Tenant id; ``""`` never matches a rule that lists tenants."""
    actor_id: str = ""
    """Who asked (principal / actor id)."""
    actor_type: str = ""
    """``human``, ``service`` or ``""`` when unknown."""
    capability: str = ""
    """Capability label the job claims."""
    risk_tags: tuple[str, ...] = ()
    """Risk tags declared on the job."""
    requires: tuple[str, ...] = ()
    """Capabilities the executing worker must have."""
    pack_id: str = ""
    """Pack the job belongs to, if any."""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Job labels (read-only view)."""
    priority: str = ""
    """``interactive``, ``batch``, ``critical`` or ``""`` when unspecified (CAP ``JobPriority``)."""
    estimated_cost: float = 0.0
    """Caller's cost estimate (0 when not given)."""
    secrets_present: bool = field(init=False, compare=False)
    """Derived: label ``secrets_present=true`` or risk tag ``secrets``."""

    def __post_init__(self) -> None:
        # Freeze the containers too, so a request cannot change while it is being evaluated.
        object.__setattr__(self, "risk_tags", tuple(self.risk_tags))
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        secrets = self.labels.get(SECRETS_LABEL, "").lower() == "true" or SECRETS_RISK_TAG in self.risk_tags
        object.__setattr__(self, "secrets_present", secrets)

    def as_cel(self) -> dict[str, Any]:
        """The plain values a ``when`` expression sees as ``request`` (see :mod:`coretex.policy.when`)."""
        return {
            "job_id": self.job_id,
            "topic": self.topic,
            "tenant": self.tenant,
            "actor_id": self.actor_id,
            "actor_type": self.actor_type,
            "capability": self.capability,
            "risk_tags": list(self.risk_tags),
            "requires": list(self.requires),
            "pack_id": self.pack_id,
            "labels": dict(self.labels),
            "secrets_present": self.secrets_present,
            "priority": self.priority,
            "estimated_cost": float(self.estimated_cost),
        }


REQUEST_FIELDS = frozenset(PolicyRequest(topic="").as_cel())
"""Names a ``when`` expression may read as ``request.<name>``."""

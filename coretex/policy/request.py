"""What rules match on: the policy-relevant facts of one job, independent of the wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


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

    def __post_init__(self) -> None:
        # Freeze the containers too, so a request cannot change while it is being evaluated.
        object.__setattr__(self, "risk_tags", tuple(self.risk_tags))
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

"""CAP ``safety.proto`` messages <-> :mod:`coretex.policy` values (no I/O, no gRPC server).

Constraints on the wire (CAP ``PolicyConstraints``) have no "unset" for scalars and lists and no
network or filesystem mode, so the mapping is (constraints_from_wire inverts it exactly):

  budgets / diff maxima     None <-> 0 (bundles cannot say 0)
  tools / commands          None (no restriction) <-> []; () (nothing allowed) <-> [WIRE_NOTHING_ALLOWED]
  sandbox.network           none -> isolated=true, network_allowlist=[]; egress-allowlist -> the hosts;
                            any -> [WIRE_ANY_DESTINATION]; unset -> [] with isolated=false
  sandbox.fs                ro -> WIRE_WHOLE_FS in fs_read_only, fs_read_write = the only writable paths;
                            rw -> fs_read_write = [WIRE_WHOLE_FS]; unset -> neither
  redaction_level           None <-> ""; an unknown level from a peer reads as strict (fail closed)

Sub-messages are only set when they carry something, so "no constraints" is an unset field.
"""

from __future__ import annotations

from collections.abc import Iterable

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.policy import (
    Budgets,
    Constraints,
    Decision,
    DecisionKind,
    DiffLimits,
    FsMode,
    Network,
    PolicyRequest,
    RedactionLevel,
    Remediation,
    Sandbox,
)

_WIRE_DECISION: dict[DecisionKind, safety_pb2.DecisionType] = {
    DecisionKind.ALLOW: safety_pb2.DECISION_TYPE_ALLOW,
    DecisionKind.DENY: safety_pb2.DECISION_TYPE_DENY,
    DecisionKind.REQUIRE_APPROVAL: safety_pb2.DECISION_TYPE_REQUIRE_HUMAN,
    DecisionKind.THROTTLE: safety_pb2.DECISION_TYPE_THROTTLE,
    DecisionKind.ALLOW_WITH_CONSTRAINTS: safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS,
}
_ACTOR_TYPES: dict[int, str] = {
    job_pb2.ACTOR_TYPE_HUMAN: "human",
    job_pb2.ACTOR_TYPE_SERVICE: "service",
}

Request = safety_pb2.PolicyCheckRequest
Response = safety_pb2.PolicyCheckResponse

WIRE_NOTHING_ALLOWED = "<none>"
"""The one entry of an allowlist that allows nothing (an empty repeated field means "unset")."""
WIRE_ANY_DESTINATION = "*"
"""``network_allowlist`` entry for ``network: any``."""
WIRE_WHOLE_FS = "/"
"""Path entry that stands for the whole filesystem (``fs: ro`` / ``fs: rw``)."""

_WIRE_PRIORITY: dict[int, str] = {
    job_pb2.JOB_PRIORITY_INTERACTIVE: "interactive",
    job_pb2.JOB_PRIORITY_BATCH: "batch",
    job_pb2.JOB_PRIORITY_CRITICAL: "critical",
}


def policy_request_from_wire(msg: Request) -> PolicyRequest:
    """CAP ``PolicyCheckRequest`` -> :class:`PolicyRequest`.

    The tenant is ``tenant``, else ``meta.tenant_id``; the actor is ``meta.actor_id``, else
    ``principal_id``; labels are ``meta.labels`` overlaid with the request's own ``labels``;
    ``priority`` is the lower-cased ``JobPriority`` name (``""`` when unspecified).
    """
    meta = msg.meta
    labels = dict(meta.labels)
    labels.update(msg.labels)
    return PolicyRequest(
        job_id=msg.job_id,
        topic=msg.topic,
        tenant=msg.tenant or meta.tenant_id,
        actor_id=meta.actor_id or msg.principal_id,
        actor_type=_ACTOR_TYPES.get(meta.actor_type, ""),
        capability=meta.capability,
        risk_tags=tuple(meta.risk_tags),
        requires=tuple(meta.requires),
        pack_id=meta.pack_id,
        labels=labels,
        priority=_WIRE_PRIORITY.get(msg.priority, ""),
        estimated_cost=msg.estimated_cost,
    )


def _allowlist_to_wire(items: tuple[str, ...] | None) -> list[str]:
    if items is None:
        return []
    return list(items) if items else [WIRE_NOTHING_ALLOWED]


def _allowlist_from_wire(items: Iterable[str]) -> tuple[str, ...] | None:
    listed = list(items)
    return tuple(item for item in listed if item != WIRE_NOTHING_ALLOWED) if listed else None


def _sandbox_to_wire(sandbox: Sandbox) -> safety_pb2.SandboxProfile:
    if sandbox.network is Network.EGRESS_ALLOWLIST:
        network = list(sandbox.allowlist)
    else:
        network = [WIRE_ANY_DESTINATION] if sandbox.network is Network.ANY else []
    read_only = list(sandbox.read_only_paths)
    read_write: list[str] = []
    if sandbox.fs is FsMode.RO:
        read_only.append(WIRE_WHOLE_FS)
        read_write = list(sandbox.read_write_paths or ())
    elif sandbox.fs is FsMode.RW:
        read_write = [WIRE_WHOLE_FS]
    return safety_pb2.SandboxProfile(
        isolated=sandbox.isolated, network_allowlist=network, fs_read_only=read_only, fs_read_write=read_write
    )


def _sandbox_from_wire(msg: safety_pb2.SandboxProfile) -> Sandbox:
    hosts = list(msg.network_allowlist)
    if WIRE_ANY_DESTINATION in hosts:
        network: Network | None = Network.ANY
    elif hosts:
        network = Network.EGRESS_ALLOWLIST
    else:
        network = Network.NONE if msg.isolated else None
    read_only = [path for path in msg.fs_read_only if path != WIRE_WHOLE_FS]
    read_write = [path for path in msg.fs_read_write if path != WIRE_WHOLE_FS]
    fs: FsMode | None = None
    if WIRE_WHOLE_FS in msg.fs_read_only or read_write:  # listed writable paths limit writes: fail closed
        fs = FsMode.RO
    elif WIRE_WHOLE_FS in msg.fs_read_write:
        fs = FsMode.RW
    return Sandbox(
        isolated=msg.isolated,
        network=network,
        allowlist=tuple(hosts) if network is Network.EGRESS_ALLOWLIST else (),
        fs=fs,
        read_only_paths=tuple(read_only),
        read_write_paths=tuple(read_write) if fs is FsMode.RO else None,
    )


def constraints_to_wire(constraints: Constraints) -> safety_pb2.PolicyConstraints:
    """:class:`Constraints` -> CAP ``PolicyConstraints`` (mapping in the comment above)."""
    level = constraints.redaction_level
    msg = safety_pb2.PolicyConstraints(redaction_level=level.value if level is not None else "")
    budgets = constraints.budgets
    if budgets != Budgets():
        msg.budgets.CopyFrom(
            safety_pb2.BudgetConstraints(
                max_runtime_ms=budgets.max_runtime_ms or 0,
                max_retries=budgets.max_retries or 0,
                max_artifact_bytes=budgets.max_artifact_bytes or 0,
                max_concurrent_jobs=budgets.max_concurrent_jobs or 0,
            )
        )
    if constraints.sandbox != Sandbox():
        msg.sandbox.CopyFrom(_sandbox_to_wire(constraints.sandbox))
    if constraints.tools is not None or constraints.commands is not None:
        msg.toolchain.CopyFrom(
            safety_pb2.ToolchainConstraints(
                allowed_tools=_allowlist_to_wire(constraints.tools),
                allowed_commands=_allowlist_to_wire(constraints.commands),
            )
        )
    diff = constraints.diff
    if diff != DiffLimits():
        msg.diff.CopyFrom(
            safety_pb2.DiffConstraints(
                max_files=diff.max_files or 0, max_lines=diff.max_lines or 0, deny_path_globs=list(diff.deny_paths)
            )
        )
    return msg


def constraints_from_wire(msg: safety_pb2.PolicyConstraints) -> Constraints:
    """CAP ``PolicyConstraints`` -> :class:`Constraints` (the inverse of :func:`constraints_to_wire`)."""
    budgets, diff = msg.budgets, msg.diff
    level = msg.redaction_level
    try:
        redaction = RedactionLevel(level) if level else None
    except ValueError:
        redaction = RedactionLevel.STRICT  # a level we do not know: the strictest we do
    return Constraints(
        budgets=Budgets(
            max_runtime_ms=budgets.max_runtime_ms or None,
            max_retries=budgets.max_retries or None,
            max_artifact_bytes=budgets.max_artifact_bytes or None,
            max_concurrent_jobs=budgets.max_concurrent_jobs or None,
        ),
        sandbox=_sandbox_from_wire(msg.sandbox),
        tools=_allowlist_from_wire(msg.toolchain.allowed_tools),
        commands=_allowlist_from_wire(msg.toolchain.allowed_commands),
        diff=DiffLimits(
            max_files=diff.max_files or None, max_lines=diff.max_lines or None, deny_paths=tuple(diff.deny_path_globs)
        ),
        redaction_level=redaction,
    )


def remediation_to_wire(remediation: Remediation) -> safety_pb2.PolicyRemediation:
    return safety_pb2.PolicyRemediation(
        id=remediation.id,
        title=remediation.title,
        summary=remediation.summary,
        replacement_topic=remediation.replacement_topic,
        replacement_capability=remediation.replacement_capability,
        add_labels=dict(remediation.add_labels),
        remove_labels=list(remediation.remove_labels),
    )


def response_from_decision(decision: Decision, reason: str | None = None) -> Response:
    """:class:`Decision` -> CAP ``PolicyCheckResponse`` (``reason`` overrides the decision's).

    ``approval_required`` is set for require_approval (wire ``REQUIRE_HUMAN``); constraints are sent
    whenever the decision has any (allow_with_constraints always; require_approval and throttle
    carry the limits that apply once the job runs); remediations go with deny and
    require_approval. Warnings (advisory matches, ``when`` errors) are appended to the reason,
    CAP having no field for them.
    """
    text = decision.reason if reason is None else reason
    if decision.warnings and reason is None:
        text += f" (warnings: {' | '.join(decision.warnings)})"
    response = Response(
        decision=_WIRE_DECISION.get(decision.kind, safety_pb2.DECISION_TYPE_DENY),
        reason=text,
        rule_id=decision.rule_id,
        policy_snapshot=decision.snapshot,
        approval_required=decision.approval_required,
        remediations=[remediation_to_wire(r) for r in decision.remediations],
    )
    if not decision.constraints.is_empty:
        response.constraints.CopyFrom(constraints_to_wire(decision.constraints))
    return response


"""Our .proto files match the CAP v2 spec tables (section 2 and 3) field for field.

The expected tables below are transcribed from /work/shared/cap-v2-spec.md in the spec's own
vocabulary (type names, labels ``singular`` / ``repeated`` / ``map`` / ``oneof payload``), and
compared with the descriptors of the generated stubs. Every message must match exactly: no missing,
extra, renumbered or retyped field.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from coretex.agent.v1 import alert_pb2, buspacket_pb2, heartbeat_pb2, job_pb2, safety_pb2

PACKAGE = "coretex.agent.v1"

Field = tuple[int, str, str]

S, R, M, P = "singular", "repeated", "map", "oneof payload"
MAP = "map<string,string>"

MESSAGES: dict[str, dict[str, Field]] = {
    "BusPacket": {
        "trace_id": (1, "string", S),
        "sender_id": (2, "string", S),
        "created_at": (3, "google.protobuf.Timestamp", S),
        "protocol_version": (4, "int32", S),
        "job_request": (10, "JobRequest", P),
        "job_result": (11, "JobResult", P),
        "heartbeat": (12, "Heartbeat", P),
        "alert": (13, "SystemAlert", P),
        "signature": (14, "bytes", S),
        "job_progress": (15, "JobProgress", P),
        "job_cancel": (16, "JobCancel", P),
    },
    "ContextHints": {
        "max_input_tokens": (1, "int32", S),
        "allow_summarization": (2, "bool", S),
        "allow_retrieval": (3, "bool", S),
        "tags": (4, "string", R),
    },
    "Budget": {
        "max_input_tokens": (1, "int64", S),
        "max_output_tokens": (2, "int64", S),
        "max_total_tokens": (3, "int64", S),
        "deadline_ms": (4, "int64", S),
    },
    "JobMetadata": {
        "tenant_id": (1, "string", S),
        "actor_id": (2, "string", S),
        "actor_type": (3, "ActorType", S),
        "idempotency_key": (4, "string", S),
        "capability": (5, "string", S),
        "risk_tags": (6, "string", R),
        "requires": (7, "string", R),
        "pack_id": (8, "string", S),
        "labels": (9, MAP, M),
    },
    "JobRequest": {
        "job_id": (1, "string", S),
        "topic": (2, "string", S),
        "priority": (3, "JobPriority", S),
        "context_ptr": (4, "string", S),
        "adapter_id": (5, "string", S),
        "env": (6, MAP, M),
        "parent_job_id": (7, "string", S),
        "workflow_id": (8, "string", S),
        "step_index": (9, "int32", S),
        "memory_id": (10, "string", S),
        "context_hints": (11, "ContextHints", S),
        "budget": (12, "Budget", S),
        "tenant_id": (13, "string", S),
        "principal_id": (14, "string", S),
        "labels": (15, MAP, M),
        "meta": (16, "JobMetadata", S),
    },
    "JobResult": {
        "job_id": (1, "string", S),
        "status": (2, "JobStatus", S),
        "result_ptr": (3, "string", S),
        "worker_id": (4, "string", S),
        "execution_ms": (5, "int64", S),
        "error_code": (6, "string", S),
        "error_message": (7, "string", S),
        "artifact_ptrs": (8, "string", R),
    },
    "JobProgress": {
        "job_id": (1, "string", S),
        "step_id": (2, "string", S),
        "percent": (3, "int32", S),
        "message": (4, "string", S),
        "result_ptr": (5, "string", S),
        "artifact_ptrs": (6, "string", R),
        "status": (7, "JobStatus", S),
    },
    "JobCancel": {
        "job_id": (1, "string", S),
        "reason": (2, "string", S),
        "requested_by": (3, "string", S),
    },
    "Heartbeat": {
        "worker_id": (1, "string", S),
        "region": (2, "string", S),
        "type": (3, "string", S),
        "cpu_load": (4, "float", S),
        "gpu_utilization": (5, "float", S),
        "active_jobs": (6, "int32", S),
        "capabilities": (7, "string", R),
        "pool": (11, "string", S),
        "max_parallel_jobs": (12, "int32", S),
        "labels": (13, MAP, M),
    },
    "SystemAlert": {
        "level": (1, "string", S),
        "message": (2, "string", S),
        "component": (3, "string", S),
        "code": (4, "string", S),
    },
    "PolicyCheckRequest": {
        "job_id": (1, "string", S),
        "topic": (2, "string", S),
        "tenant": (3, "string", S),
        "priority": (4, "JobPriority", S),
        "estimated_cost": (5, "double", S),
        "budget": (6, "Budget", S),
        "principal_id": (7, "string", S),
        "labels": (8, MAP, M),
        "memory_id": (9, "string", S),
        "effective_config": (10, "bytes", S),
        "meta": (11, "JobMetadata", S),
    },
    "PolicyCheckResponse": {
        "decision": (1, "DecisionType", S),
        "reason": (2, "string", S),
        "redacted_context_ptr": (3, "string", S),
        "policy_snapshot": (4, "string", S),
        "rule_id": (5, "string", S),
        "constraints": (6, "PolicyConstraints", S),
        "approval_required": (7, "bool", S),
        "approval_ref": (8, "string", S),
        "remediations": (9, "PolicyRemediation", R),
    },
    "PolicyConstraints": {
        "budgets": (1, "BudgetConstraints", S),
        "sandbox": (2, "SandboxProfile", S),
        "toolchain": (3, "ToolchainConstraints", S),
        "diff": (4, "DiffConstraints", S),
        "redaction_level": (5, "string", S),
    },
    "BudgetConstraints": {
        "max_runtime_ms": (1, "int64", S),
        "max_retries": (2, "int32", S),
        "max_artifact_bytes": (3, "int64", S),
        "max_concurrent_jobs": (4, "int32", S),
    },
    "SandboxProfile": {
        "isolated": (1, "bool", S),
        "network_allowlist": (2, "string", R),
        "fs_read_only": (3, "string", R),
        "fs_read_write": (4, "string", R),
    },
    "ToolchainConstraints": {
        "allowed_tools": (1, "string", R),
        "allowed_commands": (2, "string", R),
    },
    "DiffConstraints": {
        "max_files": (1, "int32", S),
        "max_lines": (2, "int32", S),
        "deny_path_globs": (3, "string", R),
    },
    "PolicyRemediation": {
        "id": (1, "string", S),
        "title": (2, "string", S),
        "summary": (3, "string", S),
        "replacement_topic": (4, "string", S),
        "replacement_capability": (5, "string", S),
        "add_labels": (6, MAP, M),
        "remove_labels": (7, "string", R),
    },
    "ListSnapshotsRequest": {},
    "ListSnapshotsResponse": {
        "snapshots": (1, "string", R),
    },
}

ENUMS: dict[str, dict[str, int]] = {
    "JobPriority": {
        "JOB_PRIORITY_UNSPECIFIED": 0,
        "JOB_PRIORITY_INTERACTIVE": 1,
        "JOB_PRIORITY_BATCH": 2,
        "JOB_PRIORITY_CRITICAL": 3,
    },
    "JobStatus": {
        "JOB_STATUS_UNSPECIFIED": 0,
        "JOB_STATUS_PENDING": 1,
        "JOB_STATUS_SCHEDULED": 2,
        "JOB_STATUS_DISPATCHED": 3,
        "JOB_STATUS_RUNNING": 4,
        "JOB_STATUS_SUCCEEDED": 5,
        "JOB_STATUS_FAILED": 6,
        "JOB_STATUS_CANCELLED": 7,
        "JOB_STATUS_DENIED": 8,
        "JOB_STATUS_TIMEOUT": 9,
    },
    "ActorType": {
        "ACTOR_TYPE_UNSPECIFIED": 0,
        "ACTOR_TYPE_HUMAN": 1,
        "ACTOR_TYPE_SERVICE": 2,
    },
    "DecisionType": {
        "DECISION_TYPE_UNSPECIFIED": 0,
        "DECISION_TYPE_ALLOW": 1,
        "DECISION_TYPE_DENY": 2,
        "DECISION_TYPE_REQUIRE_HUMAN": 3,
        "DECISION_TYPE_THROTTLE": 4,
        "DECISION_TYPE_ALLOW_WITH_CONSTRAINTS": 5,
    },
}

# Spec 1.3: which file defines what.
FILES: dict[str, tuple[FileDescriptor, set[str]]] = {
    "job": (
        job_pb2.DESCRIPTOR,
        set(
            "JobPriority JobStatus ActorType ContextHints Budget JobMetadata"
            " JobRequest JobResult JobProgress JobCancel".split()
        ),
    ),
    "heartbeat": (heartbeat_pb2.DESCRIPTOR, {"Heartbeat"}),
    "alert": (alert_pb2.DESCRIPTOR, {"SystemAlert"}),
    "buspacket": (buspacket_pb2.DESCRIPTOR, {"BusPacket"}),
    "safety": (
        safety_pb2.DESCRIPTOR,
        set(
            "DecisionType PolicyCheckRequest BudgetConstraints SandboxProfile ToolchainConstraints"
            " DiffConstraints PolicyConstraints PolicyRemediation PolicyCheckResponse"
            " ListSnapshotsRequest ListSnapshotsResponse".split()
        ),
    ),
}

RPCS = {
    "Check": ("PolicyCheckRequest", "PolicyCheckResponse"),
    "Evaluate": ("PolicyCheckRequest", "PolicyCheckResponse"),
    "Explain": ("PolicyCheckRequest", "PolicyCheckResponse"),
    "Simulate": ("PolicyCheckRequest", "PolicyCheckResponse"),
    "ListSnapshots": ("ListSnapshotsRequest", "ListSnapshotsResponse"),
}

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


def short_name(full_name: str) -> str:
    """Spec vocabulary: our own types without the package prefix, well-known types in full."""
    return full_name.removeprefix(PACKAGE + ".")


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def field_type(field: FieldDescriptor) -> str:
    message, enum = field.message_type, field.enum_type
    if message is not None and is_map(field):
        key, value = (field_type(entry) for entry in message.fields)
        return f"map<{key},{value}>"
    if message is not None:
        return short_name(message.full_name)
    if enum is not None:
        return short_name(enum.full_name)
    return _SCALARS.get(field.type, f"unexpected type {field.type}")


def field_label(field: FieldDescriptor) -> str:
    if is_map(field):
        return M
    if field.is_repeated:
        return R
    if field.containing_oneof is not None:
        return f"oneof {field.containing_oneof.name}"
    return S


def describe(message: Descriptor) -> dict[str, Field]:
    return {field.name: (field.number, field_type(field), field_label(field)) for field in message.fields}


def all_messages() -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}
    for descriptor, _ in FILES.values():
        found.update(descriptor.message_types_by_name)
    return found


def all_enums() -> dict[str, EnumDescriptor]:
    found: dict[str, EnumDescriptor] = {}
    for descriptor, _ in FILES.values():
        found.update(descriptor.enum_types_by_name)
    return found


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_fields_match_the_spec(name: str) -> None:
    message = all_messages()[name]
    assert message.full_name == f"{PACKAGE}.{name}"
    assert describe(message) == MESSAGES[name]


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_match_the_spec(name: str) -> None:
    enum = all_enums()[name]
    assert enum.full_name == f"{PACKAGE}.{name}"
    assert {value.name: value.number for value in enum.values} == ENUMS[name]


def test_no_message_or_enum_outside_the_spec() -> None:
    assert set(all_messages()) == set(MESSAGES)
    assert set(all_enums()) == set(ENUMS)


@pytest.mark.parametrize("stem", sorted(FILES))
def test_file_layout_and_package(stem: str) -> None:
    descriptor, defines = FILES[stem]
    assert descriptor.name == f"coretex/agent/v1/{stem}.proto"
    assert descriptor.package == PACKAGE
    source = descriptor_pb2.FileDescriptorProto.FromString(descriptor.serialized_pb)
    assert source.syntax == "proto3"
    optional = [f"{m.name}.{f.name}" for m in source.message_type for f in m.field if f.proto3_optional]
    assert not optional, f"spec 1.3: no field uses the optional keyword, found {optional}"
    assert set(descriptor.message_types_by_name) | set(descriptor.enum_types_by_name) == defines


def test_only_payload_oneof_on_bus_packet() -> None:
    oneofs = buspacket_pb2.BusPacket.DESCRIPTOR.oneofs_by_name
    assert list(oneofs) == ["payload"]
    assert [field.name for field in oneofs["payload"].fields] == [
        "job_request",
        "job_result",
        "heartbeat",
        "alert",
        "job_progress",
        "job_cancel",
    ]


def test_safety_kernel_service() -> None:
    services = safety_pb2.DESCRIPTOR.services_by_name
    assert list(services) == ["SafetyKernel"]
    service = services["SafetyKernel"]
    assert service.full_name == f"{PACKAGE}.SafetyKernel"
    methods = {
        method.name: (short_name(method.input_type.full_name), short_name(method.output_type.full_name))
        for method in service.methods
    }
    assert methods == RPCS
    for method in service.methods:
        assert not method.client_streaming and not method.server_streaming, method.name


@pytest.mark.parametrize("module", [alert_pb2, buspacket_pb2, heartbeat_pb2, job_pb2])
def test_no_other_services(module: object) -> None:
    assert not module.DESCRIPTOR.services_by_name  # type: ignore[attr-defined]

"""The CAP v2 wire contract: BusPacket envelopes and pointer URIs.

Purity rule: this package is pure — no I/O, no clocks beyond stamping ``created_at`` when asked,
and it must never import redis, celery, kombu, flask or grpc (directly or through another Coretex
module). Adapters (bus, store, kernel) call into it, never the other way round. The import-linter
contracts in pyproject.toml and tests/unit/test_purity.py enforce the rule.

The generated protobuf messages live in ``coretex.agent.v1`` (from ``proto/`` via
``tools/genproto.py``); this package adds the rules the .proto files cannot express.
"""

from coretex.protocol.envelope import (
    CONTENT_TYPE,
    PAYLOAD_KINDS,
    PROTOCOL_VERSION,
    decode_packet,
    encode_packet,
    new_packet,
    payload_kind,
)
from coretex.protocol.pointers import (
    ArtifactPointer,
    ContextPointer,
    Pointer,
    ResultPointer,
    parse_artifact_pointer,
    parse_context_pointer,
    parse_pointer,
    parse_result_pointer,
)

__all__ = [
    "CONTENT_TYPE",
    "PAYLOAD_KINDS",
    "PROTOCOL_VERSION",
    "ArtifactPointer",
    "ContextPointer",
    "Pointer",
    "ResultPointer",
    "decode_packet",
    "encode_packet",
    "new_packet",
    "parse_artifact_pointer",
    "parse_context_pointer",
    "parse_pointer",
    "parse_result_pointer",
    "payload_kind",
]

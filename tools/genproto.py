"""Regenerate the CAP v2 Python stubs from coretex/protocol/proto.

Usage: python tools/genproto.py [OUT_DIR]   (default: the repository root)

The generated modules land in OUT_DIR/coretex/agent/v1 so that their absolute imports
(`from coretex.agent.v1 import job_pb2`) resolve inside our own package. The test
tests/unit/test_protocol_codegen.py regenerates into a temporary folder and fails on any drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "coretex" / "protocol" / "proto"
PROTO_FILES = ("alert", "buspacket", "heartbeat", "job", "safety")


def generate(out_dir: Path) -> None:
    target = out_dir / "coretex" / "agent" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    for package_dir in (target.parent, target):
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated CAP v2 protobuf code. Do not edit; run tools/genproto.py."""\n')
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"coretex/agent/v1/{name}.proto" for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

"""The committed CAP stubs in coretex/agent/v1 are exactly what tools/genproto.py generates.

Run ``python tools/genproto.py`` after editing a .proto file, and commit the result.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path("coretex") / "agent"
GENERATED_PATTERNS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def stub_files(root: Path) -> set[Path]:
    """Generated files under ``root/coretex/agent``, relative to ``root``."""
    v1 = root / PACKAGE / "v1"
    found = {path for pattern in GENERATED_PATTERNS for path in v1.glob(pattern)}
    found |= {root / PACKAGE / "__init__.py", v1 / "__init__.py"}
    return {path.relative_to(root) for path in found if path.exists()}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the stubs, generated once for this module."""
    out_dir = tmp_path_factory.mktemp("genproto")
    completed = subprocess.run(
        [sys.executable, "tools/genproto.py", str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"genproto failed:\n{completed.stdout}\n{completed.stderr}"
    return out_dir


def test_committed_stubs_match_regenerated_stubs(regenerated: Path) -> None:
    generated = stub_files(regenerated)
    assert len(generated) == 5 * len(GENERATED_PATTERNS) + 2, f"unexpected genproto output: {sorted(generated)}"

    missing = sorted(str(path) for path in generated - stub_files(ROOT))
    drifted = sorted(
        str(path)
        for path in generated
        if (ROOT / path).exists() and (ROOT / path).read_bytes() != (regenerated / path).read_bytes()
    )

    assert not missing, f"generated but not committed (run tools/genproto.py): {missing}"
    assert not drifted, f"committed stubs differ from tools/genproto.py output: {drifted}"


def test_no_stale_stubs_are_committed(regenerated: Path) -> None:
    stale = sorted(str(path) for path in stub_files(ROOT) - stub_files(regenerated))
    assert not stale, f"committed stubs with no .proto source (delete them): {stale}"

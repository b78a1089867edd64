"""The pure core loads no I/O library: importing it must not pull in redis, celery, kombu, flask or grpc.

Checked in a fresh interpreter, because this test process has long since imported all of them
(tests/conftest.py needs redis). pyproject.toml holds the matching import-linter contracts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("coretex.protocol", "coretex.model", "coretex.workflow", "coretex.policy", "coretex.secrets")
FORBIDDEN = ("redis", "celery", "kombu", "flask", "flask_smorest", "grpc")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
forbidden = {forbidden!r}
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in forbidden)
print(json.dumps(loaded))
"""


def existing_pure_packages() -> list[str]:
    """The pure packages present on disk; some are still being written and may not exist yet."""
    paths = {name: ROOT / Path(*name.split(".")) for name in PURE_PACKAGES}
    return [name for name, path in paths.items() if path.is_dir() or path.with_suffix(".py").is_file()]


def forbidden_modules_after_importing(packages: list[str]) -> list[str]:
    """Import ``packages`` in a fresh interpreter and return the forbidden modules it ended up with."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE.format(forbidden=FORBIDDEN), *packages],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"importing {packages} failed:\n{completed.stderr}"
    loaded: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return loaded


def test_protocol_package_exists() -> None:
    assert "coretex.protocol" in existing_pure_packages()


def test_probe_detects_a_forbidden_import() -> None:
    # Guards the guard: importing an adapter-side library must be reported.
    assert "kombu" in forbidden_modules_after_importing(["kombu"])


@pytest.mark.parametrize("package", existing_pure_packages())
def test_pure_package_imports_no_io_library(package: str) -> None:
    loaded = forbidden_modules_after_importing([package])
    offenders = sorted({module.partition(".")[0] for module in loaded})
    assert not offenders, f"importing {package} loaded {', '.join(offenders)} (modules: {', '.join(loaded[:10])})"

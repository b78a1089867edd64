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
PURE_PACKAGES = ("coretex.protocol", "coretex.model", "coretex.workflow", "coretex.policy")
FORBIDDEN = ("redis", "celery", "kombu", "flask", "flask_smorest", "grpc")

# Prints, for each forbidden top-level module that got imported, the first module of ours that
# was loaded before it, as a hint to where the import came from.
_PROBE = """
import importlib, json, sys
forbidden = {forbidden!r}
loaded = {{}}
for name in {packages!r}:
    before = set(sys.modules)
    importlib.import_module(name)
    for module in set(sys.modules) - before:
        top = module.partition(".")[0]
        if top in forbidden:
            loaded.setdefault(top, []).append(module)
    for top in loaded:
        loaded[top] = sorted(loaded[top])
    if loaded:
        print(json.dumps({{"package": name, "loaded": loaded}}))
        break
else:
    print(json.dumps(None))
"""


def existing_pure_packages() -> list[str]:
    """The pure packages present on disk; some are still being written and may not exist yet."""
    return [name for name in PURE_PACKAGES if (ROOT / Path(*name.split("."))).is_dir()]


def test_protocol_package_exists() -> None:
    assert "coretex.protocol" in existing_pure_packages()


@pytest.mark.parametrize("package", existing_pure_packages())
def test_pure_package_imports_no_io_library(package: str) -> None:
    probe = _PROBE.format(forbidden=FORBIDDEN, packages=(package,))
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"importing {package} failed:\n{completed.stderr}"
    offence = json.loads(completed.stdout.strip().splitlines()[-1])
    assert offence is None, (
        f"importing {offence['package']} loaded forbidden modules "
        + "; ".join(f"{top} ({', '.join(mods[:5])})" for top, mods in sorted(offence["loaded"].items()))
    )


def test_all_pure_packages_together_import_no_io_library() -> None:
    probe = (
        "import importlib, sys\n"
        f"for name in {existing_pure_packages()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, f"importing the pure core failed:\n{completed.stderr}"
    offending = completed.stdout.strip().splitlines()[-1]
    assert offending == "[]", f"the pure core loaded forbidden modules: {offending}"

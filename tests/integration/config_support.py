"""The shipped config with one more pool, for suites that run their own pack workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def config_with_pool(target: Path, pool: str, topic: str) -> Path:
    """Copy ``config/`` to ``target`` and route ``topic`` (a name or glob) to a new ``pool``."""
    shutil.copytree(REPO / "config", target)
    pools = yaml.safe_load((target / "pools.yaml").read_text())
    pools["pools"][pool] = {"requires": []}
    pools["topics"][topic] = pool
    (target / "pools.yaml").write_text(yaml.safe_dump(pools))
    return target

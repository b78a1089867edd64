"""The platform base config: the YAML files of ``config/``, one file per section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from coretex.config.errors import ConfigInvalidError
from coretex.config.sections import SECTIONS
from coretex.errors import ConfigError

_SUFFIXES = (".yaml", ".yml")


def read_base_files(config_dir: Path) -> dict[str, Any]:
    """``{section: content}`` from ``<config_dir>/<section>.yaml``; an empty file is an empty section.

    A YAML file named after no known section is refused rather than ignored, so a typo such as
    ``timeout.yaml`` cannot silently drop a whole section.
    """
    if not config_dir.is_dir():
        raise ConfigError(f"config directory {config_dir} does not exist")
    base: dict[str, Any] = {}
    for path in sorted(p for p in config_dir.iterdir() if p.suffix in _SUFFIXES and p.is_file()):
        section = path.stem
        if section not in SECTIONS:
            raise ConfigInvalidError(section, "/", f"unknown section file {path.name}", str(config_dir))
        if section in base:
            raise ConfigError(f"{config_dir}: section {section!r} is defined by more than one file")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        base[section] = {} if content is None else content
    return base

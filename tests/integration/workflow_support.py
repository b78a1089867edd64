"""What the workflow integration suites share: a stack of real processes and the engine's calls
a test makes (save a uniquely named workflow, start it, read its timeline, count handler runs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coretex.engine.engine import Engine
from coretex.services import Services
from coretex.testing import ProcessStack

TENANT = "acme"


@dataclass
class WorkflowStack:
    processes: ProcessStack
    services: Services
    tmp: Path

    @property
    def engine(self) -> Engine:
        return self.services.engine

    def save(self, document: dict[str, Any]) -> str:
        """Save ``document`` under a fresh id (tests share a namespace); return that id."""
        workflow_id = f"{document['id']}-{uuid.uuid4().hex[:6]}"
        self.engine.save_workflow(TENANT, {**document, "id": workflow_id}, saved_by="author")
        return workflow_id

    def start(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> str:
        workflow_id = self.save(document)
        return self.engine.start(TENANT, workflow_id, input if input is not None else {}, started_by="alice",
                                 **kwargs).run_id

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        return self.engine.runs.timeline(run_id, limit=10_000).entries

    def log(self, name: str) -> Path:
        """A fresh file for handlers to append to (they count their runs in it)."""
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"
        path.touch()
        return path


def lines(path: Path, prefix: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(prefix)] if path.exists() else []

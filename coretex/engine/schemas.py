"""Pin the registry schemas a workflow names when a run starts, so the run validates against the
versions it started with (and ``decide`` stays pure: it reads them from the run)."""

from __future__ import annotations

from typing import Any

from coretex.model.schema import parse_schema_ref
from coretex.store.schemas import SchemaStore
from coretex.workflow.definition import Workflow


def pin_schemas(workflow: Workflow, registry: SchemaStore) -> dict[str, Any]:
    """ref -> schema for every registry schema the workflow names, and every schema they ``$ref``.

    Keys are the names as the workflow and the schemas write them (``acme.x``, ``acme.x@2``,
    ``coretex:schema:acme.y@1``). Raises NotFoundError for a schema that is gone.
    """
    pinned: dict[str, Any] = {}
    todo = sorted(workflow.schema_ids())
    while todo:
        name = todo.pop().split("#", 1)[0]
        if name in pinned:
            continue
        ref = parse_schema_ref(name)
        registered = registry.get(ref.id, ref.version)
        pinned[name] = registered.schema
        todo.extend(registered.refs)
    return pinned

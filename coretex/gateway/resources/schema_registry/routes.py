"""Register JSON Schemas (a new immutable version per distinct content) and read them.

The registry is global to a deployment, not tenant-owned (see :mod:`coretex.store.schemas`):
every tenant reads and validates against the same schemas, so any authenticated key may read,
and registering needs ``admin`` or ``operator``. A registered version never changes; only which
version is the latest moves, and runs pin the versions they use when they start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView

from coretex.errors import NotFoundError
from coretex.gateway.auth import ADMIN, OPERATOR, READ_ROLES, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem, error_ref, problem_doc
from coretex.gateway.resources.schema_registry.schemas import (
    JsonSchemaDocument,
    RegisteredSchemaSchema,
    RegistrationSchema,
    SchemaSummarySchema,
    SchemaVersionsSchema,
    VersionArgsSchema,
)
from coretex.model.schema import InvalidSchemaIdError, SchemaRef, check_schema_id

REGISTRAR_ROLES = frozenset({ADMIN, OPERATOR})

blp = Blueprint("schemas", __name__, url_prefix="/api/v1/schemas", description="The JSON Schema registry")


@blp.route("")
class Schemas(MethodView):
    @blp.response(200, SchemaSummarySchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    def get(self) -> list[dict[str, Any]]:
        """Every registered schema id with its latest version, sorted by id."""
        require_role(READ_ROLES)
        return [{"id": s.id, "latest_version": s.latest_version} for s in current_services().schemas.list()]


@blp.route("/<schema_id>")
class OneSchema(MethodView):
    @blp.arguments(JsonSchemaDocument)
    @blp.response(201, RegistrationSchema, description="Registered as a new version")
    @blp.alt_response(200, schema=RegistrationSchema,
                      description="Unchanged: this content is already registered; its version is returned")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(409, **problem_doc("The registry's version or id limit is reached"))
    @blp.alt_response(413, response=error_ref(413))
    @blp.alt_response(422, **problem_doc("Not a valid Draft 2020-12 schema, a $ref that "
                                         "does not resolve, or a malformed id"))
    def post(self, schema: dict[str, Any], schema_id: str) -> tuple[dict[str, Any], int]:
        """Register the body (a JSON Schema object) as the next version of ``schema_id``."""
        require_role(REGISTRAR_ROLES)
        _check_id(schema_id)
        registration = current_services().schemas.register(schema_id, schema)
        view = {"id": registration.id, "version": registration.version, "sha256": registration.sha256,
                "uri": SchemaRef(registration.id, registration.version).uri, "created": registration.created}
        return view, 201 if registration.created else 200

    @blp.arguments(VersionArgsSchema, location="query")
    @blp.response(200, RegisteredSchemaSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, args: dict[str, Any], schema_id: str) -> dict[str, Any]:
        """One version of a schema (default: the latest)."""
        require_role(READ_ROLES)
        _known_id(schema_id)
        record = current_services().schemas.get(schema_id, args.get("version"))
        return {"id": record.id, "version": record.version, "uri": record.uri, "sha256": record.sha256,
                "size": record.size, "created_at": datetime.fromtimestamp(record.created_at, tz=UTC),
                "refs": list(record.refs), "schema": record.schema}


@blp.route("/<schema_id>/versions")
class SchemaVersions(MethodView):
    @blp.response(200, SchemaVersionsSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, schema_id: str) -> dict[str, Any]:
        """The versions a schema id holds."""
        require_role(READ_ROLES)
        _known_id(schema_id)
        return {"id": schema_id, "versions": current_services().schemas.versions(schema_id)}


def _check_id(schema_id: str) -> None:
    try:
        check_schema_id(schema_id)
    except InvalidSchemaIdError as exc:
        raise Problem(422, str(exc), code=exc.code, errors={"schema_id": [str(exc)]}) from exc


def _known_id(schema_id: str) -> None:
    """A malformed id names no schema: 404 like an unknown one."""
    try:
        check_schema_id(schema_id)
    except InvalidSchemaIdError as exc:
        raise NotFoundError(f"schema {schema_id!r} not found") from exc

"""Request and response bodies of ``/api/v1/schemas``."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from coretex.gateway.validators import storable_json


class JsonSchemaDocument(ma.Schema):
    """The body of a registration: a JSON Schema (Draft 2020-12) object, as is."""

    class Meta:
        unknown = ma.INCLUDE

    @ma.validates_schema(pass_original=True)
    def _storable(self, _data: dict[str, Any], original: Any, **_: Any) -> None:
        storable_json(original)


class VersionArgsSchema(ma.Schema):
    version = fields.Integer(validate=validate.Range(min=1), metadata={"description": "Default: the latest"})


class RegistrationSchema(ma.Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    uri = fields.String(required=True, metadata={"description": "coretex:schema:<id>@<version>, for $ref"})
    sha256 = fields.String(required=True, metadata={"description": "Of the schema's canonical JSON"})
    created = fields.Boolean(required=True, metadata={
        "description": "False (status 200) when this content was already registered as `version`"})


class RegisteredSchemaSchema(ma.Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    uri = fields.String(required=True)
    sha256 = fields.String(required=True)
    size = fields.Integer(required=True, metadata={"description": "Bytes of canonical JSON"})
    created_at = fields.DateTime(required=True)
    refs = fields.List(fields.String(), required=True,
                       metadata={"description": "The coretex:schema: URIs it $refs directly"})
    schema = fields.Dict(required=True)


class SchemaSummarySchema(ma.Schema):
    id = fields.String(required=True)
    latest_version = fields.Integer(required=True)


class SchemaVersionsSchema(ma.Schema):
    id = fields.String(required=True)
    versions = fields.List(fields.Integer(), required=True, metadata={"description": "Oldest first"})

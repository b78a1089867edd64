"""``create_app``: the only place where the gateway is wired together."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from coretex import __version__
from coretex.gateway.api import CoretexApi
from coretex.gateway.auth import KeyRing, authenticate
from coretex.gateway.context import install_services
from coretex.gateway.problems import Problem
from coretex.gateway.resources import (
    approvals,
    dlq,
    jobs,
    policy,
    runs,
    schema_registry,
    system,
    workers,
    workflows,
)
from coretex.services import Services
from coretex.settings import Settings, load_settings

API_PREFIX = "/api/v1"
ENVELOPE_BYTES = 64 * 1024
"""Room for topic, meta and JSON syntax on top of the largest accepted input."""
SWAGGER_UI_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
_PUBLIC_ENDPOINTS = frozenset({"api-docs.openapi_json", "api-docs.openapi_swagger_ui"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the gateway for ``settings`` (default: the environment) over ``services``."""
    if settings is None:
        settings = services.settings if services is not None else load_settings()
    services = services or Services(settings)
    app = Flask("coretex.gateway", static_folder=None)
    app.config.update(_flask_config(settings))
    install_services(app, services)
    _install_auth(app, KeyRing.from_file(settings.api_keys_file))
    api = CoretexApi(app)
    api.register_blueprint(system.blp)
    api.register_blueprint(jobs.blp)
    api.register_blueprint(approvals.blp)
    api.register_blueprint(dlq.blp)
    api.register_blueprint(workers.blp)
    api.register_blueprint(policy.blp)
    api.register_blueprint(workflows.blp)
    api.register_blueprint(runs.blp)
    api.register_blueprint(schema_registry.blp)
    return app


def _flask_config(settings: Settings) -> dict[str, Any]:
    return {
        # Larger bodies are refused with 413 before they are read, never truncated.
        "MAX_CONTENT_LENGTH": settings.max_input_bytes + ENVELOPE_BYTES,
        "API_TITLE": "Coretex",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.1.0",
        "OPENAPI_URL_PREFIX": "/api",
        "OPENAPI_JSON_PATH": "v1/openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": SWAGGER_UI_URL,
        "API_SPEC_OPTIONS": {
            "info": {"description": f"Coretex {__version__} control plane. Errors are RFC 9457 problems."},
            "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        },
    }


def _install_auth(app: Flask, keys: KeyRing) -> None:
    """Every ``/api/v1`` request needs a valid key, except the OpenAPI document itself."""

    @app.before_request
    def _authenticate() -> None:
        if not _under_api(request.path) or request.endpoint in _PUBLIC_ENDPOINTS:
            return
        authenticate(keys)
        if request.method in _BODY_METHODS and not request.is_json:
            raise Problem(415, "send the request body as application/json", code="unsupported_media_type")


def _under_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")

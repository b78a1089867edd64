"""flask-smorest ``Api`` whose errors are problems, in the responses and in the OpenAPI document."""

from __future__ import annotations

import http
from typing import Any

from flask import Response
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from werkzeug.exceptions import HTTPException

from coretex.errors import CoretexError
from coretex.gateway.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemSchema,
    problem_from_coretex,
    problem_from_http,
    problem_response,
)

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


class CoretexApi(Api):  # type: ignore[misc]  # flask_smorest is untyped
    """The one error handler of the gateway (:mod:`coretex.gateway.problems`)."""

    ERROR_SCHEMA = ProblemSchema

    def init_app(self, app: Any, *, spec_kwargs: dict[str, Any] | None = None) -> None:
        super().init_app(app, spec_kwargs=spec_kwargs)
        for name, scheme in SECURITY_SCHEMES.items():
            self.spec.components.security_scheme(name, scheme)

    def _register_error_handlers(self) -> None:
        self._app.register_error_handler(HTTPException, self.handle_http_exception)
        self._app.register_error_handler(Problem, problem_response)
        self._app.register_error_handler(CoretexError, _coretex_error)

    def handle_http_exception(self, error: HTTPException) -> Response:
        return problem_response(problem_from_http(error))

    def _register_responses(self) -> None:
        # Same components as flask-smorest's, but documented as application/problem+json:
        # the upstream method hard-codes the success content type for error bodies.
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "Any error (RFC 9457 problem)", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_CONTENT_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, default, lazy=True)


def _coretex_error(error: CoretexError) -> Response:
    return problem_response(problem_from_coretex(error))

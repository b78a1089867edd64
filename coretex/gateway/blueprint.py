"""flask-smorest's Blueprint with typed decorators, so routes stay checked under ``mypy --strict``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import flask_smorest

F = TypeVar("F", bound=Callable[..., Any])


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]  # flask_smorest is untyped
    def arguments(self, schema: Any, **kwargs: Any) -> Callable[[F], F]:
        return cast("Callable[[F], F]", super().arguments(schema, **kwargs))

    def response(self, status_code: int, schema: Any = None, **kwargs: Any) -> Callable[[F], F]:
        return cast("Callable[[F], F]", super().response(status_code, schema, **kwargs))

    def alt_response(self, status_code: int, response: Any = None, **kwargs: Any) -> Callable[[F], F]:
        return cast("Callable[[F], F]", super().alt_response(status_code, response, **kwargs))

    def doc(self, **kwargs: Any) -> Callable[[F], F]:
        return cast("Callable[[F], F]", super().doc(**kwargs))

"""Checks shared by the resources' request bodies: marshmallow validators and the input size limit."""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma

from coretex.gateway.problems import Problem
from coretex.model.canonical import canonical_json


def storable_json(value: Any) -> None:
    """Refuse what Python's parser lets through but JSON/UTF-8 storage cannot hold."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError as exc:  # NaN/Infinity; UnicodeEncodeError (lone surrogates) is a ValueError
        raise ma.ValidationError("must be plain JSON in valid Unicode (no NaN, Infinity or lone surrogates)") from exc


def refuse_oversized_input(value: Any, limit: int) -> None:
    """413 naming the ``input`` field when its canonical JSON is over ``limit`` bytes (never truncated)."""
    size = len(canonical_json(value).encode())
    if size > limit:
        raise Problem(413, f"input is {size} bytes of canonical JSON; the limit is {limit} bytes",
                      code="input_too_large", errors={"input": [f"larger than {limit} bytes"]})

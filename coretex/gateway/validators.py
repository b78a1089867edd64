"""Marshmallow validators shared by the resources' request bodies."""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma


def storable_json(value: Any) -> None:
    """Refuse what Python's parser lets through but JSON/UTF-8 storage cannot hold."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError as exc:  # NaN/Infinity; UnicodeEncodeError (lone surrogates) is a ValueError
        raise ma.ValidationError("must be plain JSON in valid Unicode (no NaN, Infinity or lone surrogates)") from exc

"""The one canonical JSON spelling Coretex hashes, signs, compares and stores.

Sorted keys, no spaces, UTF-8 kept, no NaN or Infinity (they are not JSON). Every content hash
(config snapshots, schemas, pointers, approvals, audit chains) is taken over this spelling, so
equal content always gives an equal hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON; ``ValueError``/``TypeError`` for anything that is not plain JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

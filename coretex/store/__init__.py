"""Redis adapters, one module per concept. Each documents its key layout at the top.

Every key starts with the deployment namespace (``CORETEX_NAMESPACE``, default ``coretex``).
Redis errors are translated to :class:`coretex.errors.StoreError` here, at the edge.
"""

from coretex.store._redis import connect, redis_errors
from coretex.store.dlq import DLQStore
from coretex.store.jobs import JobStore
from coretex.store.pointers import PointerStore

__all__ = ["DLQStore", "JobStore", "PointerStore", "connect", "redis_errors"]

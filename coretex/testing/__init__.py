"""Test helpers shipped for pack authors and used by Coretex's own suite.

- :class:`RedisServer` starts a throwaway ``redis-server`` on a free port.
- :class:`ProcessStack` runs Coretex processes (kernel, control worker, pack workers) in the
  background with their own logs, and stops their whole process groups.
- :func:`eventually` polls a condition with a deadline instead of sleeping.
- :func:`run_handler` runs a pack's handler like a worker would, against a real Redis.
"""

from coretex.processes import free_port, port_open, wait_for_port
from coretex.testing._handler import HandlerRun, run_handler
from coretex.testing._redis import RedisServer
from coretex.testing._stack import ProcessStack
from coretex.testing._wait import eventually

__all__ = [
    "HandlerRun",
    "ProcessStack",
    "RedisServer",
    "eventually",
    "free_port",
    "port_open",
    "run_handler",
    "wait_for_port",
]

"""Test helpers shipped for pack authors and used by Coretex's own suite.

- :class:`RedisServer` starts a throwaway ``redis-server`` on a free port.
- :func:`eventually` polls a condition with a deadline instead of sleeping.
- :func:`free_port` finds a free TCP port on loopback.
"""

from coretex.testing._process import free_port, wait_for_port
from coretex.testing._redis import RedisServer
from coretex.testing._wait import eventually

__all__ = ["RedisServer", "eventually", "free_port", "wait_for_port"]

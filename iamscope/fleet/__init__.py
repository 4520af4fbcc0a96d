"""Many workers, many replicas: revocations and invalidations shared through Redis.

``Fleet`` follows the fleet's Redis (``shared:`` in the config file) in a background
thread; ``Fleet.revocations`` is the revocation store the engine's cache reads, from
local memory only. Needs the optional ``redis`` package (``iamscope[fleet]``).
"""

from iamscope.fleet.settings import SharedSettings
from iamscope.fleet.state import Revocation, SharedRevocations
from iamscope.fleet.sync import Fleet, ProcessReport

__all__ = ["Fleet", "ProcessReport", "Revocation", "SharedRevocations", "SharedSettings"]

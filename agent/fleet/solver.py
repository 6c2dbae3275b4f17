"""HTTP-01 in a fleet: tokens presented here and published in Redis, so that the CA's
validation succeeds whichever host behind the load balancer it reaches."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import AgentError
from ..model import Challenge, Solver
from .cluster import RedisCluster

log = logging.getLogger(__name__)


class SharedSolver:
    """Presents tokens here (``inner``) and in Redis, for every other host's responder."""

    def __init__(self, inner: Solver, cluster: RedisCluster, ttl: float) -> None:
        self.inner = inner
        self.cluster = cluster
        self.ttl = ttl
        self._published: list[Challenge] = []

    def present(self, challenges: Sequence[Challenge]) -> None:
        self.inner.present(challenges)
        self.cluster.publish_tokens(challenges, self.ttl)
        self._published += challenges

    def cleanup(self) -> None:
        self.inner.cleanup()
        try:
            self.cluster.remove_tokens(self._published)
        except AgentError as err:  # they expire on their own
            log.warning("HTTP-01 tokens not removed from Redis: %s", err)
        self._published.clear()

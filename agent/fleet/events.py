"""The fleet's notifications: every host hears at once when another publishes a new version
of a certificate (Redis pub/sub), and reconnects with backoff when Redis goes away."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from ..policy.backoff import exponential
from .cluster import RedisCluster

log = logging.getLogger(__name__)

# Reconnection: 1 s, doubling, at most 30 s between attempts.
FIRST_RECONNECT = 1.0
MAX_RECONNECT = 30.0


def listen(
    cluster: RedisCluster,
    on_event: Callable[[str], None],
    on_connect: Callable[[], None],
    stop: threading.Event,
    on_down: Callable[[], None] | None = None,
) -> None:
    """Call ``on_event(name)`` for each new version published, until ``stop``.
    Reconnects with backoff; ``on_connect`` runs after each (re)subscription, so that
    whatever was published meanwhile is caught by a full check."""
    import redis

    failures, down_since = 0, None
    while not stop.is_set():
        pubsub = None
        try:
            pubsub = cluster.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(cluster.events_channel)
            if down_since is not None:
                log.warning("Redis at %s is back after %.0f s", cluster.settings.url,
                            time.monotonic() - down_since)  # fmt: skip
            down_since, failures = None, 0
            on_connect()
            while not stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    on_event(str(message["data"]))
        except redis.RedisError as err:
            if down_since is None:
                down_since = time.monotonic()
                if on_down is not None:
                    on_down()
                log.error("%s; certificates in service are kept; reconnecting",
                          cluster.describe(err))  # fmt: skip
            failures += 1
            stop.wait(exponential(failures, FIRST_RECONNECT, MAX_RECONNECT, 0.5, 0.0))
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    pubsub.close()

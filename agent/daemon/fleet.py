"""The daemon in a fleet: renew a certificate here as soon as another host publishes a new
version (pub/sub), and compare every version at (re)connection and every
``check_interval``, in case a message was missed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..config.cluster import ClusterConfig
from ..errors import AgentError
from ..fleet import events
from ..fleet.cluster import RedisCluster
from ..store.certs import Store

log = logging.getLogger(__name__)


class FleetWatch:
    def __init__(
        self,
        cluster: RedisCluster,
        settings: ClusterConfig,
        store: Store,
        names: Callable[[], list[str]],
        is_configured: Callable[[str], bool],
        on_new_version: Callable[[str], None],
        on_connection: Callable[[bool], None],
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.store = store
        self.names = names  # the certificates configured now
        self.is_configured = is_configured
        self.on_new_version = on_new_version
        self.on_connection = on_connection
        self.stop_event = threading.Event()

    def start(self) -> None:
        stop = self.stop_event

        def check_periodically() -> None:
            while not stop.wait(self.settings.check_interval):
                self.check()

        def on_connect() -> None:
            self.on_connection(True)
            self.check()

        listen_args = (self.cluster, self._on_event, on_connect, stop,
                       lambda: self.on_connection(False))  # fmt: skip
        threading.Thread(target=events.listen, args=listen_args, name="cluster-events",
                         daemon=True).start()  # fmt: skip
        threading.Thread(target=check_periodically, name="cluster-check", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()

    def _on_event(self, name: str) -> None:
        if self.is_configured(name):
            log.debug("%s: a new version was published in the cluster", name)
            self.on_new_version(name)

    def check(self) -> None:
        """Hand over every certificate whose version in Redis differs from the one here."""
        try:
            shared = self.cluster.serials(self.names())
        except AgentError as err:
            log.warning("cluster check skipped: %s", err)
            return
        for name, serial in shared.items():
            record = self.store.record(name)
            if serial is not None and (record is None or record.serial != serial):
                self.on_new_version(name)

"""The account-bound ACME client of each configured CA, opened lazily, once per process,
and shared by the threads that order at once. A dry run talks to each CA's dry-run
directory (its staging directory) instead, with that directory's own account."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from ..config.types import DEFAULT_CA, AcmeConfig, Config
from ..errors import AccountError, AgentError, ConfigError
from ..model import RunContext
from ..store.certs import Store

if TYPE_CHECKING:
    from ..acme.client import AcmeClient
    from ..fleet.cluster import RedisCluster

log = logging.getLogger(__name__)


def dry_run_target(ca: AcmeConfig, allow_production: bool) -> AcmeConfig:
    """The CA a dry run talks to: its staging directory (Let's Encrypt's is known), or,
    only with ``allow_production``, the CA itself. Raises ConfigError otherwise, before
    any request: a dry run must never cost anything."""
    staging = ca.dry_run_directory
    if staging is not None:  # its own account: never with the production EAB credentials
        return dataclasses.replace(
            ca, directory=staging, staging_directory=None, eab_kid=ca.staging_eab_kid,
            eab_hmac_key=None, eab_hmac_key_file=ca.staging_eab_hmac_key_file,
        )  # fmt: skip
    if allow_production:
        return ca
    raise ConfigError(
        f"{ca.label} staging_directory: not set, so `renew --dry-run` would order real "
        f"certificates from {ca.directory} (at some CAs a charge per domain); set "
        f"staging_directory in {ca.label}, or pass --dry-run --allow-production"
    )


def name_the_ca(err: AgentError, ca: AcmeConfig, several: bool) -> AgentError:
    """``err`` (from the protocol layer, which knows no table names) speaking of ``ca``'s
    own table, and, with several CAs configured, saying which CA it came from."""
    text = str(err)
    if ca.name != DEFAULT_CA:
        text = text.replace("[acme]", ca.label)
    if several and not text.startswith(ca.label):
        text = f"{ca.label}: {text}"
    err.args = (text,)
    return err


class Clients:
    """One client per CA name; a registration that failed is not retried for every
    certificate of the same run."""

    def __init__(
        self,
        config: Config,
        store: Store,
        cluster: RedisCluster | None,
        *,
        dry_run: bool = False,
        allow_production: bool = False,
        observer: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.cluster = cluster
        self.dry_run = dry_run
        self.allow_production = allow_production
        self.observer = observer
        self._clients: dict[str, AcmeClient] = {}
        self._lock = threading.Lock()
        # Each CA's max_concurrent_orders: orders worked on at once there.
        self._slots = {n: threading.BoundedSemaphore(c.max_concurrent_orders)
                       for n, c in config.cas.items()}  # fmt: skip
        self.stopping = threading.Event()  # the run is being interrupted

    @contextlib.contextmanager
    def slot(self, ca: AcmeConfig) -> Iterator[None]:
        """Held while an order is worked on at ``ca``; waiting for one ends when the run
        is being stopped (SIGTERM): no new order starts then."""
        slots = self._slots[ca.name]
        while not slots.acquire(timeout=0.2):
            if self.stopping.is_set():
                raise AgentError(f"{ca.label}: stopping; no new order started")
        try:
            if self.stopping.is_set():
                raise AgentError(f"{ca.label}: stopping; no new order started")
            yield
        finally:
            slots.release()

    def target(self, ca: AcmeConfig) -> AcmeConfig:
        """The CA as this run talks to it (a dry run: its staging directory)."""
        return dry_run_target(ca, self.allow_production) if self.dry_run else ca

    def get(self, ca: AcmeConfig, run: RunContext | None = None) -> AcmeClient:
        if run is not None and ca.name in run.client_errors:
            raise run.client_errors[ca.name]
        with self._lock:
            if run is not None and ca.name in run.client_errors:  # failed while we waited
                raise run.client_errors[ca.name]
            client = self._clients.get(ca.name)
            if client is None:
                from .accounts import open_client

                # A dry run's staging account is this host's own, never the fleet's.
                cluster = None if self.dry_run else self.cluster
                try:
                    client = open_client(self.target(ca), self.store, cluster)
                except AgentError as err:
                    if run is not None:
                        run.client_errors[ca.name] = err
                    raise
                if self.observer is not None:
                    client.observer = self.observer
                self._clients[ca.name] = client
            return client

    def recover(self, ca: AcmeConfig, err: AccountError, run: RunContext) -> bool:
        """``ca`` lost the account (accountDoesNotExist; deactivated or revoked outside the
        agent, e.g. AWS ACM's RevokeAcmeAccount): set it aside and register a new one with
        the configured EAB credentials, once per run and CA (:func:`.accounts.forget_lost`).
        True: try again (another certificate of the run may have done it already)."""
        if err.problem_type != "accountDoesNotExist" or self.dry_run:
            return False
        if self.cluster is not None:
            return False  # the fleet's account: `account deactivate` on one host handles it
        from .accounts import forget_lost

        with self._lock:
            if ca.name in run.account_recovered:
                return True
            run.account_recovered.add(ca.name)
            client = self._clients.get(ca.name)
            if client is None or not forget_lost(self.store, client, err):
                return False
            del self._clients[ca.name]
            run.client_errors.pop(ca.name, None)
        return True


def measure_skew(client: AcmeClient, now: datetime) -> float | None:
    """Seconds this host's clock is ahead of the CA's now (a HEAD of newNonce)."""
    try:
        theirs = client.ca_time()
    except AgentError:
        return None
    return (now - theirs).total_seconds() if theirs is not None else None

"""Obtain one certificate from the first of its CAs that issues it: a failure at one
(unreachable after retries, a refusal, an issuance timeout, its account or its table)
tries the next in the same run; the next renewal starts again from the first. Once a CA
has issued the certificate, no other is asked (that would be a second order, and at some
CAs a second charge): the order is kept and downloaded by the next run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..config.cas import usable_cas
from ..config.types import AcmeConfig, CertificateConfig, Config
from ..errors import AccountError, AgentError, CAError, ConfigError, IssuanceError
from ..model import CertRecord, RunContext, Solver
from ..store.certs import Store
from .clients import Clients, measure_skew, name_the_ca
from .issuing import issuing_ca

if TYPE_CHECKING:
    from ..acme.client import AcmeClient
    from ..acme.issuer import Issued

log = logging.getLogger(__name__)


class Orderer:
    def __init__(
        self,
        config: Config,
        store: Store,
        clients: Clients,
        solvers: Callable[[], Solver],
        clock: Callable[[], datetime],
        dry_run: bool,
    ) -> None:
        self.config = config
        self.store = store
        self.clients = clients
        self.solvers = solvers
        self.clock = clock
        self.dry_run = dry_run

    def obtain(
        self, cert: CertificateConfig, current: CertRecord | None, run: RunContext
    ) -> tuple[Issued, AcmeConfig, AcmeClient, list[str]]:
        """The new certificate, the CA that issued it, its client, and the names of the
        CAs that failed before it."""
        cas = usable_cas(cert, self.config.cas)
        several = len(self.config.cas) > 1
        for i, ca in enumerate(cas):
            try:
                issued, client = self._obtain_at(ca, cas, cert, current, run)
                return issued, ca, client, [c.name for c in cas[:i]]
            except (CAError, IssuanceError, ConfigError) as err:
                name_the_ca(err, ca, several)
                if i + 1 == len(cas) or (isinstance(err, CAError) and err.order_issued):
                    raise
                log.warning("%s: %s; trying %s", cert.name, err, cas[i + 1].label,
                            extra={"cert": cert.name, "ca": ca.name,
                                   "error_type": "fallback"})  # fmt: skip
        raise ConfigError(f"{cert.field('ca')}: no CA accepts key type {cert.key_type}")

    def _obtain_at(
        self, ca: AcmeConfig, cas: list[AcmeConfig], cert: CertificateConfig,
        current: CertRecord | None, run: RunContext,
    ) -> tuple[Issued, AcmeClient]:  # fmt: skip
        """One CA's try (within its max_concurrent_orders); a lost account is set aside
        and replaced once, then tried again."""
        from .issue import Obtainer, order_request

        obtainer = None
        try:
            with self.clients.slot(ca):
                client = self.clients.get(ca, run)
                live = None if self.dry_run or current is None else self.store.current(cert.name)
                store = None if self.dry_run else self.store
                others = frozenset(c.directory for c in cas if c is not ca)
                here = current is not None and issuing_ca(
                    self.config.cas, self.store, cert, current) is ca  # fmt: skip
                obtainer = Obtainer(client, self.solvers(), ca.issuance_timeout, store,
                                    self.clock(), kept_for=others, issued_here=here)  # fmt: skip
                return obtainer.obtain(order_request(cert), current, live), client
        except AccountError as err:
            key = (ca.name, cert.name)
            if key in run.account_retried or not self.clients.recover(ca, err, run):
                raise
            run.account_retried.add(key)
            return self._obtain_at(ca, cas, cert, current, run)
        except CAError as err:
            if obtainer is not None and obtainer.issuer.issued is not None:
                err.order_issued = True  # issued there, not downloaded: no other CA now
            raise

    def skew(self, cert: CertificateConfig, run: RunContext) -> float | None:
        """This host's clock against the first CA's (None: not measured, e.g. that CA
        is unreachable: its order fails, or falls back, on its own)."""
        try:
            return measure_skew(self.clients.get(usable_cas(cert, self.config.cas)[0], run),
                                self.clock())  # fmt: skip
        except (AgentError, IndexError):
            return None

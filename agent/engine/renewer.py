"""Plan, then claim, then issue, install and deploy, for each certificate: the one engine
behind `renew`, the daemon's worker and the demo.

Per certificate (certmagic's ``obtainCert``): decide without a lock whether it is due
(most are not); if it is, take the right to renew it (a ``flock``, or the fleet's lease:
:mod:`.backend`), plan again under it (another process may have renewed meanwhile), order,
install, then deploy. One certificate's failure never stops the others; each outcome is
reported separately.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..config.cas import usable_cas
from ..config.types import CertificateConfig, Config
from ..errors import AccountError, AgentError, CAError, ConfigError
from ..model import (
    AriState,
    CertRecord,
    Outcome,
    Plan,
    RunContext,
    Solver,
    Status,
)
from ..store import ari
from ..store.attempts import record_attempt
from ..store.certs import Store
from ..store.prune import prune_archive
from ..store.skew import load_skew
from .backend import CertBackend, Claim, LocalBackend, open_backend
from .clients import Clients
from .deployment import deploy_pending, pending_deployments
from .hooks import run_post_hook, run_pre_hook
from .issuing import issuing_ca
from .ordering import Orderer
from .plan import Planner, check_clock

if TYPE_CHECKING:
    from ..acme.issuer import Issued
    from .metrics import Metrics

log = logging.getLogger(__name__)

# The CA's renewal information could not be fetched: ask again after this long.
ARI_RETRY = timedelta(hours=1)


class Renewer:
    """Runs the certificates of one configuration; the ACME client is opened lazily, once,
    and shared by threads (several certificates are ordered at once)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        solver_factory: Callable[[], Solver] | None = None,
        dry_run: bool = False,
        allow_production: bool = False,
        metrics: Metrics | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.metrics = metrics
        self.on_outcome = on_outcome
        self.store = Store(config.state_dir)
        self.clock = clock
        self.backend: CertBackend = open_backend(config, self.store)
        # A dry run shares nothing with the fleet: no lease, no version taken or published.
        self.claims: CertBackend = LocalBackend(self.store) if dry_run else self.backend
        self.planner = Planner(self.store, config.cas, clock, self._refresh_ari)
        observer = metrics.observe_request if metrics is not None else None
        self.clients = Clients(config, self.store, self.backend.cluster, dry_run=dry_run,
                               allow_production=allow_production, observer=observer)  # fmt: skip
        self._solver_factory = solver_factory
        self._solver_lock = threading.Lock()
        self.orders = Orderer(config, self.store, self.clients, lambda: self.solver_factory(),
                              clock, dry_run)  # fmt: skip
        self._ari_unreachable: set[str] = set()  # CAs whose renewalInfo could not be fetched

    @property
    def solver_factory(self) -> Callable[[], Solver]:
        """Built once (orders in several threads share its responder), lazily: http01 is
        imported only when a certificate is due."""
        with self._solver_lock:
            if self._solver_factory is None:
                from .solvers import solver_factory_for

                # A dry run's tokens are for this host's staging account: never the fleet's.
                self._solver_factory = solver_factory_for(self.config, self.claims)
            return self._solver_factory

    def check_dry_run(self, certs: Iterable[CertificateConfig]) -> None:
        """Before any request: every CA a dry run of ``certs`` may reach has a staging
        directory (or --allow-production was given); ConfigError (exit 2) otherwise."""
        for cert in certs:
            for ca in usable_cas(cert, self.config.cas):
                self.clients.target(ca)

    def select(self, names: Iterable[str]) -> list[CertificateConfig]:
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if self.config.certificate(n) is None]
        if unknown:
            names_ = [c.name for c in self.config.certificates]
            known = ", ".join(names_[:20]) + (", ..." if len(names_) > 20 else "") or "none"
            raise ConfigError(
                f"{self.config.path}: no certificate named {unknown[0]!r} (configured: {known})"
            )
        if not wanted:
            return list(self.config.certificates)
        chosen = set(wanted)
        return [c for c in self.config.certificates if c.name in chosen]

    def run(self, certs: list[CertificateConfig], *, force: bool = False) -> list[Outcome]:
        """Issue what is due, then deploy what is new (or failed to deploy before), then
        the post hook. The pre hook runs once, before the first issuance or deployment."""
        run = RunContext()
        outcomes = self._process_all(certs, run, force)
        if self.dry_run:
            return list(outcomes.values())  # nothing deployed, no hooks
        pending = pending_deployments(self.store, certs, outcomes)
        if pending:
            run_pre_hook(self.config.hooks, run)
            deployed = deploy_pending(self.store, pending, outcomes)
            for outcome in deployed.values():
                record_attempt(self.store, outcome, self.clock())
            outcomes.update(deployed)
        results = list(outcomes.values())
        if run.pre_hook_ran:
            run_post_hook(self.config.hooks, results)
        return results

    def _process_all(
        self, certs: list[CertificateConfig], run: RunContext, force: bool
    ) -> dict[str, Outcome]:
        """Up to ``max_concurrent_orders`` certificates at once (one thread each: the work is
        waiting on the CA); outcomes in configuration order."""
        done: dict[str, Outcome] = {}
        todo = certs
        due: set[str] = set()  # planned here and found due: planned again under the lock only
        prepared = self.dry_run or self.claims.prepare([c.name for c in certs])
        if not (force or self.dry_run or not prepared):
            # Most certificates are not due: decided in this thread, no pool, no lock.
            todo = []
            for cert in certs:
                quick = self._not_due(cert)
                if isinstance(quick, Outcome):
                    done[cert.name] = self._report(quick)
                else:
                    todo.append(cert)
                    if quick:
                        due.add(cert.name)
        # Each CA's own limit applies too (Orderer): the pool is the largest of them.
        limit = max(ca.max_concurrent_orders for ca in self.config.cas.values())
        workers = min(limit, len(todo))
        if workers <= 1:
            done.update((c.name, self.process(c, run, force, c.name in due)) for c in todo)
        else:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="order")
            try:
                futures = {
                    c.name: pool.submit(self.process, c, run, force, c.name in due) for c in todo
                }
                done.update((name, future.result()) for name, future in futures.items())
            except BaseException:  # interrupted (SIGTERM in the worker): no new order starts
                self.clients.stopping.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return {cert.name: done[cert.name] for cert in certs}

    def _verify_live(self, name: str) -> bool:
        """The live set is what was installed, or is repaired from the archive now (under
        the certificate's lock: another process may be installing). True: nothing intact
        is left, a new certificate must be ordered."""
        from ..store.integrity import suspect, verify

        if suspect(self.store, name) is None:
            return False
        with self.store.lock(name):
            repair = verify(self.store, name)
        if repair is None:
            return False
        if repair.version is not None:
            log.warning("%s: the certificate in service was damaged (%s); restored version %s "
                        "from the archive (no new order)", name, repair.damage, repair.version,
                        extra={"cert": name, "error_type": "damaged"})  # fmt: skip
        else:
            log.error("%s: the certificate in service was damaged (%s) and no archive version is "
                      "intact; ordering a new one", name, repair.damage,
                      extra={"cert": name, "error_type": "damaged"})  # fmt: skip
        return repair.version is None

    def _not_due(self, cert: CertificateConfig) -> Outcome | bool:
        """The "unchanged" outcome of a certificate that is not due; True when it is due;
        False at any doubt (the full path decides and reports)."""
        from ..store.integrity import suspect

        try:
            if suspect(self.store, cert.name) is not None:
                return False  # the full path checks it and repairs it
            current = self.store.record(cert.name)
            if current is None or self.claims.differs(cert.name, current):
                return False  # nothing here yet, or another version in the fleet
            if self.planner.needs_ari_request(cert, current):
                return False  # renewal information to fetch: in the pool, with the others
            return self.planner.unchanged_now(cert, current) or True
        except Exception:  # any doubt: the full path decides and reports
            return False

    def process(
        self, cert: CertificateConfig, run: RunContext, force: bool = False, due: bool = False
    ) -> Outcome:
        """One certificate (``due``: already planned and found due in this run)."""
        return self._report(self._process(cert, run, force or self.dry_run, due))

    def _report(self, outcome: Outcome) -> Outcome:
        if outcome.status != Status.UNCHANGED and not self.dry_run:
            record_attempt(self.store, outcome, self.clock())
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if self.metrics is not None:
            self.metrics.observe_outcome(outcome)
        return outcome

    def _process(self, cert: CertificateConfig, run: RunContext, force: bool, due: bool) -> Outcome:
        try:
            if not self.dry_run and self._verify_live(cert.name):
                force = True  # nothing intact to restore: a new certificate
            adopted = self.claims.adopt(cert)
            if not (force or due):  # the common case, nothing due: decided without a lock
                unchanged = self.planner.unchanged_now(cert, self.store.record(cert.name))
                if unchanged is not None:
                    return adopted or unchanged
            with self.claims.claim(cert) as claim:
                if claim.holder is not None:
                    return _waiting(cert, claim.holder.node, claim.holder.seconds_left)
                adopted = claim.adopted or adopted
                outcome = self._renew_claimed(cert, run, force and adopted is None, claim)
            if outcome.status == Status.UNCHANGED and adopted is not None:
                return adopted
            return outcome
        except AccountError as err:
            self._report(_failed(cert, err))  # status, check and the metrics show it
            raise  # the account cannot be used (e.g. EAB): stop, exit 2
        except ConfigError:
            raise  # the whole run is misconfigured: stop, exit 2
        except Exception as err:
            return _failed(cert, err)

    def _renew_claimed(
        self, cert: CertificateConfig, run: RunContext, force: bool, claim: Claim
    ) -> Outcome:
        """Holding the right to renew: plan again, order, publish, install."""
        current = self.store.record(cert.name)  # again: another process may have renewed
        plan = self.planner.plan(cert, current, force=force)
        if (unchanged := self.planner.unchanged(cert, current, plan)) is not None:
            return unchanged
        if not (force or self.dry_run) and (held := self.planner.held_back(cert, current, plan)):
            return held  # due again too soon: a loop in the making, not an order
        if not (force or self.dry_run) and load_skew(self.store) is not None:
            measured = self.orders.skew(cert, run)
            if (held := self.planner.held_for_clock(cert, measured)) is not None:
                return held
        log.info("%s: obtaining a certificate for %s (%s)", cert.name, ", ".join(cert.domains),
                 plan.reason, extra={"cert": cert.name, "domains": list(cert.domains)})  # fmt: skip
        if not self.dry_run:
            run_pre_hook(self.config.hooks, run)
        issued, ca, client, failed = self.orders.obtain(cert, current, run)
        if self.dry_run:
            serial = issued.chain.cert.serial_number
            detail = f"dry run: serial {serial:x} obtained from {ca.label} and discarded"
            return Outcome(cert.name, Status.DRY_RUN, detail, None,
                           issued.chain.cert.not_valid_after_utc, ca=ca.name,
                           fell_back=" ".join(failed))  # fmt: skip
        claim.publish(issued.key_pem, issued.chain, ca.name)
        outcome = self._install(cert, plan, issued, ca.name, client.account_uri or "")
        outcome = dataclasses.replace(outcome, fell_back=" ".join(failed))
        prune_archive(self.store, cert.name, cert.keep_versions)  # under the claim's lock
        check_clock(self.store, self.planner, cert, client.poster.last_date, self.clock())
        return outcome

    def _install(
        self, cert: CertificateConfig, plan: Plan, issued: Issued, ca: str, account: str
    ) -> Outcome:
        chain = issued.chain
        folder = self.store.install(cert.name, issued.key_pem, chain, account, self.clock(), ca)
        not_after = chain.cert.not_valid_after_utc
        record = self.store.record(cert.name)
        if record is not None:  # the new certificate's renewal information, while connected
            with contextlib.suppress(AgentError):
                self._refresh_ari(cert, record, self.clock())
        log.info("%s: installed serial %x from %s, valid until %s (%s)", cert.name,
                 chain.cert.serial_number, ca, not_after.isoformat(), folder,
                 extra={"cert": cert.name, "order": issued.order_url, "ca": ca})  # fmt: skip
        live = self.store.live_dir(cert.name)
        return Outcome(cert.name, Status.ISSUED, plan.reason or "", live, not_after, ca=ca)

    def _refresh_ari(
        self, cert: CertificateConfig, current: CertRecord, now: datetime
    ) -> AriState | None:
        """Ask the CA that issued ``cert``'s certificate in service for its renewal
        information and keep it (None: no answer)."""
        ca = issuing_ca(self.config.cas, self.store, cert, current)
        if ca is None:  # no CA to ask until it is renewed: planned from its lifetime
            unknown = AriState(current.serial, False, current.not_after)
            ari.save_state(self.store, cert.name, unknown)
            return None
        live = self.store.current(cert.name) if ca.name not in self._ari_unreachable else None
        if live is None:
            return self._postpone_ari(cert.name, current, now)
        from ..acme import ari as ari_request

        try:
            fresh = ari_request.fetch(self.clients.get(ca), live.cert, cert.name, now)
        except (ConfigError, AccountError):
            raise
        except AgentError as err:
            self._ari_unreachable.add(ca.name)  # once per process, not once per certificate
            log.warning("%s: cannot check renewal information at %s: %s", cert.name, ca.label,
                        err)  # fmt: skip
            return self._postpone_ari(cert.name, current, now)
        if not fresh.supported:
            ari.remember_ca_without_ari(self.store, ca.directory, fresh.next_check)
        ari.save_state(self.store, cert.name, fresh)
        return fresh

    def _postpone_ari(self, name: str, current: CertRecord, now: datetime) -> None:
        """No answer from the CA: what was known stays in use, and is asked for again in
        ARI_RETRY, not at once (else the daemon would start a worker for it every batch);
        nothing known: "supported, no window yet" (planned from the lifetime meanwhile, and
        asked again, by the daemon too)."""
        stale = ari.load_state(self.store, name)
        if stale is None or stale.serial != current.serial:  # nothing known: asked again later
            ari.save_state(self.store, name, AriState(current.serial, True, now + ARI_RETRY))
        elif stale.next_check <= now:
            ari.save_state(self.store, name, dataclasses.replace(stale, next_check=now + ARI_RETRY))
        return None


def _waiting(cert: CertificateConfig, node: str, seconds_left: float) -> Outcome:
    detail = (
        f"{node} is renewing it (its lease runs {seconds_left:.0f} s more); "
        "the new certificate arrives through the cluster"
    )
    log.info("%s: %s", cert.name, detail, extra={"cert": cert.name})
    return Outcome(cert.name, Status.WAITING, detail, retry_after=seconds_left + 1)


def _failed(cert: CertificateConfig, err: Exception) -> Outcome:
    if not isinstance(err, AgentError):  # a bug: one certificate's, not the run's
        log.debug("internal error", exc_info=True)
        err = AgentError(
            f"{cert.name}: internal error ({type(err).__name__}: {err}); please report "
            "it with the output of -vv"
        )
    kind = (err.problem_type if isinstance(err, CAError) else "") or type(err).__name__
    log.error("%s", err, extra={"cert": cert.name, "error_type": kind})
    wait = err.retry_after if isinstance(err, CAError) else None
    return Outcome(cert.name, Status.FAILED, str(err), retry_after=wait, error_type=kind)

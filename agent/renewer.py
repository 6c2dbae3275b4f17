"""Policy, then protocol, then store, then deploy, for each certificate. Shared by
``renew`` and the daemon.

One certificate's failure never stops the others; each outcome is reported separately.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import ari, commands, policy
from .attempts import record_attempt, revoked_serial
from .config import CertificateConfig, Config
from .errors import AccountError, AgentError, CAError, ConfigError
from .store import CertRecord, Store

if TYPE_CHECKING:
    from .cluster import RedisCluster
    from .http01 import Solver
    from .keys import IssuedChain
    from .metrics import Metrics
    from .protocol import AcmeClient

log = logging.getLogger(__name__)

# Outcomes that changed what is in service (for the post hook's ACME_AGENT_RENEWED).
CHANGED = ("issued", "deployed")
# Jitter differs between hosts (and certificates) but is stable across runs.
HOST = socket.gethostname()


@dataclass(frozen=True)
class Plan:
    reason: str | None  # why the certificate is due now; None when it is not
    next_time: datetime | None  # when it will be due (None when due now)
    why: str  # what decided next_time: lifetime ratio, renew_before, ARI
    ari: ari.AriState | None = None


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "issued", "deployed" (an earlier issuance), "unchanged" or "failed"
    detail: str
    live_dir: Path | None = None
    not_after: datetime | None = None
    next_time: datetime | None = None  # when the certificate is next due (if known)
    retry_after: float | None = None  # seconds the CA asked us to wait before trying again
    error_type: str = ""  # e.g. "rateLimited", "network", "IssuanceError" (metrics, JSON logs)
    # "unchanged": nothing can change before this (next renewal or ARI check); None: unknown
    recheck: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class _Run:
    """State of one run (one `renew`, or one daemon job): hooks and a failed account."""

    pre_hook_ran: bool = False
    client_error: AgentError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def facts(record: CertRecord | None) -> policy.CertFacts | None:
    if record is None:
        return None
    return policy.CertFacts(record.domains, record.key_type, record.not_before, record.not_after)


def solver_factory_for(config: Config, cluster: RedisCluster | None = None) -> Callable[[], Solver]:
    """A new solver per issuance; in standalone mode they share one responder. In a
    cluster, tokens also go to Redis, for the responders of the other hosts."""
    local = _local_solver_factory(config, cluster)
    if cluster is None:
        return local
    from .fleet import SharedSolver

    ttl = config.acme.issuance_timeout
    return lambda: SharedSolver(local(), cluster, ttl)


def _local_solver_factory(config: Config, cluster: RedisCluster | None) -> Callable[[], Solver]:
    from .http01 import NoSolver, StandaloneSession, StandaloneSolver, WebrootSolver

    http01 = config.http01
    if http01.mode == "webroot":
        assert http01.webroot is not None
        webroot = http01.webroot
        return lambda: WebrootSolver(webroot)
    if http01.mode == "none":
        return NoSolver
    tokens_dir = config.state_dir / "http01"
    fallback = cluster.lookup_token if cluster is not None else None
    session = StandaloneSession(http01.listen_host, http01.listen_port, tokens_dir, fallback)
    return lambda: StandaloneSolver(session)


class Renewer:
    """Runs the certificates of one configuration; the ACME client is opened lazily, once,
    and shared by threads (the daemon runs several certificates at once)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        solver_factory: Callable[[], Solver] | None = None,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.metrics = metrics
        self.on_outcome = on_outcome
        self.store = Store(config.state_dir)
        self.clock = clock
        self._solver_factory = solver_factory
        self._client: AcmeClient | None = None
        self._client_lock = threading.Lock()
        self._ari_unreachable = False
        self._cluster: RedisCluster | None = None
        # Fleet mode: the serial Redis holds for each certificate, read once per run.
        self.shared_serials: dict[str, str | None] = {}

    @property
    def cluster(self) -> RedisCluster | None:
        """The shared store of ``[cluster]`` (Redis), or None on a single host."""
        if self._cluster is None and self.config.cluster is not None:
            from .cluster import open_cluster

            self._cluster = open_cluster(self.config.cluster)
        return self._cluster

    @property
    def solver_factory(self) -> Callable[[], Solver]:
        if self._solver_factory is None:  # built lazily: http01 is imported only when needed
            self._solver_factory = solver_factory_for(self.config, self.cluster)
        return self._solver_factory

    def client(self, run: _Run | None = None) -> AcmeClient:
        """The account-bound client; protocol modules are imported only when needed.
        Within one run a failed registration is not retried for every certificate."""
        if run is not None and run.client_error is not None:
            raise run.client_error
        with self._client_lock:
            if self._client is None:
                from .account import open_client

                acme = self.config.acme
                if self.dry_run and acme.staging_directory:
                    acme = dataclasses.replace(acme, directory=acme.staging_directory)
                try:
                    self._client = open_client(acme, self.store, self.cluster)
                    if self.metrics is not None:
                        self._client.observer = self.metrics.observe_request
                except AgentError as err:
                    if run is not None:
                        run.client_error = err
                    raise
            return self._client

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
        from .deploy_runner import deploy_pending, pending_deployments

        run = _Run()
        outcomes = self._process_all(certs, run, force)
        if self.dry_run:
            return list(outcomes.values())  # nothing deployed, no hooks
        pending = pending_deployments(self.store, certs, outcomes)
        if pending:
            self.run_pre_hook(run)
            deployed = deploy_pending(self.store, pending, outcomes)
            for outcome in deployed.values():
                record_attempt(self.store, outcome, self.clock())
            outcomes.update(deployed)
        results = list(outcomes.values())
        if run.pre_hook_ran:
            self._run_post_hook(results)
        return results

    def _process_all(
        self, certs: list[CertificateConfig], run: _Run, force: bool
    ) -> dict[str, Outcome]:
        """Up to ``max_concurrent_orders`` certificates at once (one thread each: the work is
        waiting on the CA); outcomes in configuration order."""
        done: dict[str, Outcome] = {}
        todo = certs
        if self.cluster is not None and not self.dry_run:
            try:  # one round trip; Redis down: every certificate reports it on its own
                self.shared_serials = self.cluster.serials([c.name for c in certs])
            except AgentError:
                self.shared_serials = {}
        if not (force or self.dry_run or (self.cluster is not None and not self.shared_serials)):
            # Most certificates are not due: decided in this thread, no pool, no lock.
            todo = []
            for cert in certs:
                quick = self._not_due(cert)
                if quick is None:
                    todo.append(cert)
                else:
                    done[cert.name] = self._report(quick)
        workers = min(self.config.acme.max_concurrent_orders, len(todo))
        if workers <= 1:
            done.update((cert.name, self.process(cert, run, force=force)) for cert in todo)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="order") as pool:
                futures = {c.name: pool.submit(self.process, c, run, force=force) for c in todo}
                done.update((name, future.result()) for name, future in futures.items())
        return {cert.name: done[cert.name] for cert in certs}

    def _not_due(self, cert: CertificateConfig) -> Outcome | None:
        """The "unchanged" outcome of a certificate that is not due, or None (due, or any
        doubt: the full path decides and reports)."""
        try:
            current = self.store.record(cert.name)
            if current is None:
                return None
            if self.cluster is not None and self.shared_serials.get(cert.name) != current.serial:
                return None  # another version in Redis: the fleet path installs it
            now = self.clock()
            if ari.needs_refresh(ari.load_state(self.store, cert.name), current.serial, now) and (
                ari.ca_without_ari(self.store, self.config.acme.directory, now) is None
            ):
                return None  # renewal information to fetch: in the pool, with the others
            return self.unchanged_now(cert, current)
        except Exception:  # any doubt: the full path decides and reports
            return None

    def run_pre_hook(self, run: _Run) -> None:
        with run.lock:
            if run.pre_hook_ran:
                return
            run.pre_hook_ran = True
        hooks = self.config.hooks
        if hooks.pre:
            outcome = commands.run(hooks.pre, hooks.timeout)
            if not outcome.ok:
                log.error("pre hook failed (continuing): %s", outcome.summary)

    def _run_post_hook(self, outcomes: list[Outcome]) -> None:
        hooks = self.config.hooks
        if not hooks.post:
            return
        env = {
            "ACME_AGENT_RENEWED": " ".join(o.name for o in outcomes if o.status in CHANGED),
            "ACME_AGENT_FAILED": " ".join(o.name for o in outcomes if o.failed),
        }
        outcome = commands.run(hooks.post, hooks.timeout, env)
        if not outcome.ok:
            log.error("post hook failed: %s", outcome.summary)

    def process(self, cert: CertificateConfig, run: _Run, *, force: bool = False) -> Outcome:
        return self._report(self._process(cert, run, force or self.dry_run))

    def _report(self, outcome: Outcome) -> Outcome:
        if outcome.status != "unchanged" and not self.dry_run:
            record_attempt(self.store, outcome, self.clock())
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if self.metrics is not None:
            self.metrics.observe_outcome(outcome)
        return outcome

    def _process(self, cert: CertificateConfig, run: _Run, force: bool) -> Outcome:
        try:
            if self.config.cluster is not None and not self.dry_run:
                from . import fleet

                return fleet.process(self, cert, run, force)
            if not force:  # the common case, nothing due: decided without a lock
                unchanged = self.unchanged_now(cert, self.store.record(cert.name))
                if unchanged is not None:
                    return unchanged
            with self.store.lock(cert.name):
                return self._process_locked(cert, run, force)
        except (ConfigError, AccountError):
            raise  # the whole run is misconfigured (e.g. EAB): stop, exit 2
        except Exception as err:
            if not isinstance(err, AgentError):  # a bug: one certificate's, not the run's
                log.debug("internal error", exc_info=True)
                err = AgentError(
                    f"{cert.name}: internal error ({type(err).__name__}: {err}); please report "
                    "it with the output of -vv"
                )
            kind = err.problem_type if isinstance(err, CAError) else type(err).__name__
            log.error("%s", err, extra={"cert": cert.name, "error_type": kind})
            wait = err.retry_after if isinstance(err, CAError) else None
            return Outcome(cert.name, "failed", str(err), retry_after=wait, error_type=kind)

    def plan(
        self,
        cert: CertificateConfig,
        current: CertRecord | None,
        *,
        force: bool = False,
        offline: bool = False,
    ) -> Plan:
        """Is ``cert`` due now (and why), and if not, when? Uses ARI when the CA offers it
        (``offline``: only what is stored, no request to the CA)."""
        now = self.clock()
        current_facts = facts(current)
        ari_state = None
        if current is not None and not force:
            if offline:
                ari_state = ari.load_state(self.store, cert.name)
                if ari_state is not None and ari_state.serial != current.serial:
                    ari_state = None
            else:
                ari_state = self._ari_state(cert, current, now)
        window = ari_state.window() if ari_state else None
        serial = current.serial if current else ""
        rand = policy.stable_fraction(HOST, cert.name, serial)
        if current is not None and revoked_serial(self.store, cert.name) == serial:
            return Plan("the certificate in service was revoked", None, "revoked", ari_state)
        reason = policy.due_reason(
            cert.domains, cert.key_type, current_facts, now, force=force,
            renew_before=cert.renew_before, ari=window, rand=rand,
        )  # fmt: skip
        if reason is not None or current_facts is None:
            return Plan(reason, None, reason or "", ari_state)
        when, why = policy.next_renewal(
            current_facts, renew_before=cert.renew_before, ari=window, rand=rand
        )
        return Plan(None, when, why, ari_state)

    def _ari_state(
        self, cert: CertificateConfig, current: CertRecord, now: datetime
    ) -> ari.AriState | None:
        state = ari.load_state(self.store, cert.name)
        serial = current.serial
        if not ari.needs_refresh(state, serial, now):
            return state
        directory = self.config.acme.directory
        no_ari_until = ari.ca_without_ari(self.store, directory, now)
        if no_ari_until is not None:  # known: this CA has no renewalInfo; no request
            return ari.AriState(serial, False, no_ari_until)
        stale = state if state is not None and state.serial == serial else None
        if self._ari_unreachable:
            return stale
        live = self.store.current(cert.name)
        if live is None:
            return stale
        try:
            fresh = ari.fetch(self.client(), live.cert, cert.name, now)
        except (ConfigError, AccountError):
            raise
        except AgentError as err:
            self._ari_unreachable = True  # once per process, not once per certificate
            log.warning("%s: cannot check renewal information: %s", cert.name, err)
            return stale
        if not fresh.supported:
            ari.remember_ca_without_ari(self.store, directory, fresh.next_check)
        ari.save_state(self.store, cert.name, fresh)
        return fresh

    def unchanged_now(self, cert: CertificateConfig, current: CertRecord | None) -> Outcome | None:
        """The "unchanged" outcome when ``cert`` (``current`` in service) is not due now."""
        return self._unchanged(cert, current, self.plan(cert, current))

    def _unchanged(
        self, cert: CertificateConfig, current: CertRecord | None, plan: Plan
    ) -> Outcome | None:
        """The outcome when ``plan`` says ``cert`` is not due (None when it is)."""
        if plan.reason is not None or current is None or plan.next_time is None:
            return None
        detail = f"not due; next renewal {plan.next_time:%Y-%m-%d %H:%M} UTC ({plan.why})"
        live = self.store.live_dir(cert.name)
        recheck = min(plan.next_time, plan.ari.next_check) if plan.ari is not None else None
        return Outcome(
            cert.name, "unchanged", detail, live, current.not_after, plan.next_time,
            recheck=recheck,
        )  # fmt: skip

    def _process_locked(
        self,
        cert: CertificateConfig,
        run: _Run,
        force: bool,
        publish: Callable[[bytes, IssuedChain], None] | None = None,
    ) -> Outcome:
        """Under the certificate's lock: plan again, order, (``publish``,) install."""
        current = self.store.record(cert.name)  # again: another process may have renewed
        plan = self.plan(cert, current, force=force)
        if (unchanged := self._unchanged(cert, current, plan)) is not None:
            return unchanged
        live = self.store.live_dir(cert.name)
        log.info("%s: obtaining a certificate for %s (%s)", cert.name, ", ".join(cert.domains),
                 plan.reason, extra={"cert": cert.name, "domains": list(cert.domains)})  # fmt: skip
        from .issuer import Issuer

        if not self.dry_run:
            self.run_pre_hook(run)
        client = self.client(run)
        issuer = Issuer(client, self.solver_factory(), self.config.acme.issuance_timeout)
        replaces = None if self.dry_run or current is None else self._replaces(client, cert.name)
        issued = issuer.obtain(cert, replaces=replaces)
        if self.dry_run:
            detail = f"dry run: serial {issued.chain.cert.serial_number:x} obtained and discarded"
            return Outcome(
                cert.name, "dry-run", detail, None, issued.chain.cert.not_valid_after_utc
            )
        if publish is not None:  # to the cluster first: refused if our lease was lost
            publish(issued.key_pem, issued.chain)
        folder = self.store.install(cert.name, issued.key_pem, issued.chain)
        not_after = issued.chain.cert.not_valid_after_utc
        record = self.store.record(cert.name)
        if record is not None:  # the new certificate's renewal information, while connected
            with contextlib.suppress(AgentError):
                self._ari_state(cert, record, self.clock())
        log.info("%s: installed serial %x, valid until %s (%s)", cert.name,
                 issued.chain.cert.serial_number, not_after.isoformat(), folder,
                 extra={"cert": cert.name, "order": issued.order_url})  # fmt: skip
        return Outcome(cert.name, "issued", plan.reason, live, not_after)

    def _replaces(self, client: AcmeClient, name: str) -> str | None:
        """The ARI id of the certificate being replaced, when the CA speaks ARI."""
        if not client.supports_ari():
            return None
        from .protocol import ari_cert_id

        current = self.store.current(name)
        with contextlib.suppress(ValueError, LookupError):
            return ari_cert_id(current.cert) if current else None
        return None

"""Obtain one certificate: key, CSR, order, challenges, finalize, download, check.

No disk writes (the solver may write token files): the result is handed to the store.
The clock and the sleep are parameters so tests can drive the polling without waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import keys
from ..errors import AccountError, CAError, IssuanceError
from ..model import OrderRequest, PendingOrder, Solver
from ..policy.backoff import exponential
from ..policy.retry_after import retry_after_seconds
from .client import AcmeClient, Authorization
from .deadline import until
from .orders import OrderState, order_mismatch

log = logging.getLogger(__name__)

# Polling: start tight (a fast CA validates in a few milliseconds), double, stay polite:
# 3, 6, 12 ... ms reaches the 2 s cap after 11 polls (fewer requests over a CA's usual
# 1-5 s than 10 ms x 1.5, and 15-20 ms sooner against a fast one).
FIRST_POLL_INTERVAL = 0.003
MAX_POLL_INTERVAL = 2.0
# Never wait longer than this for one Retry-After, whatever the CA says.
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    chain: keys.IssuedChain
    order_url: str


class Poller:
    """Short, growing intervals; Retry-After honoured; never past the deadline."""

    def __init__(
        self,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.deadline = deadline
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.polls = 0

    def restart(self) -> None:
        """A new phase (e.g. after finalize): the state is likely to change soon again."""
        self.polls = 0

    def expired(self) -> bool:
        return self.clock() >= self.deadline

    def wait(self, retry_after: str | None = None) -> None:
        asked = retry_after_seconds(retry_after, self.wall())
        self.polls += 1
        interval = exponential(self.polls, FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL, 0.5, 0.0)
        delay = min(asked, MAX_RETRY_AFTER) if asked is not None else interval
        self.sleep(max(0.0, min(delay, self.deadline - self.clock())))


# Problems a CA answers a newOrder with when it cannot use ``replaces`` (RFC 9773 section 5:
# already replaced, not this account's, a certID it does not understand): the same order is
# placed once more without it.
REPLACES_REFUSED = frozenset({"alreadyReplaced", "malformed", "unauthorized"})

# on_order(order URL, key PEM, CSR PEM): an order was placed (the caller keeps it, to
# resume it if this issuance does not end).
OrderKeeper = Callable[[str, bytes, bytes], None]


class Issuer:
    def __init__(
        self,
        client: AcmeClient,
        solver: Solver,
        issuance_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_order: OrderKeeper | None = None,
    ) -> None:
        self.client = client
        self.solver = solver
        self.timeout = issuance_timeout
        self.clock = clock
        self.sleep = sleep
        self.on_order = on_order
        self.replaces_refused: str | None = None  # the CA's answer, when it refused replaces
        self.issued: str | None = None  # the order's URL once the CA issued its certificate

    def obtain(
        self,
        cert: OrderRequest,
        replaces: str | None = None,
        resume: PendingOrder | None = None,
    ) -> Issued:
        """The whole issuance, every request and retry included, within issuance_timeout
        (plus one request's time). ``resume``: an order an earlier run placed and did not
        finish; it is polled (and finalized, downloaded) instead of ordering again, unless
        the CA says it is invalid or gone."""
        with until(time.monotonic() + self.timeout):
            return self._obtain(cert, replaces, resume)

    def _obtain(
        self, cert: OrderRequest, replaces: str | None, resume: PendingOrder | None
    ) -> Issued:
        if cert.profile is not None:
            self._check_profile(cert)
        poller = Poller(self.clock() + self.timeout, self.clock, self.sleep)
        order = self._resumed(cert, resume) if resume is not None else None
        if order is not None and resume is not None:
            key, csr = keys.load_key_pem(resume.key_pem), resume.csr_pem
        else:
            if cert.key_pem is not None:  # reuse_key: the key in service
                key = keys.load_key_pem(cert.key_pem)
            else:
                key = keys.generate_key(cert.key_type)
            csr = keys.make_csr(key, cert.domains)
            order = self._new_order(cert, csr, replaces)
            if self.on_order is not None:
                self.on_order(order.url, keys.key_to_pem(key), csr)
        log.debug("%s: order %s is %s", cert.name, order.url, order.status)
        if (mismatch := order_mismatch(order, cert.domains, cert.profile)) is not None:
            raise IssuanceError(
                f"{cert.name}: the CA's order {order.url} is not the one requested "
                f"({mismatch}); not finalizing it (a CA that does not follow newOrder's "
                "identifiers: report it to the CA)"
            )
        if order.status == "pending":
            authzs = [self.client.authorization(url, cert.name) for url in order.authorizations]
            self._validate(cert, authzs, poller)
            # Every authorization is valid now, so the order is (about to be) ready: finalize
            # at once; "orderNotReady" sends us back to polling (saves a round trip).
            order = dataclasses.replace(order, status="ready")
        order = self._finalize(cert, order, csr, poller)
        assert order.certificate is not None
        self.issued = order.url  # from here on the CA has issued it (and may bill for it)
        chain = self._download(cert, order.certificate, key)
        return Issued(keys.key_to_pem(key), chain, order.url)

    def _download(self, cert: OrderRequest, url: str, key: keys.PrivateKey) -> keys.IssuedChain:
        """The certificate with the CA's default chain, or the alternate chain whose root
        ``preferred_chain`` names (fetched only when the default is not that one)."""
        if cert.preferred_chain is None:
            chain = keys.split_chain(self.client.download(url, cert.name), cert.name)
            keys.check_issued(chain, key, cert.domains, cert.name)
            return chain
        body, alternates = self.client.download_with_alternates(url, cert.name)
        chain = keys.split_chain(body, cert.name)
        keys.check_issued(chain, key, cert.domains, cert.name)
        if keys.root_name(chain) == cert.preferred_chain:
            return chain  # the default chain leads to that root already
        chains = [chain, *self._alternates(cert, chain, alternates)]
        chosen = keys.choose_chain(chains, cert.preferred_chain)
        if chosen is None:
            offered = ", ".join(repr(keys.root_name(c)) for c in chains)
            log.warning("%s: no chain the CA offers has the root %r of preferred_chain (offered: "
                        "%s); installing the default chain", cert.name, cert.preferred_chain,
                        offered, extra={"cert": cert.name})  # fmt: skip
            return chain
        log.info("%s: installing the alternate chain to %r (preferred_chain)", cert.name,
                 keys.root_name(chains[chosen]), extra={"cert": cert.name})  # fmt: skip
        return chains[chosen]

    def _alternates(
        self, cert: OrderRequest, default: keys.IssuedChain, urls: list[str]
    ) -> list[keys.IssuedChain]:
        """The alternate chains that can be read and carry the same certificate (one that
        cannot is skipped with a warning: the default chain is always there)."""
        found = []
        for url in urls:
            try:
                chain = keys.split_chain(
                    self.client.download(url, cert.name), f"{cert.name}: {url}"
                )
            except (CAError, IssuanceError) as err:
                log.warning("%s: the alternate chain %s cannot be read (%s); skipped", cert.name,
                            url, err, extra={"cert": cert.name})  # fmt: skip
                continue
            if chain.cert_pem != default.cert_pem:
                log.warning("%s: the alternate chain %s is for another certificate; skipped",
                            cert.name, url, extra={"cert": cert.name})  # fmt: skip
                continue
            if not keys.chains_up(chain):
                log.warning("%s: the alternate chain %s does not chain (each certificate signed "
                            "by the next); skipped", cert.name, url,
                            extra={"cert": cert.name})  # fmt: skip
                continue
            found.append(chain)
        return found

    def _new_order(self, cert: OrderRequest, csr: bytes, replaces: str | None) -> OrderState:
        try:
            return self.client.new_order(csr, cert.name, profile=cert.profile, replaces=replaces)
        except CAError as err:
            refused = err.problem_type in REPLACES_REFUSED or err.http_status == 404
            if replaces is None or not refused:
                raise
            first = err
        # The same order without it: if that fails too, the refusal was not about replaces.
        order = self.client.new_order(csr, cert.name, profile=cert.profile)
        self.replaces_refused = str(first)
        log.warning("%s: the CA refused the order with replaces (%s); ordered again without it "
                    "(and without replaces at this CA for a day)", cert.name, first,
                    extra={"cert": cert.name})  # fmt: skip
        return order

    def _resumed(self, cert: OrderRequest, pending: PendingOrder) -> OrderState | None:
        """The earlier run's order as the CA has it now, or None when it cannot be used."""
        try:
            order = self.client.order(pending.url, cert.name)
        except CAError as err:
            if err.retryable and err.http_status not in (404, 410):
                raise  # the CA is unreachable: try again later
            log.info("%s: the order %s an earlier run placed is gone (%s); placing a new one",
                     cert.name, pending.url, err, extra={"cert": cert.name})  # fmt: skip
            return None
        expired = order.expires is not None and order.expires <= datetime.now(UTC)
        if (
            expired
            or order.status == "invalid"
            or (order.status == "valid" and not order.certificate)
        ):
            state = "expired" if expired else order.status
            log.info("%s: the order %s an earlier run placed is %s; placing a new one",
                     cert.name, pending.url, state, extra={"cert": cert.name})  # fmt: skip
            return None
        log.info("%s: resuming the order %s an earlier run placed (%s, not ordering again)",
                 cert.name, pending.url, order.status, extra={"cert": cert.name})  # fmt: skip
        return order

    def _check_profile(self, cert: OrderRequest) -> None:
        offered = self.client.profiles()
        if offered is None or cert.profile not in offered:
            names = ", ".join(sorted(offered)) if offered else "none"
            raise IssuanceError(
                f"{cert.profile_field}: the CA does not offer profile {cert.profile!r} "
                f"(offered: {names}); pick one of those or remove profile"
            )

    def _validate(self, cert: OrderRequest, authzs: list[Authorization], poller: Poller) -> None:
        """Answer every pending challenge, then wait for each: all failures are reported
        together, so that the names that can be validated are (the CA keeps them valid for
        the next order) and a multi-name certificate converges in one run when it can."""
        failures = [_authz_failed(a) for a in authzs if a.status not in ("pending", "valid")]
        pending = [a for a in authzs if a.status == "pending"]
        if not pending and not failures:
            log.debug("%s: every authorization is already valid; no challenge", cert.name)
            return
        for authz in pending:
            if authz.http01 is None:
                raise IssuanceError(
                    f"{cert.name}: the CA offers no HTTP-01 challenge for {authz.domain}; "
                    "pre-approve the domain on the CA or use a CA that offers HTTP-01"
                )
        try:
            self.solver.present([a.http01 for a in pending if a.http01 is not None])
            answered = []
            for authz in pending:
                assert authz.http01 is not None
                try:
                    self.client.answer(authz.http01, cert.name)
                    answered.append(authz)
                except CAError as err:
                    if err.retryable or isinstance(err, AccountError):
                        raise  # the CA is unreachable (retried later), or the account is bad
                    failures.append(f"{authz.domain}: {err}")
            for authz in answered:
                if (failure := self._await_authorization(cert, authz, poller)) is not None:
                    failures.append(failure)
        finally:
            self.solver.cleanup()
        if failures:
            many = f"{len(failures)} of {len(authzs)} names" if len(failures) > 1 else ""
            raise IssuanceError(f"{cert.name}: validation failed{' for ' + many if many else ''}"
                                f": {'; '.join(failures)}")  # fmt: skip

    def _await_authorization(
        self, cert: OrderRequest, authz: Authorization, poller: Poller
    ) -> str | None:
        """None once the authorization is valid; what failed when it is not."""
        while True:
            current = self.client.authorization(authz.url, cert.name)
            if current.status == "valid":
                return None
            if current.status != "pending":
                return _authz_failed(current)
            if poller.expired():
                raise _timeout(cert, authz.url, "pending", self.timeout)
            poller.wait()

    def _finalize(
        self, cert: OrderRequest, order: OrderState, csr: bytes, poller: Poller
    ) -> OrderState:
        finalized = False
        while True:
            if order.status == "valid" and order.certificate:
                return order
            if order.status == "invalid":
                reason = order.error or "no reason given"
                raise IssuanceError(
                    f"{cert.name}: the CA marked order {order.url} invalid: {reason}"
                )
            if order.status == "ready" and not finalized:
                finalized = True
                try:
                    order = self.client.finalize(order, csr, cert.name)
                except CAError as err:
                    # A retried finalize whose first try reached the CA: the order moved on.
                    if err.problem_type != "orderNotReady":
                        raise
                    order = self.client.order(order.url, cert.name)
                poller.restart()
                continue
            if poller.expired():
                raise _timeout(cert, order.url, order.status, self.timeout)
            poller.wait(order.retry_after)
            order = self.client.order(order.url, cert.name)


def _authz_failed(authz: Authorization) -> str:
    reason = authz.error or "no reason given"
    return f"{authz.domain} ({authz.status}): {reason}"


def _timeout(cert: OrderRequest, url: str, status: str, timeout: float) -> CAError:
    return CAError(
        f"{cert.name}: order {url} is still {status} after {timeout:.0f} s "
        "([acme] issuance_timeout); the CA may be slow: the next run resumes this order "
        "(no new order) or raise the timeout",
        retryable=True,
        problem_type="timeout",
    )

"""Obtain one certificate from the CA: the order (with RFC 9773's ``replaces`` when it can
help), resuming the order an earlier run left unfinished. The protocol stack is imported
here, on the issuing path only.

``replaces`` is optional (RFC 9773 section 5), and a CA that cannot use it may refuse the
whole order, so it is sent only when the CA answered renewalInfo for the certificate in
service, that certificate was ordered by the account ordering now (an imported one, or one
from before a re-registration, was not), and the CA has not refused it in the last day.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from .. import keys
from ..acme.ari import ari_cert_id
from ..acme.client import AcmeClient
from ..acme.issuer import Issued, Issuer
from ..config.types import CertificateConfig
from ..errors import CAError, IssuanceError
from ..model import CertRecord, OrderRequest, PendingOrder, Solver
from ..store import ari, orders
from ..store.attempts import revoked_serial
from ..store.certs import LiveCertificate, Store

log = logging.getLogger(__name__)

# After a CA refused ``replaces``, orders at it go without for this long.
REPLACES_PAUSE = timedelta(days=1)
# A kept order older than this is not resumed (orders expire after days at most CAs).
MAX_PENDING_AGE = timedelta(days=1)


class Obtainer:
    """One certificate's issuance against ``client``; ``store`` None: a dry run, which
    neither resumes nor keeps orders."""

    def __init__(
        self,
        client: AcmeClient,
        solver: Solver,
        issuance_timeout: float,
        store: Store | None,
        now: datetime,
        *,
        kept_for: frozenset[str] = frozenset(),
        issued_here: bool = True,
    ) -> None:
        """``kept_for``: the directories of the certificate's other CAs (an order one of
        them left is kept for it); ``issued_here``: the certificate in service is this
        CA's (only then may ``replaces`` name it)."""
        self.client = client
        self.store = store
        self.now = now
        self.kept_for = kept_for
        self.issued_here = issued_here
        self.issuer = Issuer(client, solver, issuance_timeout)

    def obtain(
        self,
        request: OrderRequest,
        record: CertRecord | None,
        replacing: LiveCertificate | None,
    ) -> Issued:
        """A new certificate for ``request`` (``record``/``replacing``: the one in service)."""
        store, name = self.store, request.name
        if store is None:
            return self.issuer.obtain(request)
        request = reused_key(store, request, record)
        kept = orders.load_pending(store, name)  # read once: only our on_order changes it
        elsewhere = self._kept_elsewhere(kept)
        pending = self._pending(store, request, kept, elsewhere)
        replaces = self._replaces(store, record, replacing)
        if elsewhere:
            self.issuer.on_order = None  # a fallback: the first CA's order stays kept
        else:
            self.issuer.on_order = lambda url, key, csr: orders.save_pending(
                store, PendingOrder(name, self.client.directory_url,
                                    self.client.account_uri or "", url, request.domains,
                                    request.key_type, key, csr, self.now, request.profile)
            )  # fmt: skip
        try:
            issued = self.issuer.obtain(request, replaces, resume=pending)
            if pending is not None and not _newer(issued, record):
                # An order that was finished long ago (its certificate is the one in service,
                # or older): never put back in service; order anew.
                log.info("%s: the order %s an earlier run placed holds no newer certificate; "
                         "placing a new one", name, pending.url, extra={"cert": name})  # fmt: skip
                orders.clear_pending(store, name)
                issued = self.issuer.obtain(request, replaces)
            return issued
        except (IssuanceError, CAError) as err:
            dead = not (isinstance(err, CAError) and err.retryable)
            if isinstance(err, CAError) and self.issuer.issued is not None:
                dead = False  # issued, not downloaded: the next run downloads it, no new order
            if dead and not elsewhere:
                orders.clear_pending(store, name)  # the order is dead: the next run orders anew
            raise
        finally:
            if self.issuer.replaces_refused is not None:
                directory = self.client.directory_url
                orders.remember_refusal(store, directory, self.now + REPLACES_PAUSE)

    def _pending(
        self, store: Store, request: OrderRequest, pending: PendingOrder | None, elsewhere: bool
    ) -> PendingOrder | None:
        """The order an earlier run left for ``request`` (``pending``, as kept), when it can
        be resumed: same CA (the URL on the directory's origin), account, names, key type
        and profile, and placed less than MAX_PENDING_AGE ago (a CA that keeps an order
        processing for ever does not stop the renewals). ``elsewhere``: it is another of
        the certificate's CAs' (:meth:`_kept_elsewhere`), and stays kept for that CA."""
        if pending is None:
            return None
        if pending.directory != self.client.directory_url:
            if not elsewhere:  # stale: of no CA of it now
                log.info("%s: the order %s an earlier run left is for a CA this certificate "
                         "no longer uses, or too old; dropped", request.name, pending.url,
                         extra={"cert": request.name})  # fmt: skip
                orders.clear_pending(store, request.name)
            return None  # another CA's (this is a fallback after it timed out): kept for it
        directory = urlsplit(self.client.directory_url)
        url = urlsplit(pending.url)
        why = None
        if (url.scheme, url.netloc) != (directory.scheme, directory.netloc):
            why = "is not on the CA's origin"
        elif pending.account != (self.client.account_uri or ""):
            why = "is for another account"
        elif (sorted(pending.domains), pending.key_type, pending.profile) != (
            sorted(request.domains), request.key_type, request.profile):  # fmt: skip
            why = "is for other names, another key type or profile"
        elif self.now - pending.placed > MAX_PENDING_AGE:
            why = f"was placed more than {MAX_PENDING_AGE.days} day ago"
        elif _revoked_key(store, request.name, pending.key_pem):
            why = "has the key of the revoked certificate in service (reuse_key)"
        if why is not None:
            log.info("%s: the order %s an earlier run left %s; placing a new one", request.name,
                     pending.url, why, extra={"cert": request.name})  # fmt: skip
            orders.clear_pending(store, request.name)
            return None
        return pending

    def _kept_elsewhere(self, kept: PendingOrder | None) -> bool:
        """Is ``kept`` an order of another of the certificate's CAs, young enough to resume?"""
        return (
            kept is not None
            and kept.directory != self.client.directory_url
            and kept.directory in self.kept_for
            and self.now - kept.placed <= MAX_PENDING_AGE
        )

    def _replaces(
        self, store: Store, record: CertRecord | None, current: LiveCertificate | None
    ) -> str | None:
        """The ARI id of the certificate being replaced, when sending it can help."""
        if current is None or record is None or not self.issued_here:
            return None  # another CA's certificate: never named to this one
        if not self.client.supports_ari():
            return None
        state = ari.load_state(store, current.name)
        if state is None or state.window() is None or state.serial != record.serial:
            return None  # the CA did not answer renewalInfo for this certificate
        if record.account is not None and record.account != self.client.account_uri:
            return None  # imported, from the fleet, or ordered by another account
        if orders.refuses_replaces(store, self.client.directory_url, self.now):
            return None
        with contextlib.suppress(ValueError, LookupError):
            return ari_cert_id(current.cert)
        return None


def order_request(cert: CertificateConfig) -> OrderRequest:
    """What the protocol layer is asked for one certificate of the configuration."""
    return OrderRequest(cert.name, cert.domains, cert.key_type, cert.profile,
                        cert.field("profile"), cert.reuse_key, cert.preferred_chain)  # fmt: skip


def reused_key(store: Store, request: OrderRequest, record: CertRecord | None) -> OrderRequest:
    """``request`` with the key in service when ``reuse_key`` asks for it and it can be
    used: of the configured key type, readable, and its certificate not revoked (a key
    revoked for, say, keyCompromise is never ordered with again). Otherwise a fresh key."""
    name = request.name
    if not request.reuse_key or record is None:
        return request
    why = None
    if revoked_serial(store, name) == record.serial:
        why = "its certificate was revoked"
    elif record.key_type != request.key_type:
        why = f"it is {record.key_type}, not the configured {request.key_type}"
    else:
        folder = store.live_folder(name)
        try:
            key_pem = (folder / "privkey.pem").read_bytes() if folder is not None else b""
            if keys.key_type_of(keys.load_key_pem(key_pem)) == request.key_type:
                log.info("%s: ordering with the key in service (reuse_key)", name,
                         extra={"cert": name})  # fmt: skip
                return dataclasses.replace(request, key_pem=key_pem)
            why = "it is not of the configured key type"
        except (OSError, ValueError, TypeError):
            why = "it cannot be read"
    log.info("%s: reuse_key: not reusing the key in service (%s); ordering with a fresh key",
             name, why, extra={"cert": name})  # fmt: skip
    return request


def _revoked_key(store: Store, name: str, key_pem: bytes) -> bool:
    """Is ``key_pem`` the key of ``name``'s certificate in service, which was revoked?"""
    current = store.current(name)
    if current is None or revoked_serial(store, name) != f"{current.cert.serial_number:x}":
        return False
    try:
        return keys.public_key_matches(current.cert, keys.load_key_pem(key_pem))
    except ValueError:
        return False


def _newer(issued: Issued, record: CertRecord | None) -> bool:
    cert = issued.chain.cert
    if record is None:
        return True
    return (
        f"{cert.serial_number:x}" != record.serial and cert.not_valid_after_utc > record.not_after
    )

"""The ACME conversation (RFC 8555), one method per protocol step.

Owns the steps and their retries; built on the public message classes of certbot's ``acme``
library and on our own poster (:mod:`agent.transport`: signing, nonces, HTTP). No disk, no
subprocesses, no sleeping: callers own the clock (see :mod:`agent.issuer`). Every failure leaves
as a :class:`CAError`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import josepy as jose
import requests
from acme import challenges, jws, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .. import __version__, keys
from ..errors import AccountError, CAError
from ..model import TOKEN_RE, Challenge
from ..policy.backoff import exponential
from ..policy.retry_after import http_date, retry_after_problem, retry_after_seconds
from .deadline import remaining
from .orders import NewOrderReplacing, OrderState, alternate_links, identifier, order_state
from .problems import explain, with_wait
from .transport import NONCE_HEADER, Poster, signing_alg

log = logging.getLogger(__name__)

# pebble rejects a share of nonces on purpose and real CAs occasionally do; the poster signs
# the request again with a fresh nonce this many times.
BAD_NONCE_RETRIES = 10
NETWORK_TIMEOUT = 30
# Transient failures (5xx, 429, connection errors) are retried this many times within one
# step, after Retry-After when the CA gives one (up to MAX_INLINE_WAIT; a longer wait ends
# the attempt and the daemon retries later), else after TRANSIENT_BACKOFF * 2^n, jittered.
TRANSIENT_RETRIES = 5
TRANSIENT_BACKOFF = 0.2
TRANSIENT_JITTER = 0.5
MAX_INLINE_WAIT = 30.0
USER_AGENT = f"acme-agent/{__version__}"

T = TypeVar("T")


@dataclass(frozen=True)
class Authorization:
    url: str
    domain: str
    status: str
    http01: Challenge | None
    error: str = ""
    wildcard: bool = False


def account_key_pem_new() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def load_account_key(pem: bytes) -> jose.JWK:
    """An EC or RSA private key (ValueError else: josepy takes any other bytes for a
    symmetric key, which cannot sign a request)."""
    key = jose.JWK.load(pem)
    if not isinstance(key, jose.JWKEC | jose.JWKRSA):
        raise ValueError("not an EC or RSA private key")
    return key


class AcmeClient:
    """One CA, one account key. The directory is fetched once per instance."""

    def __init__(
        self,
        directory_url: str,
        account_key: jose.JWK,
        *,
        ca_bundle: str | None = None,
        account_uri: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = NETWORK_TIMEOUT,
    ) -> None:
        self.directory_url = directory_url
        self.key = account_key
        self.sleep = sleep
        self.poster = Poster(
            account_key,
            verify=ca_bundle or True,  # a CA bundle path; never rely on REQUESTS_CA_BUNDLE
            user_agent=USER_AGENT,
            timeout=timeout,
            bad_nonce_retries=BAD_NONCE_RETRIES,
            # The directory is fetched when first needed, by the first request's nonce too.
            nonce_url=lambda: getattr(self._directory(), "newNonce", None),
        )
        self.poster.account = account_uri or None
        self._dir: messages.Directory | None = None
        # Called with (step, seconds) after every protocol step (metrics).
        self.observer: Callable[[str, float], None] | None = None

    def _directory(self) -> messages.Directory:
        if self._dir is None:
            self._dir = self._call(
                lambda: messages.Directory.from_json(self.poster.get(self.directory_url).json()),
                "fetching the ACME directory",
            )
        return self._dir

    @property
    def account_uri(self) -> str | None:
        return self.poster.account

    def _call(self, step: Callable[[], T], during: str, subject: str = "") -> T:
        """Run one protocol step: retry transient failures (5xx, 429, connection errors,
        badNonce beyond the poster's own retries) a few times, honouring Retry-After;
        translate every failure."""
        started = time.perf_counter()
        try:
            return self._call_retrying(step, during, subject)
        finally:
            if self.observer is not None:
                self.observer(during.split(" for ")[0], time.perf_counter() - started)

    def _call_retrying(self, step: Callable[[], T], during: str, subject: str) -> T:
        transient_left = TRANSIENT_RETRIES
        while True:
            self.poster.reset()
            try:
                return step()
            except (requests.RequestException, acme_errors.Error, ValueError, jose.Error,
                    CAError) as err:  # fmt: skip
                error = explain(err, during=during, subject=subject)
            status = self.poster.last_status
            error.http_status = status
            error.retry_after = self._retry_after(during)
            transient = error.retryable or status >= 500 or status == 429
            if not transient or transient_left == 0:
                raise with_wait(error) from None
            if error.retry_after is not None and error.retry_after > MAX_INLINE_WAIT:
                raise with_wait(error) from None
            if (left := remaining()) is not None and left < (error.retry_after or 0) + 1:
                raise with_wait(error) from None  # no time left in this issuance
            delay = error.retry_after
            if delay is not None and (status == 429 or error.problem_type == "rateLimited"):
                self.poster.hold(delay)  # rate limited: the other orders pause too
            if delay is None:
                attempt = TRANSIENT_RETRIES - transient_left
                delay = exponential(attempt + 1, TRANSIENT_BACKOFF, MAX_INLINE_WAIT,
                                    random.random(), TRANSIENT_JITTER)  # fmt: skip
            transient_left -= 1
            log.debug("%s: transient failure (%s); retrying in %.1f s", during, error, delay)
            self.sleep(delay)

    def _retry_after(self, during: str) -> float | None:
        """The last answer's Retry-After, bounded; a value we could not take is logged."""
        asked, now = self.poster.last_retry_after, time.time()
        if (problem := retry_after_problem(asked, now)) is not None:
            log.warning("%s: %s: %s", self.directory_url, during, problem)
        return retry_after_seconds(asked, now)

    def ca_time(self) -> datetime | None:
        """The CA's clock: the ``Date`` of a HEAD newNonce (None when it sends none)."""

        def step() -> datetime | None:
            response = self.poster.send("HEAD", self._directory()["newNonce"])
            self.poster.nonces.add(response.headers.get(NONCE_HEADER))
            return http_date(response.headers.get("Date"))

        return self._call(step, "asking the CA for its time")

    # -- account ------------------------------------------------------------------------
    def requires_eab(self) -> bool:
        return bool(self._directory().meta.external_account_required)

    def register(self, email: str | None, eab: tuple[str, str] | None) -> str:
        """newAccount (with EAB when given); an existing account for this key is reused."""
        directory = self._directory()
        binding = None
        if eab is not None:
            kid, hmac_key = eab
            try:
                binding = messages.ExternalAccountBinding.from_data(
                    account_public_key=self.key.public_key(),
                    kid=kid,
                    hmac_key=hmac_key,
                    directory=directory,
                )
            except (ValueError, TypeError, jose.DeserializationError):
                raise AccountError(
                    "the EAB HMAC key is not valid base64url; copy it again from your CA"
                ) from None
        registration = messages.NewRegistration.from_data(
            email=email, terms_of_service_agreed=True, external_account_binding=binding
        )

        def step() -> str:
            try:
                response = self.poster.post(directory["newAccount"], registration, by_key=True)
            except acme_errors.ConflictError as existing:  # 409 naming the existing account
                uri = existing.location
            else:
                uri = response.location()
                if response.status != 200:  # 200: an account for this key exists already
                    messages.Registration.from_json(response.json())
            self.poster.account = uri
            return uri

        try:
            return self._call(step, "creating the ACME account")
        except CAError as err:
            if err.problem_type == "unauthorized" and eab is not None:
                raise AccountError(
                    f"{err} -> the CA refused the EAB credentials with key id {eab[0]!r}: check "
                    "[acme] eab_kid and the EAB HMAC key; EAB credentials may expire or be "
                    "single-use: ask your CA for new ones and put them in the configuration",
                    problem_type="externalAccountRequired",
                ) from None
            raise

    def find_account(self) -> str:
        """Look the account up by key (onlyReturnExisting); raises if the CA forgot it."""
        return self._call(lambda: self._look_up()[0], "looking up the ACME account")

    def _look_up(self) -> tuple[str, messages.Registration]:
        """newAccount with onlyReturnExisting, signed with the key: the account's URL (now
        the ``kid`` of every request) and object."""
        query = messages.NewRegistration.from_data(only_return_existing=True)
        response = self.poster.post(self._directory()["newAccount"], query, by_key=True)
        uri = response.location()
        body = messages.Registration.from_json(response.json())
        self.poster.account = uri
        return uri, body

    def account_details(self) -> dict[str, object]:
        """The account object as the CA has it now (status, contact, ...)."""
        body = self._call(lambda: self._look_up()[1], "looking up the ACME account")
        return dict(body.to_partial_json())

    def change_key(self, new_key: jose.JWK) -> None:
        """RFC 8555 section 7.3.5: the inner JWS (new key, no nonce) inside the outer one."""
        url, account = self._directory()["keyChange"], self.account_uri
        payload = {"account": account, "oldKey": self.key.public_key().to_partial_json()}
        inner = jws.JWS.sign(
            json.dumps(payload).encode(), key=new_key, alg=signing_alg(new_key), nonce=None, url=url
        )
        self._call(lambda: self.poster.post(url, inner), "changing the account key")
        self.key = self.poster.key = new_key

    def deactivate(self) -> None:
        """RFC 8555 section 7.3.6, at the account URL the CA gives for this key now."""
        assert self.account_uri is not None
        update = messages.UpdateRegistration(status=messages.STATUS_DEACTIVATED)

        def step() -> None:
            uri = self._look_up()[0]
            messages.Registration.from_json(self.poster.post(uri, update).json())

        self._call(step, "deactivating the account")

    def update_contact(self, emails: Sequence[str]) -> list[str]:
        """RFC 8555 section 7.3.2: replace the account's contact; the CA's list back."""
        update = messages.UpdateRegistration(contact=tuple(f"mailto:{e}" for e in emails))

        def step() -> list[str]:
            uri = self._look_up()[0]
            body = messages.Registration.from_json(self.poster.post(uri, update).json())
            return list(body.contact)

        return self._call(step, "updating the account's contact")

    def revoke(self, cert: x509.Certificate, reason: int, subject: str) -> None:
        url = self._directory()["revokeCert"]
        revocation = messages.Revocation(certificate=cert, reason=reason)

        def step() -> None:
            if self.poster.post(url, revocation).status != 200:
                raise acme_errors.ClientError("Successful revocation must return HTTP OK status")

        self._call(step, "revoking the certificate", subject)

    # -- directory features -------------------------------------------------------------
    def profiles(self) -> dict[str, str] | None:
        """The profiles the CA offers (draft-aaron-acme-profiles), or None."""
        meta = getattr(self._directory(), "meta", None)
        profiles = getattr(meta, "profiles", None)
        return dict(profiles) if profiles else None

    def supports_ari(self) -> bool:
        return "renewalInfo" in self._directory().to_partial_json()

    def renewal_info(self, cert_id: str, subject: str) -> tuple[datetime, datetime, str | None]:
        """(window start, window end, Retry-After) from the CA's renewalInfo (RFC 9773)."""
        url = f"{self._directory()['renewalInfo'].rstrip('/')}/{cert_id}"

        def step() -> tuple[datetime, datetime, str | None]:
            response = self.poster.get(url)
            info = messages.RenewalInfo.from_json(response.json())
            window = info.suggested_window
            return window.start, window.end, response.headers.get("Retry-After")

        return self._call(step, "fetching renewal information (ARI)", subject)

    # -- orders -------------------------------------------------------------------------
    def new_order(
        self,
        csr_pem: bytes,
        subject: str,
        *,
        profile: str | None = None,
        replaces: str | None = None,
    ) -> OrderState:
        url = self._directory()["newOrder"]

        def step() -> OrderState:
            ids = [identifier(d) for d in keys.csr_domains(csr_pem)]
            order = NewOrderReplacing(identifiers=ids, profile=profile, replaces=replaces)
            response = self.poster.post(url, order)
            return order_state(response, response.headers.get("Location", ""))

        return self._call(step, "creating the order", subject)

    def order(self, url: str, subject: str) -> OrderState:
        return self._call(
            lambda: order_state(self.poster.post_as_get(url), url), "polling the order", subject
        )

    def authorization(self, url: str, subject: str) -> Authorization:
        def step() -> Authorization:
            body = messages.Authorization.from_json(self.poster.post_as_get(url).json())
            return self._authorization(url, body)

        return self._call(step, "fetching the authorization", subject)

    def _authorization(self, url: str, body: messages.Authorization) -> Authorization:
        domain = str(body.identifier.value)
        error = ""
        http01 = None
        for challb in body.challenges:
            if challb.error is not None:
                error = f"{challb.error.code}: {challb.error.detail}"
            if isinstance(challb.chall, challenges.HTTP01):
                token = challb.chall.encode("token")
                if not TOKEN_RE.match(token):
                    raise CAError(
                        f"{domain}: the CA sent an HTTP-01 token that is not base64url; "
                        "refusing it",
                        problem_type="malformed",
                    )
                key_authz = challb.chall.validation(self.key)
                http01 = Challenge(domain, token, key_authz, challb)
        status = str(body.status.name)
        return Authorization(url, domain, status, http01, error, bool(body.wildcard))

    def answer(self, challenge: Challenge, subject: str) -> None:
        """Tell the CA the challenge is ready. The answer's ``Link: rel="up"`` is not needed
        (we know the authorization), so a CA that leaves it out is fine."""
        challb: messages.ChallengeBody = challenge.body

        def step() -> None:
            response = self.poster.post(challb.uri, challb.response(self.key))
            updated = messages.ChallengeBody.from_json(response.json())
            if updated.uri != challb.uri:
                raise acme_errors.UnexpectedUpdate(updated.uri)

        self._call(step, f"answering the HTTP-01 challenge for {challenge.domain}", subject)

    def finalize(self, order: OrderState, csr_pem: bytes, subject: str) -> OrderState:
        csr = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
        return self._call(
            lambda: order_state(self.poster.post(order.finalize, csr), order.url),
            "finalizing the order",
            subject,
        )

    def download(self, url: str, subject: str) -> bytes:
        return self._call(
            lambda: self.poster.post_as_get(url).body, "downloading the certificate", subject
        )

    def download_with_alternates(self, url: str, subject: str) -> tuple[bytes, list[str]]:
        """The chain at ``url`` and the URLs of the alternate chains the CA offers for the
        same certificate (RFC 8555 section 7.4.2: ``Link: rel="alternate"``)."""

        def step() -> tuple[bytes, list[str]]:
            response = self.poster.post_as_get(url)
            return response.body, alternate_links(response, url)

        return self._call(step, "downloading the certificate", subject)

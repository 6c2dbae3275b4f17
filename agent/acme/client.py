"""The ACME conversation (RFC 8555), one method per protocol step.

Built on certbot's ``acme`` library. No disk, no subprocesses, no sleeping: callers own
the clock (see :mod:`agent.issuer`). Every failure leaves as a :class:`CAError`.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import josepy as jose
import requests
from acme import challenges, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .. import __version__
from ..errors import AccountError, CAError
from ..model import TOKEN_RE, Challenge
from ..policy.retry_after import retry_after_seconds
from .problems import explain
from .transport import Network

log = logging.getLogger(__name__)

# pebble rejects a share of nonces on purpose and real CAs occasionally do; the library
# retries once, we retry the whole step this many times more.
BAD_NONCE_RETRIES = 10
NETWORK_TIMEOUT = 30
# Transient failures (5xx, 429, connection errors) are retried this many times within one
# step, after Retry-After when the CA gives one (up to MAX_INLINE_WAIT; a longer wait ends
# the attempt and the daemon retries later), else after TRANSIENT_BACKOFF * 2^n, jittered.
TRANSIENT_RETRIES = 5
TRANSIENT_BACKOFF = 0.2
MAX_INLINE_WAIT = 30.0
# Tokens are base64url (RFC 8555 section 8.3); anything else could escape a directory.
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


@dataclass(frozen=True)
class OrderState:
    url: str
    status: str
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None
    error: str
    retry_after: str | None


def account_key_pem_new() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def load_account_key(pem: bytes) -> jose.JWK:
    return jose.JWK.load(pem)


def _alg_for(key: jose.JWK) -> jose.JWASignature:
    if isinstance(key, jose.JWKEC):
        size = key.key.curve.key_size
        return {256: jose.ES256, 384: jose.ES384}.get(size, jose.ES512)
    return jose.RS256


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
        self.net = Network(
            account_key,
            alg=_alg_for(account_key),
            # verify_ssl takes a CA bundle path too; never rely on REQUESTS_CA_BUNDLE.
            verify_ssl=ca_bundle or True,  # type: ignore[arg-type]
            user_agent=USER_AGENT,
            timeout=timeout,  # type: ignore[arg-type]
        )
        if account_uri:
            self.net.account = messages.RegistrationResource(
                uri=account_uri, body=messages.Registration()
            )
        self._client: acme_client.ClientV2 | None = None
        # Called with (step, seconds) after every protocol step (metrics).
        self.observer: Callable[[str, float], None] | None = None

    @property
    def client(self) -> acme_client.ClientV2:
        if self._client is None:
            directory = self._call(
                lambda: acme_client.ClientV2.get_directory(self.directory_url, self.net),
                "fetching the ACME directory",
            )
            self._client = acme_client.ClientV2(directory, self.net)
        return self._client

    @property
    def account_uri(self) -> str | None:
        account = self.net.account
        return str(account.uri) if account is not None else None

    def _call(self, step: Callable[[], T], during: str, subject: str = "") -> T:
        """Run one protocol step: retry badNonce at once, and transient failures (5xx, 429,
        connection errors) a few times, honouring Retry-After; translate every failure."""
        started = time.perf_counter()
        try:
            return self._call_retrying(step, during, subject)
        finally:
            if self.observer is not None:
                self.observer(during.split(" for ")[0], time.perf_counter() - started)

    def _call_retrying(self, step: Callable[[], T], during: str, subject: str) -> T:
        nonces_left, transient_left = BAD_NONCE_RETRIES, TRANSIENT_RETRIES
        while True:
            self.net.reset()
            try:
                return step()
            except messages.Error as err:
                if err.code == "badNonce" and nonces_left > 0:
                    nonces_left -= 1
                    continue
                error = explain(err, during=during, subject=subject)
            except (requests.RequestException, acme_errors.Error, ValueError, jose.Error) as err:
                error = explain(err, during=during, subject=subject)
            status = self.net.last_status
            error.retry_after = retry_after_seconds(self.net.last_retry_after, time.time())
            transient = error.retryable or status >= 500 or status == 429
            if not transient or transient_left == 0:
                raise _with_wait(error) from None
            if error.retry_after is not None and error.retry_after > MAX_INLINE_WAIT:
                raise _with_wait(error) from None
            delay = error.retry_after
            if delay is not None and (status == 429 or error.problem_type == "rateLimited"):
                self.net.hold(delay)  # rate limited: the other orders pause too
            if delay is None:
                attempt = TRANSIENT_RETRIES - transient_left
                delay = TRANSIENT_BACKOFF * 2**attempt * (0.5 + random.random())
            transient_left -= 1
            log.debug("%s: transient failure (%s); retrying in %.1f s", during, error, delay)
            self.sleep(delay)

    # -- account ------------------------------------------------------------------------
    def requires_eab(self) -> bool:
        return bool(self.client.external_account_required())

    def register(self, email: str | None, eab: tuple[str, str] | None) -> str:
        """newAccount (with EAB when given); an existing account for this key is reused."""
        client = self.client
        binding = None
        if eab is not None:
            kid, hmac_key = eab
            try:
                binding = messages.ExternalAccountBinding.from_data(
                    account_public_key=self.key.public_key(),
                    kid=kid,
                    hmac_key=hmac_key,
                    directory=client.directory,
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
                return str(client.new_account(registration).uri)
            except acme_errors.ConflictError as existing:
                uri = str(existing)
                self.net.account = messages.RegistrationResource(
                    uri=uri, body=messages.Registration()
                )
                return uri

        try:
            return self._call(step, "creating the ACME account")
        except CAError as err:
            if err.problem_type == "unauthorized" and eab is not None:
                raise AccountError(
                    f"{err} -> check [acme] eab_kid and the EAB HMAC key; EAB credentials may "
                    "expire or be single-use: ask your CA for fresh ones"
                ) from None
            raise

    def find_account(self) -> str:
        """Look the account up by key (onlyReturnExisting); raises if the CA forgot it."""
        client = self.client
        query = messages.NewRegistration.from_data(only_return_existing=True)

        def step() -> str:
            self.net.account = None
            response = client._post(client.directory["newAccount"], query)
            uri = str(response.headers["Location"])
            self.net.account = messages.RegistrationResource(
                uri=uri, body=messages.Registration.from_json(response.json())
            )
            return uri

        return self._call(step, "looking up the ACME account")

    def account_details(self) -> dict[str, object]:
        """The account object as the CA has it now (status, contact, ...)."""
        self.find_account()
        assert self.net.account is not None
        return dict(self.net.account.body.to_partial_json())

    def change_key(self, new_key: jose.JWK) -> None:
        """RFC 8555 section 7.3.5: the inner JWS (new key, no nonce) inside the outer one."""
        from acme import jws as acme_jws

        client, account = self.client, self.account_uri
        url = client.directory["keyChange"]
        payload = {"account": account, "oldKey": self.key.public_key().to_partial_json()}
        inner = acme_jws.JWS.sign(
            json.dumps(payload).encode(), key=new_key, alg=_alg_for(new_key), nonce=None, url=url
        )
        self._call(lambda: client._post(url, inner), "changing the account key")
        self.key = new_key
        self.net.key = new_key
        self.net.alg = _alg_for(new_key)

    def deactivate(self) -> None:
        client = self.client
        assert self.net.account is not None
        regr = self.net.account
        self._call(lambda: client.deactivate_registration(regr), "deactivating the account")

    def revoke(self, cert: x509.Certificate, reason: int, subject: str) -> None:
        self._call(lambda: self.client.revoke(cert, reason), "revoking the certificate", subject)

    # -- directory features -------------------------------------------------------------
    def profiles(self) -> dict[str, str] | None:
        """The profiles the CA offers (draft-aaron-acme-profiles), or None."""
        meta = getattr(self.client.directory, "meta", None)
        profiles = getattr(meta, "profiles", None)
        return dict(profiles) if profiles else None

    def supports_ari(self) -> bool:
        return "renewalInfo" in self.client.directory.to_partial_json()

    def renewal_info(self, cert_id: str, subject: str) -> tuple[datetime, datetime, str | None]:
        """(window start, window end, Retry-After) from the CA's renewalInfo (RFC 9773)."""
        url = f"{self.client.directory['renewalInfo'].rstrip('/')}/{cert_id}"

        def step() -> tuple[datetime, datetime, str | None]:
            response = self.net.get(url, content_type="application/json")
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
        client = self.client

        def step() -> OrderState:
            ids = [
                messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=d)
                for d in _csr_domains(csr_pem)
            ]
            order = NewOrderReplacing(identifiers=ids, profile=profile, replaces=replaces)
            response = client._post(client.directory["newOrder"], order)
            return _order_state(response, response.headers.get("Location", ""))

        return self._call(step, "creating the order", subject)

    def order(self, url: str, subject: str) -> OrderState:
        return self._call(
            lambda: _order_state(self.client._post_as_get(url), url), "polling the order", subject
        )

    def authorization(self, url: str, subject: str) -> Authorization:
        def step() -> Authorization:
            body = messages.Authorization.from_json(self.client._post_as_get(url).json())
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
        self._call(
            lambda: self.client.answer_challenge(challenge.body, challenge.body.response(self.key)),
            f"answering the HTTP-01 challenge for {challenge.domain}",
            subject,
        )

    def finalize(self, order: OrderState, csr_pem: bytes, subject: str) -> OrderState:
        csr = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
        return self._call(
            lambda: _order_state(self.client._post(order.finalize, csr), order.url),
            "finalizing the order",
            subject,
        )

    def download(self, url: str, subject: str) -> bytes:
        def step() -> bytes:
            return bytes(self.client._post_as_get(url).content)

        return self._call(step, "downloading the certificate", subject)


class NewOrderReplacing(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (the ARI id of the certificate it renews)."""

    replaces: str | None = jose.field("replaces", omitempty=True)


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{_b64(aki.key_identifier or b'')}.{_b64(serial_bytes)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _with_wait(error: CAError) -> CAError:
    """Say when the CA allows the next try, if it said."""
    if error.retry_after is not None and "Retry-After" not in str(error):
        error.args = (f"{error} (the CA asks to wait {error.retry_after:.0f} s: Retry-After)",)
    return error


def _csr_domains(csr_pem: bytes) -> list[str]:
    csr = x509.load_pem_x509_csr(csr_pem)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


def _order_state(response: requests.Response, url: str) -> OrderState:
    body = messages.Order.from_json(response.json())
    error = ""
    if body.error is not None:
        from .problems import describe_problem

        error = f"{body.error.code}: {describe_problem(body.error)}"
    return OrderState(
        url=url,
        status=str(body.status.name),
        authorizations=tuple(str(a) for a in body.authorizations or ()),
        finalize=str(body.finalize),
        certificate=str(body.certificate) if body.certificate else None,
        error=error,
        retry_after=response.headers.get("Retry-After"),
    )

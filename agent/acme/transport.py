"""HTTP for the ACME conversation (RFC 8555 sections 6.1-6.5): our own poster.

This module owns the requests session (CA trust, User-Agent, timeout, connection pool), bounded
response bodies, the nonce pool, the JWS signature of every POST (signed again with a fresh nonce
on every badNonce retry, as lego's ``retrievablePost`` does), the translation of error answers
into problems, the rate-limit pause every thread honours, and, per thread, the status and
Retry-After of the last answer so that retries can honour what the CA asked for.

It uses only the public API of ``requests``, ``josepy`` and ``acme`` (``jws.JWS.sign``,
``messages.Error.from_json``). It logs no bodies: they carry JWS.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import josepy as jose
import requests
import urllib3
from acme import errors as acme_errors
from acme import jws, messages

from ..errors import CAError
from .deadline import DeadlineAdapter, bounded

log = logging.getLogger(__name__)

# No ACME response we need comes near this (a certificate chain is a few KiB); a larger
# one is refused before it is held in memory.
MAX_RESPONSE_BYTES = 1024 * 1024
JOSE_CONTENT_TYPE = "application/jose+json"
NONCE_HEADER = "Replay-Nonce"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class ResponseTooLarge(acme_errors.ClientError):
    def __str__(self) -> str:
        return f"the response to {self.args[0]} was larger than {MAX_RESPONSE_BYTES} bytes"


class UnexpectedResponse(acme_errors.ClientError):
    """An error status whose body is not a problem document (e.g. a proxy's HTML page)."""

    def __init__(self, status: int, content_type: str | None) -> None:
        super().__init__(status, content_type)
        self.status = status
        self.content_type = content_type

    def __str__(self) -> str:
        kind = (self.content_type or "no content type").split(";")[0]
        return f"HTTP {self.status} with a non-problem body ({kind})"


class MissingNonce(acme_errors.ClientError):
    def __str__(self) -> str:
        return f"the CA's answer to {self.args[0]} carried no usable {NONCE_HEADER}"


@dataclass(frozen=True)
class Response:
    """One answer of the CA, its body already read (and bounded)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (requests' CaseInsensitiveDict)
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)

    def location(self) -> str:
        """The Location header (the URL of what was created or found)."""
        location = self.headers.get("Location")
        if not location:
            raise acme_errors.ClientError(f"the CA's answer (HTTP {self.status}) has no Location")
        return location


class NoncePool:
    """Nonces taken from the CA's answers, shared by the threads of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nonces: list[bytes] = []

    def add(self, value: str | None) -> bool:
        """Keep the nonce of a Replay-Nonce header; False if there was none usable."""
        nonce = decode_nonce(value)
        if nonce is None:
            return False
        with self._lock:
            self._nonces.append(nonce)
        return True

    def take(self) -> bytes | None:
        with self._lock:
            return self._nonces.pop() if self._nonces else None


def decode_nonce(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return jose.decode_b64jose(value)
    except jose.DeserializationError:
        log.debug("ignoring a %s that is not base64url", NONCE_HEADER)
        return None


class Poster:
    """Signs and sends ACME requests for one account key.

    ``account`` is the account URL (the JWS ``kid``) once known; until then, and for
    newAccount always, requests are signed with the public key (``jwk``).
    """

    def __init__(
        self,
        key: jose.JWK,
        *,
        verify: str | bool,
        user_agent: str,
        timeout: float,
        bad_nonce_retries: int,
        nonce_url: Callable[[], str | None],
    ) -> None:
        self.key = key  # the algorithm follows the key (signing_alg)
        self.account: str | None = None
        self.nonce_url = nonce_url  # newNonce, asked for when the pool is empty
        self.verify = verify  # a CA bundle path or True; never REQUESTS_CA_BUNDLE
        self.user_agent = user_agent
        self.timeout = timeout
        self.bad_nonce_retries = bad_nonce_retries
        self.nonces = NoncePool()
        self.hold_until = 0.0  # monotonic time before which no request is sent (Retry-After)
        self._local = threading.local()
        self.session = requests.Session()
        weakref.finalize(self, self.session.close)
        # Several orders share this client: as many pooled connections as orders at once.
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=64)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # requests looks through the whole environment for proxy settings on every request
        # (a third of the client's CPU in a mass renewal); without any *_proxy variable
        # there is nothing to find. CA trust never comes from the environment: verify.
        if not any(name.lower().endswith("_proxy") for name in os.environ):
            self.session.trust_env = False

    # -- what the last answer in this thread said, and the pause all threads honour -----
    def hold(self, seconds: float) -> None:
        """The CA asked for a pause: every thread waits, not only the one that was told."""
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def reset(self) -> None:
        self._local.status = 0
        self._local.retry_after = None

    @property
    def last_status(self) -> int:
        return int(getattr(self._local, "status", 0))

    @property
    def last_retry_after(self) -> str | None:
        return getattr(self._local, "retry_after", None)

    @property
    def last_date(self) -> str | None:
        """The ``Date`` header of this thread's last answer (the CA's clock)."""
        return getattr(self._local, "date", None)

    # -- requests -----------------------------------------------------------------------
    def get(self, url: str) -> Response:
        """Unsigned GET of a JSON resource (the directory, renewalInfo)."""
        response = self.send("GET", url)
        self.nonces.add(response.headers.get(NONCE_HEADER))
        return check(response, want_json=True)

    def post(
        self, url: str, payload: jose.JSONDeSerializable | None, *, by_key: bool = False
    ) -> Response:
        """Signed POST of ``payload`` (None: POST-as-GET). ``by_key``: sign with ``jwk``."""
        data = payload.json_dumps().encode() if payload is not None else b""
        kid = None if by_key else self.account
        attempt = 0
        while True:
            signed = jws.JWS.sign(
                data, key=self.key, alg=signing_alg(self.key), nonce=self._nonce(), url=url, kid=kid
            )
            headers = {"Content-Type": JOSE_CONTENT_TYPE}
            response = self.send("POST", url, signed.json_dumps().encode(), headers)
            self.nonces.add(response.headers.get(NONCE_HEADER))
            try:
                return check(response)
            except messages.Error as problem:
                if problem.code != "badNonce" or attempt >= self.bad_nonce_retries:
                    raise
            attempt += 1
            log.debug("POST %s: badNonce; signing again with a fresh nonce", url)

    def post_as_get(self, url: str) -> Response:
        return self.post(url, None)

    def _nonce(self) -> bytes:
        nonce = self.nonces.take()
        if nonce is not None:
            return nonce
        url = self.nonce_url()
        if url is None:
            raise acme_errors.ClientError("the directory names no newNonce URL")
        response = check(self.send("HEAD", url))
        nonce = decode_nonce(response.headers.get(NONCE_HEADER))
        if nonce is None:
            raise MissingNonce(url)
        return nonce

    def send(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One HTTP exchange, the body read up to MAX_RESPONSE_BYTES (refused above). No
        redirect is followed for a signed request; a GET or HEAD follows one only to the
        same origin. Every URL is https:// (http:// only to a loopback address)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_once(method, url, body, headers)
            target = response.headers.get("Location") if response.status in REDIRECTS else None
            if target is None:
                return response
            target = urljoin(url, target)
            if method == "POST":
                raise CAError(
                    f"the CA answered the signed request to {url} with a redirect to {target}; "
                    "signed requests are never redirected (check [acme] directory)",
                    problem_type="unsafe-url",
                )
            if _origin(target) != _origin(url):
                raise CAError(
                    f"the CA redirected {url} to another origin ({target}); not followed",
                    problem_type="unsafe-url",
                )
            url = target
        raise CAError(f"{url}: more than {MAX_REDIRECTS} redirects", problem_type="unsafe-url")

    def _send_once(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str] | None
    ) -> Response:
        require_safe_url(url)
        wait = self.hold_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with bounded(self.timeout) as budget:  # in all, not per read (a dripping CA)
            try:
                answer = self.session.request(
                    method,
                    url,
                    data=body,
                    headers={"User-Agent": self.user_agent, **(headers or {})},
                    verify=self.verify,
                    timeout=self.timeout,
                    stream=True,
                    allow_redirects=False,
                )
                try:
                    self._local.status = answer.status_code
                    self._local.retry_after = answer.headers.get("Retry-After")
                    self._local.date = answer.headers.get("Date")
                    data = _read_bounded(answer)
                finally:
                    answer.close()
            except requests.RequestException:
                if budget.exceeded:
                    raise requests.exceptions.Timeout(
                        f"no complete answer within {self.timeout:.0f} s ([acme] request_timeout)"
                    ) from None
                raise
            if budget.exceeded:  # shut down mid-body: what arrived is not the answer
                raise requests.exceptions.Timeout(
                    f"no complete answer within {self.timeout:.0f} s ([acme] request_timeout)"
                )
        log.debug("%s %s -> HTTP %d, %d bytes", method, url, answer.status_code, len(data))
        if len(data) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(url)
        return Response(answer.status_code, answer.headers, data)

    def close(self) -> None:
        self.session.close()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def require_safe_url(url: str) -> None:
    """Every endpoint, Location and Link the CA gives must be https:// (http:// only to a
    loopback address, for tests and a CA on this host): a directory that names an
    http:// endpoint would otherwise get signed requests in clear text."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and (host == "localhost" or _is_loopback(host)):
        return
    raise CAError(
        f"the CA names {url}: only https:// URLs are used (http:// only on loopback); refusing it",
        problem_type="unsafe-url",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def signing_alg(key: jose.JWK) -> jose.JWASignature:
    """The JWS algorithm for an account key (RS256 for RSA; ES256/384/512 by curve)."""
    if isinstance(key, jose.JWKEC):
        size = key.key.curve.key_size
        return {256: jose.ES256, 384: jose.ES384}.get(size, jose.ES512)
    return jose.RS256


def _read_bounded(answer: requests.Response) -> bytes:
    """At most MAX_RESPONSE_BYTES + 1 bytes of the body; urllib3's errors as requests' ones."""
    try:
        return bytes(answer.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True))
    except urllib3.exceptions.ReadTimeoutError as err:
        raise requests.exceptions.ReadTimeout(err) from err
    except urllib3.exceptions.ProtocolError as err:
        raise requests.exceptions.ChunkedEncodingError(err) from err
    except urllib3.exceptions.DecodeError as err:
        raise requests.exceptions.ContentDecodingError(err) from err
    except urllib3.exceptions.SSLError as err:
        raise requests.exceptions.SSLError(err) from err
    except urllib3.exceptions.HTTPError as err:
        raise requests.exceptions.ConnectionError(err) from err


def check(response: Response, *, want_json: bool = False) -> Response:
    """Raise what an error answer means: a 409 naming a Location (the resource exists there,
    e.g. an account for this key) as ``ConflictError``, a problem document as
    ``messages.Error``, anything else as ``UnexpectedResponse``."""
    content_type = response.headers.get("Content-Type")
    if response.status == 409 and "Location" in response.headers:
        raise acme_errors.ConflictError(response.headers["Location"])
    if response.status >= 400:
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise UnexpectedResponse(response.status, content_type)
        try:
            problem = messages.Error.from_json(document)
        except jose.DeserializationError:
            raise UnexpectedResponse(response.status, content_type) from None
        raise problem
    if want_json:
        try:
            response.json()
        except ValueError:
            kind = content_type.split(";")[0].strip() if content_type else None
            raise acme_errors.ClientError(f"Unexpected response Content-Type: {kind}") from None
    return response

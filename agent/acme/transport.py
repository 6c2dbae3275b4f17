"""HTTP under the ACME library: bounded response sizes, and the status and Retry-After of
each thread's last response, so that retries can honour what the CA asked for."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import requests
from acme import client as acme_client
from acme import errors as acme_errors

log = logging.getLogger(__name__)

# No ACME response we need comes near this (a certificate chain is a few KiB); a larger
# one is refused before it is held in memory.
MAX_RESPONSE_BYTES = 1024 * 1024


class ResponseTooLarge(acme_errors.ClientError):
    def __str__(self) -> str:
        return f"the response to {self.args[0]} was larger than {MAX_RESPONSE_BYTES} bytes"


class Network(acme_client.ClientNetwork):
    """``ClientNetwork`` that streams and bounds every body and remembers, per thread, the
    last response's status and Retry-After. It logs no bodies (they may carry keys' JWS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._nonce_lock = threading.Lock()
        # Several orders share this client: as many pooled connections as orders at once.
        from requests.adapters import HTTPAdapter

        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.hold_until = 0.0  # monotonic time before which no request is sent (Retry-After)
        # requests looks through the whole environment for proxy settings on every request
        # (a third of the client's CPU in a mass renewal); without any *_proxy variable
        # there is nothing to find. CA trust never comes from the environment: verify_ssl.
        if not any(key.lower().endswith("_proxy") for key in os.environ):
            self.session.trust_env = False

    def _get_nonce(self, url: str, new_nonce_url: str) -> Any:
        with self._nonce_lock:  # the library's pop-after-check is not safe across threads
            return super()._get_nonce(url, new_nonce_url)

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

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        wait = self.hold_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        kwargs["verify"] = self.verify_ssl
        kwargs.setdefault("headers", {}).setdefault("User-Agent", self.user_agent)
        kwargs.setdefault("timeout", self._default_timeout)
        kwargs["stream"] = True
        response = self.session.request(method, url, *args, **kwargs)
        try:
            body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        finally:
            response.close()
        self._local.status = response.status_code
        self._local.retry_after = response.headers.get("Retry-After")
        log.debug("%s %s -> HTTP %d, %d bytes", method, url, response.status_code, len(body))
        if len(body) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(url)
        response._content = body
        response._content_consumed = True
        response.encoding = "utf-8"
        return response

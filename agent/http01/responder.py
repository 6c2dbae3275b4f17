"""The HTTP-01 responder: a small, hardened HTTP server that answers
``/.well-known/acme-challenge/<token>`` from its own tokens, from token files another
acme-agent process handed over, or (in a fleet) from a fallback lookup.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import IssuanceError
from ..model import TOKEN_RE, Challenge
from ..store.files import write_file_atomic

log = logging.getLogger(__name__)

CHALLENGE_PATH = "/.well-known/acme-challenge/"
# A slow or idle client must not hold a responder thread for long.
CLIENT_TIMEOUT = 5.0
# The responder faces the internet: a request (line and headers) larger than this, or a
# connection older than REQUEST_DEADLINE (slowloris), is dropped; at most MAX_CONNECTIONS
# are served at once, so idle or slow clients cannot starve a validation for long.
MAX_REQUEST_BYTES = 8192
REQUEST_DEADLINE = 10.0
MAX_CONNECTIONS = 256


class _LimitedReader:
    """A read-only stream that fails once more than ``limit`` bytes were read."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.left = raw, limit

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise ConnectionAbortedError("request too large")
        return data

    def readline(self, limit: int = -1) -> bytes:
        cap = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        return self._take(self.raw.readline(cap))

    def read(self, size: int = -1) -> bytes:
        return self._take(self.raw.read(min(size, self.left + 1) if size >= 0 else self.left + 1))

    def close(self) -> None:
        self.raw.close()


class _Handler(BaseHTTPRequestHandler):
    server: _ResponderServer
    timeout = CLIENT_TIMEOUT
    server_version = "acme-agent"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile = _LimitedReader(self.rfile, MAX_REQUEST_BYTES)  # type: ignore[assignment]
        # A hard deadline: an idle timeout alone does not stop a client that sends a byte
        # every few seconds.
        self._deadline = threading.Timer(REQUEST_DEADLINE, self._abort)
        self._deadline.daemon = True
        self._deadline.start()

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # too large, too slow, or gone: nothing to answer
            super().handle()

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        token = (
            self.path.removeprefix(CHALLENGE_PATH) if self.path.startswith(CHALLENGE_PATH) else ""
        )
        body = self.server.lookup(token) if TOKEN_RE.match(token) else None
        if body is None:
            self.send_error(404)
            return
        data = body.encode("ascii")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("responder: %s %s", self.address_string(), format % args)


class _ResponderServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    tokens: dict[str, str]
    tokens_dir: Path | None = None
    fallback: Callable[[str], str | None] | None = None

    def server_activate(self) -> None:
        super().server_activate()
        self._active: collections.OrderedDict[int, socket.socket] = collections.OrderedDict()
        self._active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """At MAX_CONNECTIONS the oldest connection is dropped, never the new one: a
        validator's request is short, a slow client's is not."""
        with self._active_lock:
            while len(self._active) >= MAX_CONNECTIONS:
                _, oldest = self._active.popitem(last=False)
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            self._active[id(request)] = request
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active.pop(id(request), None)

    def lookup(self, token: str) -> str | None:
        """A token of ours, or one another acme-agent process handed over in tokens_dir,
        or (in a cluster) one another host published in Redis."""
        if token in self.tokens:
            return self.tokens[token]
        if self.tokens_dir is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                return (self.tokens_dir / token).read_text()
        return self.fallback(token) if self.fallback is not None else None


class Responder:
    """An HTTP-01 responder on ``host:port``. It sleeps in ``select`` until a request or
    ``close()`` arrives (a socketpair wakes it): no polling, so an idle daemon costs nothing."""

    def __init__(
        self,
        host: str,
        port: int,
        tokens_dir: Path | None = None,
        fallback: Callable[[str], str | None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tokens_dir = tokens_dir
        self.fallback = fallback  # tokens not found here: e.g. Redis, in a cluster
        self.tokens: dict[str, str] = {}
        self._server: _ResponderServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        self._server = self._bind()
        self._server.tokens = self.tokens
        self._server.tokens_dir = self.tokens_dir
        self._server.fallback = self.fallback
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="http01-responder", daemon=True)
        self._thread.start()
        if self.tokens_dir is not None:
            owner = f"{os.getpid()} {self.host} {self.port}\n".encode()
            write_file_atomic(self.tokens_dir / OWNER_FILE, owner, 0o600)

    def _serve(self) -> None:
        assert self._server is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ, "accept")
            selector.register(self._wake[0], selectors.EVENT_READ, "wake")
            while True:
                for key, _ in selector.select():
                    if key.data == "wake":
                        return
                    self._server._handle_request_noblock()

    def _bind(self) -> _ResponderServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("Responder", (_ResponderServer,), {"address_family": family})
        try:
            return server_cls((self.host, self.port), _Handler)
        except OSError as err:
            hint = (
                "another program holds the port: stop it, or let nginx answer with "
                '[http01] mode = "webroot" (see config/nginx/acme-challenge.conf)'
                if err.errno == errno.EADDRINUSE
                else "run as root or give the agent CAP_NET_BIND_SERVICE for ports below 1024"
            )
            raise IssuanceError(
                f"cannot listen on {self.host}:{self.port} for HTTP-01 ({err.strerror}): {hint}"
            ) from None

    def add(self, challenges: Sequence[Challenge]) -> None:
        for challenge in challenges:
            self.tokens[challenge.token] = challenge.key_authorization

    def remove(self, challenges: Sequence[Challenge]) -> None:
        for challenge in challenges:
            self.tokens.pop(challenge.token, None)

    def close(self) -> None:
        if self.tokens_dir is not None and self._server is not None:
            with contextlib.suppress(OSError):
                (self.tokens_dir / OWNER_FILE).unlink()
        if self._wake is not None:
            self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.server_close()
        if self._wake is not None:
            for sock in self._wake:
                sock.close()
        self._server = self._thread = self._wake = None


OWNER_FILE = ".responder"  # in tokens_dir: "pid host port" of the daemon's responder


def remove_handed_over_tokens(folder: Path) -> None:
    """Token files in a hand-over folder whose writer is gone (a killed worker)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name != OWNER_FILE and TOKEN_RE.match(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

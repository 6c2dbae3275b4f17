"""HTTP-01 solvers behind a two-method seam: ``present`` the tokens, ``cleanup`` after.

- :class:`StandaloneSolver` binds a small responder only while challenges are pending.
- :class:`WebrootSolver` writes token files under ``<webroot>/.well-known/acme-challenge/``.
- :class:`NoSolver` is for CAs that pre-approve domains: a pending authorization is an error.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from .errors import ConfigError, IssuanceError
from .protocol import TOKEN_RE, Challenge

log = logging.getLogger(__name__)

CHALLENGE_PATH = "/.well-known/acme-challenge/"
# A slow or idle client must not hold a responder thread for long.
CLIENT_TIMEOUT = 10.0
# How often serve_forever checks for shutdown; the default 0.5 s slows every issuance.
SHUTDOWN_POLL = 0.02


class Solver(Protocol):
    def present(self, challenges: Sequence[Challenge]) -> None: ...

    def cleanup(self) -> None: ...


class _Handler(BaseHTTPRequestHandler):
    server: _ResponderServer
    timeout = CLIENT_TIMEOUT
    server_version = "acme-agent"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        token = (
            self.path.removeprefix(CHALLENGE_PATH) if self.path.startswith(CHALLENGE_PATH) else ""
        )
        body = self.server.tokens.get(token) if TOKEN_RE.match(token) else None
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
    tokens: dict[str, str]


class StandaloneSolver:
    """Answers HTTP-01 on ``host:port``; the socket is open only between present and cleanup."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: _ResponderServer | None = None
        self._thread: threading.Thread | None = None

    def present(self, challenges: Sequence[Challenge]) -> None:
        if self._server is None:
            self._server = self._bind()
            self._server.tokens = {}
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL},
                name="http01-responder",
                daemon=True,
            )
            self._thread.start()
        for challenge in challenges:
            self._server.tokens[challenge.token] = challenge.key_authorization

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

    def cleanup(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._server = None
        self._thread = None


class WebrootSolver:
    """Writes token files where a web server (nginx) already serves them."""

    def __init__(self, webroot: Path) -> None:
        self.folder = webroot / ".well-known" / "acme-challenge"
        self._written: list[Path] = []

    def present(self, challenges: Sequence[Challenge]) -> None:
        try:
            self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            for challenge in challenges:
                if not TOKEN_RE.match(challenge.token):  # never let a CA string pick a path
                    raise IssuanceError(f"{challenge.domain}: refusing an unsafe challenge token")
                path = self.folder / challenge.token
                path.write_text(challenge.key_authorization)
                path.chmod(0o644)
                self._written.append(path)
        except OSError as err:
            raise ConfigError(
                f"[http01] webroot: cannot write {self.folder} ({err.strerror}); "
                "check the path exists and is writable by the agent"
            ) from None

    def cleanup(self) -> None:
        for path in self._written:
            with contextlib.suppress(OSError):
                path.unlink()
        self._written.clear()


class NoSolver:
    """For CAs that validate domains out of band (e.g. pre-approved on AWS ACM's endpoint)."""

    def present(self, challenges: Sequence[Challenge]) -> None:
        names = ", ".join(sorted({c.domain for c in challenges}))
        raise IssuanceError(
            f'the CA asks to validate {names}, but [http01] mode = "none": pre-approve the '
            'domain on the CA, or set mode = "standalone" or "webroot"'
        )

    def cleanup(self) -> None:
        return None

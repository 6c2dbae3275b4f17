"""HTTP-01 solvers behind the two-method seam of :class:`agent.model.Solver`: ``present``
the tokens, ``cleanup`` after.

- :class:`StandaloneSolver` binds a small responder only while challenges are pending.
- :class:`WebrootSolver` writes token files under ``<webroot>/.well-known/acme-challenge/``.
- :class:`NoSolver` is for CAs that pre-approve domains: a pending authorization is an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError, IssuanceError
from ..model import TOKEN_RE, Challenge
from .responder import OWNER_FILE, Responder

log = logging.getLogger(__name__)


class StandaloneSession:
    """One responder on ``host:port`` shared by every issuance of a run (several may run at
    once). It binds when the first challenge is presented and closes when the last one is
    cleaned up, so the port is open only while a challenge is pending.

    When the port is held by a running ``acme-agent run`` on this host (its responder stays
    up), tokens are handed to it as files in ``tokens_dir`` instead.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tokens_dir: Path | None = None,
        fallback: Callable[[str], str | None] | None = None,
    ) -> None:
        self.responder = Responder(host, port, fallback=fallback)
        self.tokens_dir = tokens_dir
        self._lock = threading.Lock()
        self._users = 0
        self.handed_over = False

    def acquire(self) -> bool:
        """Make sure someone serves tokens; True when that is our own responder."""
        with self._lock:
            self._users += 1
            if self.responder.running or self.handed_over:
                return not self.handed_over
            try:
                self.responder.start()
                return True
            except IssuanceError:
                if self.tokens_dir is None or not _daemon_serves(
                    self.tokens_dir, self.responder.host, self.responder.port
                ):
                    self._users -= 1
                    raise
                log.info("HTTP-01 port held by the running acme-agent; handing tokens to it")
                self.handed_over = True
                return False

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self.responder.close()
                self.responder.tokens.clear()
                self.handed_over = False


class StandaloneSolver:
    """The challenges of one issuance, served by a (shared) :class:`StandaloneSession`."""

    def __init__(
        self,
        host: str | StandaloneSession,
        port: int = 0,
        tokens_dir: Path | None = None,
    ) -> None:
        if isinstance(host, StandaloneSession):
            self._session = host
        else:
            self._session = StandaloneSession(host, port, tokens_dir)
        self._mine: list[Challenge] = []
        self._handover: WebrootSolver | None = None
        self._acquired = False

    def present(self, challenges: Sequence[Challenge]) -> None:
        if not self._acquired:
            own = self._session.acquire()
            self._acquired = True
            if not own:
                assert self._session.tokens_dir is not None
                self._handover = WebrootSolver.into(self._session.tokens_dir)
        self._mine += challenges
        if self._handover is not None:
            self._handover.present(challenges)
        else:
            self._session.responder.add(challenges)

    def cleanup(self) -> None:
        if self._handover is not None:
            self._handover.cleanup()
        else:
            self._session.responder.remove(self._mine)
        self._mine.clear()
        if self._acquired:
            self._acquired = False
            self._handover = None
            self._session.release()


def _daemon_serves(tokens_dir: Path, host: str, port: int) -> bool:
    """Is a live acme-agent daemon's responder serving tokens_dir on host:port?"""
    try:
        pid_text, owner_host, owner_port = (tokens_dir / OWNER_FILE).read_text().split()
        os.kill(int(pid_text), 0)
    except (OSError, ValueError):
        return False
    return (owner_host, int(owner_port)) == (host, port)


class WebrootSolver:
    """Writes token files where a web server (nginx) already serves them."""

    def __init__(self, webroot: Path) -> None:
        self.folder = webroot / ".well-known" / "acme-challenge"
        self._written: list[Path] = []

    @classmethod
    def into(cls, folder: Path) -> WebrootSolver:
        """Token files directly in ``folder`` (the daemon's hand-over directory)."""
        solver = cls(folder)
        solver.folder = folder
        return solver

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

"""HTTP-01 solvers behind the two-method seam of :class:`agent.model.Solver`: ``present``
the tokens, ``cleanup`` after.

- :class:`StandaloneSolver` binds a small responder only while challenges are pending.
- :class:`WebrootSolver` writes token files under ``<webroot>/.well-known/acme-challenge/``.
- :class:`NoSolver` is for CAs that pre-approve domains: a pending authorization is an error.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
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


# What the web server's workers (e.g. www-data) must be able to read, whatever our umask.
PUBLIC_DIR_MODE = 0o755
TOKEN_MODE = 0o644
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class WebrootSolver:
    """Writes token files where a web server (nginx) already serves them:
    ``<webroot>/.well-known/acme-challenge/<token>``, folders 0755 and files 0644 whatever
    the umask (nginx workers run unprivileged).

    The webroot's owner may be another user (www-data), so nothing here follows a link:
    each level is opened with ``O_NOFOLLOW`` relative to the one above, a level that is a
    symlink or not owned by us (or root) is refused, and token files are created with
    ``O_EXCL|O_NOFOLLOW`` and removed relative to their folder.
    """

    def __init__(self, webroot: Path) -> None:
        self.webroot = webroot
        self.levels: tuple[str, ...] = (".well-known", "acme-challenge")
        self._fd: int | None = None  # the token folder, open from present to cleanup
        self._written: list[str] = []

    @property
    def folder(self) -> Path:
        return self.webroot.joinpath(*self.levels)

    @classmethod
    def into(cls, folder: Path) -> WebrootSolver:
        """Token files directly in ``folder`` (the daemon's hand-over directory)."""
        solver = cls(folder)
        solver.levels = ()
        return solver

    def present(self, challenges: Sequence[Challenge]) -> None:
        for challenge in challenges:  # never let a CA string pick a path
            if not TOKEN_RE.match(challenge.token):
                raise IssuanceError(f"{challenge.domain}: refusing an unsafe challenge token")
        try:
            if self._fd is None:
                self._fd = self._open_folder()
            for challenge in challenges:
                self._write(self._fd, challenge.token, challenge.key_authorization.encode())
                self._written.append(challenge.token)
        except OSError as err:
            raise ConfigError(
                f"[http01] webroot: cannot write {self.folder} ({err.strerror}); check the "
                "path exists and is writable by the agent (and in ReadWritePaths= under systemd)"
            ) from None

    def _open_folder(self) -> int:
        fd = os.open(self.webroot, os.O_RDONLY | os.O_DIRECTORY)
        for name in self.levels:
            fd = _open_level(fd, name, self.webroot)  # takes fd: closes it on every path
        return fd

    @staticmethod
    def _write(folder_fd: int, token: str, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with contextlib.suppress(FileNotFoundError):
            os.unlink(token, dir_fd=folder_fd)  # a leftover of a killed run
        fd = os.open(token, flags, TOKEN_MODE, dir_fd=folder_fd)
        try:
            os.fchmod(fd, TOKEN_MODE)  # the umask narrowed it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def cleanup(self) -> None:
        if self._fd is None:
            return
        for token in self._written:
            with contextlib.suppress(OSError):
                os.unlink(token, dir_fd=self._fd)
        self._written.clear()
        os.close(self._fd)
        self._fd = None


def _open_level(parent_fd: int, name: str, webroot: Path) -> int:
    """``name`` under ``parent_fd``, created 0755 if missing; never a link, never a folder
    another user could swap things in. ``parent_fd`` is closed here, on every path."""
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, PUBLIC_DIR_MODE, dir_fd=parent_fd)
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise IssuanceError(
                f"[http01] webroot: {webroot}/.../{name} is a symlink or not a folder; "
                "refusing to follow it (remove it: the agent creates it)"
            ) from None
        raise
    finally:
        os.close(parent_fd)
    try:
        _check_level(fd, name, webroot)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_level(fd: int, name: str, webroot: Path) -> None:
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()):
        raise IssuanceError(
            f"[http01] webroot: {webroot}/.../{name} belongs to uid {info.st_uid}, who could "
            f"swap the token files for links; fix with: chown root {webroot}/.well-known "
            f"{webroot}/.well-known/acme-challenge"
        )
    if stat.S_IMODE(info.st_mode) != PUBLIC_DIR_MODE and info.st_uid == os.geteuid():
        os.fchmod(fd, PUBLIC_DIR_MODE)  # e.g. made 0700 under umask 077 by an older version


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

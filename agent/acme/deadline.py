"""A total deadline for each HTTP request to the CA, not a timeout per read: a CA that
sends its answer one byte every few seconds never trips a read timeout, so each request
arms a timer that shuts the connection's socket down when ``request_timeout`` has passed
since it started (connect, send, status line, headers and body alike).

Installed by mounting :class:`DeadlineAdapter`; the poster brackets each request with
:func:`bounded` (the request runs in the calling thread, the timer in its own).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_CURRENT = threading.local()  # the Budget of the request this thread is making
# Held while a connection changes hands or a deadline fires: a deadline only shuts down a
# connection still serving the request that armed it (connections are pooled and reused).
_OWNERS = threading.Lock()
log = logging.getLogger(__name__)


@dataclass
class Budget:
    seconds: float
    exceeded: bool = False
    armed: list[_Armed] = field(default_factory=list)


@dataclass(order=True)
class _Armed:
    at: float
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class _Keeper:
    """One thread for every deadline of the process (a timer thread per request would
    cost a thread start for each of a mass renewal's tens of thousands of requests)."""

    def __init__(self) -> None:
        self._heap: list[_Armed] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> _Armed:
        armed = _Armed(time.monotonic() + seconds, callback)
        with self._cond:
            heapq.heappush(self._heap, armed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return armed

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0].at > time.monotonic():
                    wait = self._heap[0].at - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                armed = heapq.heappop(self._heap)
            try:
                armed.callback()  # it checks, under _OWNERS, that it is still wanted
            except Exception:  # never let one deadline end the keeper
                log.exception("deadline keeper: a deadline could not be enforced")


_KEEPER = _Keeper()


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[Budget]:
    """Every connection used inside is shut down ``seconds`` after it is asked to send;
    ``exceeded`` says whether that happened (the request then fails: say why)."""
    budget = Budget(seconds)
    _CURRENT.budget = budget
    try:
        yield budget
    finally:
        _CURRENT.budget = None
        with _OWNERS:
            for armed in budget.armed:
                armed.cancelled = True


@contextlib.contextmanager
def until(at: float) -> Iterator[None]:
    """Inside, this thread's requests and retries end by ``at`` (time.monotonic()): the
    issuance deadline, so that retries of one step cannot outlast the whole issuance."""
    previous = getattr(_CURRENT, "until", None)
    _CURRENT.until = at
    try:
        yield
    finally:
        _CURRENT.until = previous


def remaining() -> float | None:
    """Seconds left before this thread's :func:`until` (None: no deadline)."""
    at = getattr(_CURRENT, "until", None)
    return None if at is None else at - time.monotonic()


class _Deadline:
    """Mixed into urllib3's connections: arm the budget's timer when a request starts."""

    sock: socket.socket | None
    _owner: Budget | None = None

    def connect(self) -> None:
        """Connect and TLS handshake count too (urllib3 connects before request())."""
        self._arm()
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._arm()
        super().request(*args, **kwargs)  # type: ignore[misc]

    def _arm(self) -> None:
        budget: Budget | None = getattr(_CURRENT, "budget", None)
        with _OWNERS:
            if self._owner is budget and budget is not None and budget.armed:
                return  # armed at connect for this same request
            self._owner = budget
        if budget is not None:
            armed = _KEEPER.arm(budget.seconds, lambda: self._expire(budget, armed))
            budget.armed.append(armed)

    def _expire(self, budget: Budget, armed: _Armed) -> None:
        with _OWNERS:
            if armed.cancelled or self._owner is not budget:
                return  # done in time, or this connection now serves another request
            budget.exceeded = True
            shutdown = getattr(self.sock, "shutdown", None)
            if shutdown is not None:
                with contextlib.suppress(OSError):
                    shutdown(socket.SHUT_RDWR)


class _HTTPConnection(_Deadline, HTTPConnection):
    pass


class _HTTPSConnection(_Deadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections honour :func:`bounded`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

"""Waking the daemon's main loop from threads and signal handlers."""

from __future__ import annotations

import contextlib
import os
import select


class Waker:
    """Wakes the main loop from threads and from signal handlers. A pipe, not a
    threading.Event: Event.set() takes a lock that the interrupted main thread may be
    holding inside Event.wait(), and a signal handler calling it can deadlock."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already full: a wake is pending anyway
            os.write(self._write, b"x")

    def wait(self, timeout: float | None = None) -> None:
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

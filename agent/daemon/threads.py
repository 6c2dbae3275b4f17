"""The daemon's threads, supervised: one that dies of a bug says so once, with its
traceback, and the daemon stops (exit 1, so that systemd restarts it) instead of living on
as a process that looks healthy and does nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def supervised(
    name: str, target: Callable[[], None], on_death: Callable[[str], None]
) -> threading.Thread:
    def body() -> None:
        try:
            target()
        except Exception:
            log.exception("the %s thread died; exiting so that the agent is restarted", name)
            on_death(f"the {name} thread died")

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread

"""The daemon's worker: a child ``acme-agent renew --cert ...`` process per batch.

The resident daemon stays small (no protocol stack) and the child reports back through the
state on disk (attempts, facts, ARI state) and a file of request durations for metrics.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import DURATIONS_ENV

if TYPE_CHECKING:
    from .attempts import Attempt
    from .renewer import Outcome

log = logging.getLogger(__name__)


class ChildRenewal:
    def __init__(self, config_path: Path, state_dir: Path) -> None:
        self.config_path = config_path
        self.samples_path = state_dir / "request-durations.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def argv(self, names: list[str]) -> list[str]:
        argv = [sys.executable, "-m", "agent", "--config", str(self.config_path), "renew"]
        level = logging.getLogger().getEffectiveLevel()
        if level <= logging.DEBUG:
            argv.insert(3, "-v")
        for name in names:
            argv += ["--cert", name]
        return argv

    def run(self, names: list[str]) -> int:
        """Renew ``names`` (those due; the child decides again); the child's exit code."""
        env = {**os.environ, DURATIONS_ENV: str(self.samples_path)}
        env.pop("NOTIFY_SOCKET", None)  # only the daemon speaks to systemd
        log.debug("renewing %s in a child process", ", ".join(names))
        with self._lock:
            if self._stopping:
                return 0
            self._proc = subprocess.Popen(
                self.argv(names), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
            )
        code = self._proc.wait()
        with self._lock:
            self._proc = None
        return code

    def stop(self, grace: float) -> None:
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _outcome_of(name: str, attempt: Attempt) -> Outcome:
    from .renewer import Outcome

    return Outcome(name, attempt.result, attempt.detail, error_type=attempt.error_type)

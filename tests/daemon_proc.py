"""Run ``acme-agent run`` as a real child process and watch its log (for tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent


class DaemonProc:
    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        cwd: Path | None = None,
        python_flags: tuple[str, ...] = (),
    ) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "agent", "--config", str(config), "run"],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            start_new_session=new_session,  # its own process group, for killpg
            cwd=cwd,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 20, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {pattern!r} within {timeout} s:\n{self.text()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # thread stacks into the log, for the report
            time.sleep(0.5)
            self.proc.kill()
            code = self.proc.wait()
        self.handle.close()
        return code

"""External commands (hooks, config tests, reloads): judged by their own exit status,
in a process group of their own that a timeout kills whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.deploy.commands import run


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def test_a_command_that_forks_is_judged_by_its_own_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    result = run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; echo started"], timeout=10)
    assert result.ok, result.summary
    assert time.monotonic() - started < 5  # not waiting for the grandchild's pipe
    os.kill(int(pidfile.read_text()), 9)


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    result = run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; sleep 30"], timeout=1)
    assert not result.ok and "timed out after 1 s and was killed" in result.summary
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_failure_reports_the_tail_of_the_output() -> None:
    result = run(["sh", "-c", "echo one; echo two >&2; exit 3"], timeout=10)
    assert (
        not result.ok
        and result.summary == "`sh -c echo one; echo two >&2; exit 3` exited with 3: one | two"
    )


def test_an_interrupted_run_takes_its_command_with_it(tmp_path: Path) -> None:
    """Ctrl-C in `renew`, or SIGTERM in the daemon's worker, while a hook runs."""
    import signal

    import pytest

    marker = tmp_path / "ran-to-the-end"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(["sh", "-c", f"sleep 2; touch {marker}"], timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(2.5)
    assert not marker.exists()

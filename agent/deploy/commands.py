"""Run external commands (config tests, reloads, hooks): argv lists, no shell, a timeout,
and a minimal environment so no secret of ours ever reaches a child."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Only these variables of our own environment are passed on.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME", "SYSTEMD_LOG_LEVEL")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_TAIL = 600  # characters of a failed command's output to report


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    ok: bool
    summary: str  # one line: what happened, with the tail of the output on failure


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str], timeout: float, extra_env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run ``argv`` in a process group of its own, wait for that process (not for its
    output pipe, which a forked grandchild such as ``sh -c "x & echo started"`` keeps
    open), and on timeout kill the whole group. Output goes to a temporary file."""
    args = tuple(argv)
    shown = " ".join(args)
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=child_env(extra_env), start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            return CommandResult(args, False, f"`{shown}`: command not found")
        except PermissionError:
            return CommandResult(args, False, f"`{shown}`: permission denied")
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return CommandResult(
                args, False, f"`{shown}` timed out after {timeout:.0f} s and was killed"
            )
        except BaseException:  # Ctrl-C, or SIGTERM in the worker: the command goes too
            kill_group(proc)
            raise
        output.seek(0)
        text = output.read(1024 * 1024).decode("utf-8", "replace").strip()
    if code == 0:
        return CommandResult(args, True, f"`{shown}` succeeded")
    tail = " | ".join(text[-OUTPUT_TAIL:].splitlines())
    return CommandResult(args, False, f"`{shown}` exited with {code}: {tail}")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to a child's whole process group (it leads it: start_new_session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

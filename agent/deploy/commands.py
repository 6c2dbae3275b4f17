"""Run external commands (config tests, reloads, hooks): argv lists, no shell, a timeout,
and a minimal environment so no secret of ours ever reaches a child."""

from __future__ import annotations

import os
import subprocess
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
    args = tuple(argv)
    shown = " ".join(args)
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env=child_env(extra_env),
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(args, False, f"`{shown}`: command not found")
    except PermissionError:
        return CommandResult(args, False, f"`{shown}`: permission denied")
    except subprocess.TimeoutExpired:
        return CommandResult(
            args, False, f"`{shown}` timed out after {timeout:.0f} s and was killed"
        )
    output = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode == 0:
        return CommandResult(args, True, f"`{shown}` succeeded")
    tail = " | ".join(output[-OUTPUT_TAIL:].splitlines())
    return CommandResult(args, False, f"`{shown}` exited with {proc.returncode}: {tail}")

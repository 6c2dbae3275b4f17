"""``[certificate.deploy]`` and ``[hooks]``: where certificates go and what runs after."""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass
from pathlib import Path

from .tomltable import Table

TARGETS = ("fullchain", "cert", "chain", "key", "combined")
KEY_TARGETS = ("key", "combined")  # files that hold the private key get `mode`
DEFAULT_KEY_MODE = 0o600
CERT_MODE = 0o644
DEFAULT_TEST_COMMAND = ("nginx", "-t")
DEFAULT_RELOAD_COMMAND = ("systemctl", "reload", "nginx")
# A hook or a reload that takes longer than this is stuck; it is killed and reported.
DEFAULT_COMMAND_TIMEOUT = 60.0
# nginx -s reload returns before workers switch; give them this long to serve the new one.
DEFAULT_VERIFY_TIMEOUT = 15.0
RELOADERS = ("nginx", "command")


@dataclass(frozen=True)
class DeployConfig:
    targets: tuple[tuple[str, Path], ...] = ()  # (kind, path), kind in TARGETS
    owner: str | None = None
    group: str | None = None
    key_mode: int = DEFAULT_KEY_MODE
    reload: str | None = None  # "nginx" or "command"; None = no reload
    test_command: tuple[str, ...] | None = None
    reload_command: tuple[str, ...] | None = None
    verify: tuple[str, int] | None = None
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    hook: tuple[str, ...] | None = None
    timeout: float = DEFAULT_COMMAND_TIMEOUT

    def path(self, kind: str) -> Path | None:
        return next((p for k, p in self.targets if k == kind), None)

    @property
    def reloads(self) -> bool:
        return self.reload is not None


@dataclass(frozen=True)
class HooksConfig:
    pre: tuple[str, ...] | None = None
    post: tuple[str, ...] | None = None
    timeout: float = DEFAULT_COMMAND_TIMEOUT


def argv(table: Table, key: str) -> tuple[str, ...] | None:
    """An argv list (run without a shell): a non-empty list of non-empty strings."""
    value = table.get(key, list)
    if value is None:
        return None
    if not value or not all(isinstance(v, str) and v for v in value):
        raise table.error(key, 'must be a non-empty list of strings, e.g. ["nginx", "-t"]')
    return tuple(value)


def _timeout(table: Table, key: str, default: float) -> float:
    value = table.get(key, (int, float), default)
    if not 0 < value <= 3600:
        raise table.error(key, f"{value} must be between 0 and 3600 seconds")
    return float(value)


def parse_deploy(table: Table) -> DeployConfig | None:
    if not table.data:
        table.finish()
        return None
    targets = []
    for kind in TARGETS:
        path = table.text(kind)
        if path is not None:
            target = Path(path)
            if not target.is_absolute():
                raise table.error(kind, f"{path!r} must be an absolute path")
            targets.append((kind, target))
    owner, group = table.text("owner"), table.text("group")
    _check_owner(table, owner, group)
    key_mode = _mode(table)
    reload = table.get("reload", str)
    if reload is not None and reload not in RELOADERS:
        raise table.error("reload", f'{reload!r} must be "nginx" or "command"')
    test_command, reload_command = argv(table, "test_command"), argv(table, "reload_command")
    if reload == "nginx":
        test_command = test_command or DEFAULT_TEST_COMMAND
        reload_command = reload_command or DEFAULT_RELOAD_COMMAND
    elif reload == "command" and reload_command is None:
        raise table.error("reload_command", 'is required with reload = "command"')
    verify = _verify(table)
    if verify is not None and reload is None:
        raise table.error("verify", 'needs a reload (reload = "nginx")')
    config = DeployConfig(
        targets=tuple(targets),
        owner=owner,
        group=group,
        key_mode=key_mode,
        reload=reload,
        test_command=test_command,
        reload_command=reload_command,
        verify=verify,
        verify_timeout=_timeout(table, "verify_timeout", DEFAULT_VERIFY_TIMEOUT),
        hook=argv(table, "hook"),
        timeout=_timeout(table, "timeout", DEFAULT_COMMAND_TIMEOUT),
    )
    table.finish()
    return config


def _check_owner(table: Table, owner: str | None, group: str | None) -> None:
    try:
        if owner is not None:
            pwd.getpwnam(owner)
    except KeyError:
        raise table.error("owner", f"no user {owner!r} on this host") from None
    try:
        if group is not None:
            grp.getgrnam(group)
    except KeyError:
        raise table.error("group", f"no group {group!r} on this host") from None


def _mode(table: Table) -> int:
    text = table.get("mode", str)
    if text is None:
        return DEFAULT_KEY_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        raise table.error("mode", f'{text!r} must be an octal string such as "0640"') from None
    if mode & ~0o777 or mode & 0o007:
        raise table.error("mode", f"{text!r}: key files must not be readable by others (e.g. 0640)")
    return mode


def _verify(table: Table) -> tuple[str, int] | None:
    text = table.text("verify")
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise table.error("verify", f"{text!r} must be HOST:PORT, e.g. 127.0.0.1:443")
    return host.strip("[]"), int(port)


def parse_hooks(table: Table) -> HooksConfig:
    hooks = HooksConfig(
        pre=argv(table, "pre"),
        post=argv(table, "post"),
        timeout=_timeout(table, "timeout", DEFAULT_COMMAND_TIMEOUT),
    )
    table.finish()
    return hooks

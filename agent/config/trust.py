"""Which files the agent believes: what only root, or the agent's own user, could have
written (OpenSSH's StrictModes). A file and each directory above it, symlinks resolved
and the link itself too, must be owned by root or the agent's uid and not writable by
group or others; a directory that others may write is fine only when it is sticky and
owned by root (``/tmp``: nobody can rename or remove what another user owns there).
Writable by the root group only (gid 0) is root's own; nothing on a read-only mount (a
Kubernetes ConfigMap, 0777 folders and all) can be written through it.

A root agent that read a configuration another user could edit would run that user's
``[deploy] hook`` as root, or send keys where that user likes.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from ..errors import ConfigError

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH


def check_trusted(path: Path, what: str, checked: set[str] | None = None) -> Path:
    """The file ``path`` names, symlinks resolved, once it and every directory above it
    (and the link itself, and the directories above the link) could only have been
    written by root or this process's user; read *that* path, not ``path``. Raises
    :class:`ConfigError` naming ``what``, the path, the owner and mode found and the
    command that fixes it. ``checked``: directories already found fine (saves stats)."""
    checked = checked if checked is not None else set()
    trusted = {0, os.geteuid()}
    try:
        # The link's own folder, symlinks and ".." resolved by the kernel's rules (a
        # textual normalisation would look at another file than the one read).
        folder = Path(path).parent.resolve(strict=True)
        given = folder / Path(path).name
        link = os.lstat(given)
        resolved = given.resolve(strict=True)
        info = os.stat(resolved)
    except OSError:
        return Path(path)  # missing or unreadable: the caller's own read says so
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in trusted:
        raise _untrusted(what, given, link, "is a symlink owned by another user",
                         f"rm {given} (and link it as root)")  # fmt: skip
    for parent in (*reversed(given.parents), *reversed(resolved.parents)):  # from / down
        if str(parent) in checked:
            continue
        try:
            parent_info = os.stat(parent)
        except OSError:
            continue
        _check_one(what, parent, parent_info, trusted)
        checked.add(str(parent))
    _check_one(what, resolved, info, trusted)
    return resolved


def _check_one(what: str, path: Path, info: os.stat_result, trusted: set[int]) -> None:
    is_dir = stat.S_ISDIR(info.st_mode)
    if info.st_uid not in trusted:
        fix = f"chown root {path}" + ("" if is_dir else f" && chmod go-w {path}")
        raise _untrusted(what, path, info, "is owned by another user", fix)
    if info.st_mode & _WRITABLE:
        if is_dir and info.st_mode & stat.S_ISVTX and info.st_uid == 0:
            return  # like /tmp
        if info.st_mode & _WRITABLE == stat.S_IWGRP and info.st_gid == 0:
            return  # writable by the root group only: root's own
        if _read_only_mount(path):
            return  # nobody writes through this mount (a Kubernetes ConfigMap or Secret)
        whom = "group and others" if info.st_mode & _WRITABLE == _WRITABLE else (
            "its group" if info.st_mode & stat.S_IWGRP else "every user")  # fmt: skip
        raise _untrusted(what, path, info, f"is writable by {whom}", f"chmod go-w {path}")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _untrusted(what: str, path: Path, info: os.stat_result, why: str, fix: str) -> ConfigError:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    mode = stat.S_IMODE(info.st_mode)
    return ConfigError(
        f"{what}: {path} {why} (owner {owner}, mode {mode:04o}), so it could have been "
        f"written by someone other than root or the agent's user; fix with: {fix}"
    )

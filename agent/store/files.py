"""Atomic files: every write of a key, certificate or state file is staged under a
temporary name, fsynced and renamed, so readers see the old content or the new, never
half; owner and mode are set before the first byte. Folders of state are created 0700."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

# Held while files that readers use are being swapped; the daemon takes it before a forced
# exit so that it never leaves in the middle of one.
SWAP_LOCK = threading.Lock()
TMP_PREFIX = ".tmp-"
log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOSPC:
        return (
            f"{path}: no space left on the device; free some space (the previous files are intact)"
        )
    if err.errno == errno.EROFS:
        return (
            f"{path}: read-only file system; under systemd, add it (or its folder) to "
            "ReadWritePaths= of acme-agent.service (systemctl edit acme-agent)"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: not writable ({err.strerror}); check permissions or ReadWritePaths="
    return f"{path}: {err.strerror or err}"


@dataclass(frozen=True)
class FileWrite:
    path: Path
    data: bytes
    mode: int
    uid: int = -1
    gid: int = -1


def write_file_atomic(path: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to ``path`` with ``mode`` (and owner) so readers see old or new, never half.

    Owner and mode are set on the temporary file before any byte is written, so a key is
    never readable by anyone it is not meant for, not even for a moment.
    """
    write_files_atomic([FileWrite(path, data, mode, uid, gid)])


def write_files_atomic(files: list[FileWrite]) -> None:
    """Stage every file (written and fsynced under a temporary name), then rename them all
    back to back: a key and its certificate in two files change within microseconds of
    each other, and a failure before the renames changes nothing."""
    staged: list[tuple[Path, FileWrite]] = []
    for item in files:
        remove_stale_temporaries(item.path)
    try:
        for item in files:
            tmp = item.path.with_name(temp_name(item.path.name))
            staged.append((tmp, item))
            _write_new(tmp, item)
    except OSError as err:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise StoreError(describe(err, staged[-1][1].path)) from err
    try:
        for tmp, item in staged:
            os.replace(tmp, item.path)
        for folder in dict.fromkeys(item.path.parent for item in files):
            fsync_dir(folder)
    except OSError as err:
        raise StoreError(describe(err, files[0].path)) from err


def temp_name(name: str) -> str:
    """``.tmp-<name>.<pid>.<random>``: the pid tells a dead writer's leftover from a live
    writer's file in progress."""
    return f"{TMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}"


def _writer_alive(leftover: Path) -> bool:
    try:
        pid = int(leftover.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return True  # another thread of ours is writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by a process killed mid-write (they are dotfiles
    without a .pem suffix, so nothing reads them; this keeps them from piling up). Files of
    writers still running are left alone."""
    with contextlib.suppress(OSError):
        for leftover in path.parent.glob(f"{TMP_PREFIX}{path.name}.*"):
            if not _writer_alive(leftover):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _write_new(tmp: Path, item: FileWrite) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, item.mode)
    try:
        os.fchmod(fd, item.mode)  # the umask may have narrowed it; before chown (no CAP_FOWNER)
        if item.uid != -1 or item.gid != -1:
            os.fchown(fd, item.uid, item.gid)
        view = memoryview(item.data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as err:
        raise StoreError(describe(err, path)) from err
    return path


def set_aside(path: Path, why: str) -> None:
    """A state file that is not what it should be (random bytes, the wrong JSON type): moved
    out of the way as ``<name>.corrupt-<time>`` and said once; the caller carries on as if
    it were missing (it is rebuilt)."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another process set it aside first
    except OSError as err:
        log.warning("%s: %s, and it cannot be moved aside (%s); ignored", path, why,
                    err.strerror)  # fmt: skip
        return
    log.warning("%s: %s; moved to %s, rebuilt as needed", path, why, aside.name)

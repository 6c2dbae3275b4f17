"""Watching the configuration, so that an edit is picked up without SIGHUP, and so that
nothing a configuration-management tool or Kubernetes does is missed:

- the folder of the main file, as written (not resolved): a main file that is a symlink
  swapped atomically (a ConfigMap's ``..data`` link) changes an entry there;
- ``certs_dir`` and its parent: a ``certs_dir`` removed and created again is watched
  again (inotify watches the old folder's inode, which is gone);
- a periodic :meth:`ConfigWatch.fingerprint` (the daemon's tick) as a safety net: the main
  file as its links resolve now, and ``certs_dir`` itself (inode and times).

Bursts of events (editors write several times) are coalesced into one reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _WatchdogNoise(logging.Filter):
    """watchdog's own lines: its DEBUG "in-event" lines would, with -v and a log file in a
    watched folder, be an event each (a loop); and stopping an observer while an event is
    queued logs an ERROR that means nothing to an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG and "called when the thread is inactive" not in (
            record.getMessage()
        )


for _name in (
    "watchdog.observers.inotify",
    "watchdog.observers.inotify_buffer",
    "watchdog.observers.inotify_c",
    "watchdog.observers.inotify_move_event_grouper",
):
    logging.getLogger(_name).addFilter(_WatchdogNoise())  # fmt: skip

# Coalesce bursts of file events (editors write several times) into one reload.
RELOAD_DEBOUNCE = 0.5
# watchdog event types that mean a file changed (it also reports files opened and closed
# for reading, which our own reload does: a loop if we reacted to them).
CHANGE_EVENTS = ("created", "modified", "moved", "deleted", "closed")


class ConfigWatch:
    def __init__(
        self, config_file: Path, certs_dir: Path | None, on_change: Callable[[str], None]
    ) -> None:
        self.config_file = Path(os.path.abspath(config_file))  # links not resolved
        self.config_dir = self.config_file.parent
        self.certs_dir = Path(os.path.abspath(certs_dir)) if certs_dir is not None else None
        self.on_change = on_change  # with what changed, for the log line
        self._debounce: threading.Timer | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._observer = self._new_observer()

    def _new_observer(self) -> Observer:  # type: ignore[valid-type]
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in CHANGE_EVENTS:
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    what = watch.relevant(Path(str(raw)), event.event_type) if raw else None
                    if what is not None:
                        watch.changed(what)
                        return

        observer = Observer()
        observer.daemon = True
        observer.start()
        folders = {self.config_dir}
        if self.certs_dir is not None:
            folders.add(self.certs_dir.parent)
            folders.add(self.certs_dir)
        for folder in folders:
            with contextlib.suppress(OSError):  # a folder not there (yet): the tick's check
                observer.schedule(Handler(), str(folder), recursive=False)
        return observer

    def restart(self) -> None:
        """Watch again (a watched folder was replaced): the new watch first, then the old
        one stopped, so that there is always one. Never raises (it logs)."""
        try:
            with self._lock:
                old, self._observer = self._observer, self._new_observer()
            if old is not None:
                old.stop()  # type: ignore[attr-defined]
        except Exception:
            log.exception("the configuration watch could not be restarted")

    def alive(self) -> bool:
        return self._observer is None or self._observer.is_alive()  # type: ignore[attr-defined]

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]

    def relevant(self, path: Path, kind: str = "modified") -> str | None:
        """What an event of ``kind`` on ``path`` changed (None: nothing of the
        configuration)."""
        if path.parent == self.config_dir and (
            path.name == self.config_file.name or path.name.startswith("..")
        ):
            return str(self.config_file)  # the file, or a ConfigMap's ..data link swapped
        if self.certs_dir is None:
            return None
        if path == self.certs_dir:  # "modified" is only a file in it added or removed
            return f"{self.certs_dir} (the folder itself)" if kind != "modified" else None
        if path.parent == self.certs_dir and path.suffix == ".toml":
            return str(path)
        return None

    def changed(self, what: str) -> None:
        """A change: ``on_change`` once the burst is over; a replaced ``certs_dir`` is
        watched again first."""
        if self.certs_dir is not None and what.startswith(f"{self.certs_dir} (the folder"):
            threading.Thread(target=self.restart, name="watch-restart", daemon=True).start()
        if self._debounce is not None:
            self._debounce.cancel()
        self._debounce = threading.Timer(RELOAD_DEBOUNCE, self.on_change, args=[what])
        self._debounce.daemon = True
        self._debounce.start()

    def fingerprint(self) -> tuple[object, ...]:
        """What the safety net compares: the main file as its links resolve now, and
        ``certs_dir`` itself (a re-created folder has another inode; an added or removed
        file changes its times). O(1): no file of ``certs_dir`` is read."""
        return (_identity(self.config_file), _identity(self.certs_dir))


def _identity(path: Path | None) -> tuple[int, ...] | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)

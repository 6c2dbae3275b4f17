"""Watching the configuration: the main file's folder and ``certs_dir`` (watchdog,
debounced), so an edit is picked up without SIGHUP."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

# Coalesce bursts of file events (editors write several times) into one reload.
RELOAD_DEBOUNCE = 0.5
# watchdog event types that mean a file changed (it also reports files opened and closed
# for reading, which our own reload does: a loop if we reacted to them).
CHANGE_EVENTS = ("created", "modified", "moved", "deleted", "closed")


class ConfigWatch:
    def __init__(
        self, config_file: Path, certs_dir: Path | None, on_change: Callable[[], None]
    ) -> None:
        self.config_file = config_file.resolve()
        self.certs_dir = certs_dir.resolve() if certs_dir is not None else None
        self.on_change = on_change
        self._debounce: threading.Timer | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in CHANGE_EVENTS:
                    return
                paths = {Path(str(event.src_path)), Path(str(getattr(event, "dest_path", "")))}
                if any(watch.is_config_path(p) for p in paths):
                    watch.changed()

        observer = Observer()
        observer.schedule(Handler(), str(self.config_file.parent), recursive=False)
        if self.certs_dir is not None and self.certs_dir != self.config_file.parent:
            observer.schedule(Handler(), str(self.certs_dir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def alive(self) -> bool:
        return self._observer is None or self._observer.is_alive()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]
            self._observer = None

    def is_config_path(self, path: Path) -> bool:
        if path == self.config_file:
            return True
        return (
            self.certs_dir is not None and path.parent == self.certs_dir and path.suffix == ".toml"
        )

    def changed(self) -> None:
        """A change: ``on_change`` once the burst is over."""
        if self._debounce is not None:
            self._debounce.cancel()
        self._debounce = threading.Timer(RELOAD_DEBOUNCE, self.on_change)
        self._debounce.daemon = True
        self._debounce.start()

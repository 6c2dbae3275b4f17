"""Logging for every front end: text lines, or one JSON object per line (for journald,
ELK): time, level, logger, message, and the fields a line carries (cert, domains, order,
error_type, ca). Never secrets: only what the text line says, structured."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FIELDS = ("cert", "domains", "order", "error_type", "ca")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        return json.dumps(entry)


# sd-daemon(3) priorities: a line starting "<N>" on a stream connected to the journal is
# stored with priority N, so `journalctl -p warning` shows our warnings and errors.
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


class JournalPrefix(logging.Formatter):
    """Prefixes every line of ``inner`` with its sd-daemon priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for lvl, p in PRIORITIES.items() if record.levelno >= lvl), 7)
        # Every line: journald stores each line of a traceback as an entry of its own.
        return "\n".join(f"<{priority}>{line}" for line in self.inner.format(record).split("\n"))


def stderr_is_journal() -> bool:
    """Is stderr the journal? systemd sets JOURNAL_STREAM to its "device:inode"."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(sys.stderr.fileno())
        return stream == f"{info.st_dev}:{info.st_ino}"
    except (OSError, ValueError):
        return False


def setup_logging(verbose: int, quiet: bool, log_format: str = "text") -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(levelname)s %(message)s")
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else text
    handler.setFormatter(JournalPrefix(formatter) if stderr_is_journal() else formatter)
    handler.set_name("acme-agent")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "acme-agent"] + [handler]
    root.setLevel(level)
    # Library internals (HTTP connections, scheduler jobs) only with -vv.
    logging.getLogger("acme").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)

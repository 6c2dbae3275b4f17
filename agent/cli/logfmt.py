"""Logging for every front end: text lines, or one JSON object per line (for journald,
ELK): time, level, logger, message, and the fields a line carries (cert, domains, order,
error_type). Never secrets: only what the text line says, structured."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FIELDS = ("cert", "domains", "order", "error_type")


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


def setup_logging(verbose: int, quiet: bool, log_format: str = "text") -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(levelname)s %(message)s")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    handler.set_name("acme-agent")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "acme-agent"] + [handler]
    root.setLevel(level)
    # The acme library logs whole JWS bodies at DEBUG; only -vv shows them.
    logging.getLogger("acme").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)

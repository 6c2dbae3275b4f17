"""One JSON object per log line (for journald, ELK): time, level, logger, message, and the
fields a line carries (cert, domains, order, error_type). Never secrets: only what the
text line says, structured."""

from __future__ import annotations

import json
import logging
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

"""This host's clock against the CA's: ``state_dir/clock-skew.json`` while a certificate
the CA just issued was already due by our clock and the CA's ``Date`` said we are more
than SKEW_LIMIT off (a clock 200 days fast orders again and again). ``check`` reports it
as CRITICAL and the metric ``acme_agent_clock_skew_seconds`` shows it."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from .certs import Store
from .files import set_aside, write_file_atomic

SKEW_LIMIT = timedelta(minutes=5)
FILE = "clock-skew.json"


def save_skew(store: Store, seconds: float, now: datetime) -> None:
    data = {"skew_seconds": seconds, "at": now.isoformat()}
    write_file_atomic(store.private_dir() / FILE, json.dumps(data).encode(), 0o600)


def clear_skew(store: Store) -> None:
    with contextlib.suppress(OSError):
        os.unlink(store.root / FILE)


def load_skew(store: Store) -> float | None:
    """Seconds this host's clock is ahead of the CA's (behind: negative), as last found
    beyond SKEW_LIMIT; None when not."""
    path = Path(store.root) / FILE
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        return float(json.loads(raw)["skew_seconds"])
    except Exception:  # any damage (untrusted input)
        set_aside(path, "not a clock skew record")
        return None

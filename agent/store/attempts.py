"""What happened last to each certificate (for `status`, `check` and metrics), and which
serial was revoked (so the next run reissues). ``state_dir/attempts/<name>.json``."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model import Outcome
from .certs import Store
from .files import set_aside, write_file_atomic

_SERIAL_RE = re.compile(r"\A[0-9a-f]{1,128}\Z")


@dataclass(frozen=True)
class Attempt:
    at: str  # ISO 8601, UTC
    result: str  # "issued", "deployed", "failed"
    detail: str
    revoked_serial: str = ""
    error_type: str = ""
    retry_after: float | None = None

    @property
    def failed(self) -> bool:
        return self.result == "failed"


def _path(store: Store, name: str) -> Any:
    return store.root / "attempts" / f"{name}.json"


def load_attempt(store: Store, name: str) -> Attempt | None:
    path = os.path.join(store.root, "attempts", name + ".json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    try:
        attempt = Attempt(**json.loads(raw))
        if not isinstance(attempt.at, str):
            raise TypeError("no time")
        datetime.fromisoformat(attempt.at)
        return attempt
    except (ValueError, TypeError):
        set_aside(Path(path), "not an attempt record")
        return None


def _save(store: Store, name: str, attempt: Attempt) -> None:
    folder = store.private_dir("attempts")
    write_file_atomic(folder / f"{name}.json", json.dumps(asdict(attempt)).encode(), 0o600)


def record_attempt(store: Store, outcome: Outcome, now: datetime) -> None:
    previous = load_attempt(store, outcome.name)
    revoked = previous.revoked_serial if previous else ""
    attempt = Attempt(
        now.isoformat(), outcome.status, outcome.detail, revoked, outcome.error_type,
        outcome.retry_after,
    )  # fmt: skip
    _save(store, outcome.name, attempt)


def record_revocation(store: Store, name: str, serial: str, now: datetime) -> None:
    _save(store, name, Attempt(now.isoformat(), "revoked", f"serial {serial} revoked", serial))
    # A file of its own, so that planning reads nothing when nothing was ever revoked.
    write_file_atomic(store.private_dir("revoked") / name, serial.encode(), 0o600)


def revoked_serial(store: Store, name: str) -> str:
    path = os.path.join(store.root, "revoked", name)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        return ""
    serial = raw.decode("ascii", "replace").strip().lower()
    if not _SERIAL_RE.match(serial):
        set_aside(Path(path), "not a serial number")
        return ""
    return serial

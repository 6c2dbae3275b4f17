"""ACME Renewal Information (RFC 9773) kept across restarts: ``state_dir/ari/<name>.json``
per certificate (refreshed only when the CA's Retry-After, or our default, has passed, or
when the certificate changed), and ``ari/_ca.json`` for a CA known to offer none."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from ..model import AriState
from .certs import Store
from .files import set_aside, write_file_atomic

log = logging.getLogger(__name__)


def load_state(store: Store, name: str) -> AriState | None:
    path = os.path.join(store.root, "ari", name + ".json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    try:
        return AriState.from_json(raw)
    except Exception:  # any damage (untrusted input): asked again
        set_aside(Path(path), "not renewal information")
        return None


def save_state(store: Store, name: str, state: AriState) -> None:
    write_file_atomic(store.private_dir("ari") / f"{name}.json", state.to_json(), 0o600)


# How long "nothing known about the CA" is believed before _ca.json is read again.
NEGATIVE_CACHE = timedelta(seconds=5)


def ca_without_ari(store: Store, directory: str, now: datetime) -> datetime | None:
    """Until when the CA is known to offer no renewalInfo (so no request is needed).
    Read once per store and process (planning 10,000 certificates asks 10,000 times)."""
    cached = _CA_CACHE.get(str(store.root))
    if cached is None or cached[1] <= now:  # unknown or expired: another process may know more
        try:
            data = json.loads((store.root / "ari" / "_ca.json").read_text())
            cached = (str(data["directory"]), datetime.fromisoformat(data["no_ari_until"]))
        except (OSError, ValueError, KeyError, TypeError):
            cached = ("", now + NEGATIVE_CACHE)  # read again a little later, not 10,000 times
        _CA_CACHE[str(store.root)] = cached
    known, until = cached
    return until if known == directory and until > now else None


_CA_CACHE: dict[str, tuple[str, datetime]] = {}


def remember_ca_without_ari(store: Store, directory: str, until: datetime) -> None:
    data = {"directory": directory, "no_ari_until": until.isoformat()}
    _CA_CACHE[str(store.root)] = (directory, until)
    write_file_atomic(store.private_dir("ari") / "_ca.json", json.dumps(data).encode(), 0o600)

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
    until = cached[0].get(directory) if cached is not None else None
    if cached is None or ((until is None or until <= now) and cached[1] <= now):
        # Unknown or expired: another process may know more.
        cached = (_read_cas(store), now + NEGATIVE_CACHE)
        _CA_CACHE[str(store.root)] = cached
        until = cached[0].get(directory)
    return until if until is not None and until > now else None


# store root -> ({directory: no renewalInfo until}, when to read _ca.json again if unknown)
_CA_CACHE: dict[str, tuple[dict[str, datetime], datetime]] = {}


def _read_cas(store: Store) -> dict[str, datetime]:
    """``_ca.json``: ``{"cas": {directory: until}}`` (one CA per directory: several CAs),
    or, from a version with one CA, ``{"directory": ..., "no_ari_until": ...}``."""
    try:
        data = json.loads((store.root / "ari" / "_ca.json").read_text())
        if "cas" not in data:
            data = {"cas": {data["directory"]: data["no_ari_until"]}}
        return {str(d): datetime.fromisoformat(u) for d, u in dict(data["cas"]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remember_ca_without_ari(store: Store, directory: str, until: datetime) -> None:
    known = {d: u for d, u in _read_cas(store).items() if u > until - timedelta(days=366)}
    known[directory] = until
    data = {"cas": {d: u.isoformat() for d, u in known.items()}}
    _CA_CACHE[str(store.root)] = (known, datetime.now(until.tzinfo) + NEGATIVE_CACHE)
    write_file_atomic(store.private_dir("ari") / "_ca.json", json.dumps(data).encode(), 0o600)

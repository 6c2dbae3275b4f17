"""ACME Renewal Information (RFC 9773): what the CA suggests, kept across restarts.

State per certificate lives in ``state_dir/ari/<name>.json`` and is refreshed only when the
CA's Retry-After (or our default) has passed, or when the certificate changed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import CAError
from .policy import DEFAULT_ARI_RECHECK, AriWindow
from .store import Store, write_file_atomic

log = logging.getLogger(__name__)

# Bounds on the CA's Retry-After for ARI checks: not more often than this, not rarer than that.
MIN_ARI_RECHECK = timedelta(seconds=1)
MAX_ARI_RECHECK = timedelta(days=1)
# When the CA has no renewalInfo, look again (it may add it) after this long.
NO_ARI_RECHECK = timedelta(days=1)


@dataclass(frozen=True)
class AriState:
    serial: str
    supported: bool
    next_check: datetime
    start: datetime | None = None
    end: datetime | None = None

    def window(self) -> AriWindow | None:
        if self.supported and self.start is not None and self.end is not None:
            return AriWindow(self.start, self.end)
        return None

    def to_json(self) -> bytes:
        data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AriState:
        data = json.loads(raw)
        for key in ("next_check", "start", "end"):
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key])
        return cls(**data)


def load_state(store: Store, name: str) -> AriState | None:
    try:
        with open(os.path.join(store.root, "ari", name + ".json"), "rb") as handle:
            return AriState.from_json(handle.read())
    except (OSError, ValueError, TypeError, KeyError):
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


def recheck_after(retry_after: str | None, now: datetime) -> datetime:
    from .transport import retry_after_seconds

    seconds = retry_after_seconds(retry_after, now.timestamp())
    delay = timedelta(seconds=seconds) if seconds is not None else DEFAULT_ARI_RECHECK
    return now + min(max(delay, MIN_ARI_RECHECK), MAX_ARI_RECHECK)


def needs_refresh(state: AriState | None, serial: str, now: datetime) -> bool:
    return state is None or state.serial != serial or now >= state.next_check


def fetch(client: object, cert: Any, name: str, now: datetime) -> AriState:
    """Ask the CA (``client`` is an AcmeClient) for the window of ``cert`` (an x509
    certificate; cryptography is imported only on this path)."""
    from cryptography import x509

    from .protocol import AcmeClient, ari_cert_id

    assert isinstance(client, AcmeClient)
    serial = f"{cert.serial_number:x}"
    if not client.supports_ari():
        return AriState(serial, False, now + NO_ARI_RECHECK)
    try:
        start, end, retry_after = client.renewal_info(ari_cert_id(cert), name)
    except (CAError, x509.ExtensionNotFound) as err:
        log.warning("%s: no renewal information from the CA (%s); using the lifetime", name, err)
        return AriState(serial, False, now + DEFAULT_ARI_RECHECK)
    return AriState(serial, True, recheck_after(retry_after, now), start, end)

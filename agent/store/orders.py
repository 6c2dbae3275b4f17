"""Orders between runs: ``state_dir/orders/<name>.json`` (0600: it holds the new key) for an
order placed and not yet installed, so that a timed-out issuance is resumed instead of
ordered again; and ``state_dir/orders/_replaces.json``, the CAs that refused RFC 9773's
``replaces`` lately (the agent orders without it there for a day)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import datetime

from ..model import PendingOrder
from .certs import Store
from .files import write_file_atomic

log = logging.getLogger(__name__)

REFUSALS = "_replaces.json"


def load_pending(store: Store, name: str) -> PendingOrder | None:
    """The order ``name`` left unfinished, or None. A file that is not one is moved aside
    (``*.corrupt-<time>``), said once, and the next order starts afresh."""
    path = store.root / "orders" / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("%s: cannot read the pending order (%s); placing a new one", path,
                    err.strerror, extra={"cert": name})  # fmt: skip
        return None
    try:
        pending = PendingOrder.from_json(raw)
        if pending.name != name:
            raise ValueError("for another certificate")
        _check_pem(pending)
        return pending
    except Exception:  # any damage (untrusted input): set aside, order anew
        aside = path.with_name(f"{path.name}.corrupt-{datetime.now().strftime('%Y%m%dT%H%M%S')}")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log.warning("%s: not a pending order; moved to %s, placing a new order", path, aside.name,
                    extra={"cert": name})  # fmt: skip
        return None


def _check_pem(pending: PendingOrder) -> None:
    """The key and the CSR parse (ValueError otherwise): a resumed order uses both."""
    from cryptography import x509

    from .. import keys

    keys.load_key_pem(pending.key_pem)
    x509.load_pem_x509_csr(pending.csr_pem)


def save_pending(store: Store, pending: PendingOrder) -> None:
    folder = store.private_dir("orders")
    write_file_atomic(folder / f"{pending.name}.json", pending.to_json(), 0o600)


def clear_pending(store: Store, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.root / "orders" / f"{name}.json")


def refuses_replaces(store: Store, directory: str, now: datetime) -> bool:
    """The CA at ``directory`` refused a newOrder with ``replaces`` less than a day ago."""
    until = _refusals(store).get(directory)
    try:
        return until is not None and datetime.fromisoformat(until) > now
    except (TypeError, ValueError):
        return False


def remember_refusal(store: Store, directory: str, until: datetime) -> None:
    refusals = _refusals(store)
    refusals[directory] = until.isoformat()
    folder = store.private_dir("orders")
    write_file_atomic(folder / REFUSALS, json.dumps(refusals).encode(), 0o600)


def _refusals(store: Store) -> dict[str, str]:
    try:
        data = json.loads((store.root / "orders" / REFUSALS).read_bytes())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

"""Orders between runs: ``state_dir/orders/<name>.json`` (0600: it holds the new key) for an
order placed and not yet installed, so that a timed-out issuance is resumed instead of
ordered again; and ``state_dir/orders/_replaces.json``, the CAs that refused RFC 9773's
``replaces`` lately (the agent orders without it there for a day)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

from ..errors import StoreError
from ..model import PendingOrder
from .certs import Store
from .files import set_aside, write_file_atomic

log = logging.getLogger(__name__)

REFUSALS = "_replaces.json"


def load_pending(store: Store, name: str) -> PendingOrder | None:
    """The order ``name`` left unfinished, or None. A file that is not one is moved aside
    (``*.corrupt-<time>``), said once, and the next order starts afresh."""
    path = store.pending_order_path(name)
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
        set_aside(path, "not a pending order")
        return None


def _check_pem(pending: PendingOrder) -> None:
    """The key and the CSR parse and belong together: the CSR carries the key's public key
    and exactly the order's names, and the key is of the order's type (ValueError else)."""
    from cryptography import x509

    from .. import keys

    key = keys.load_key_pem(pending.key_pem)
    csr = x509.load_pem_x509_csr(pending.csr_pem)
    if keys.key_type_of(key) != pending.key_type or not csr.is_signature_valid:
        raise ValueError("the key is not of the order's type")
    if not keys.public_key_matches_csr(csr, key):
        raise ValueError("the CSR is for another key")
    wanted = sorted(d.lower() for d in pending.domains)
    if sorted(d.lower() for d in keys.csr_domains(pending.csr_pem)) != wanted:
        raise ValueError("the CSR is for other names")


def save_pending(store: Store, pending: PendingOrder) -> None:
    folder = store.private_dir("orders")
    write_file_atomic(folder / f"{pending.name}.json", pending.to_json(), 0o600)


def clear_pending(store: Store, name: str) -> None:
    """Forget the order kept for ``name`` (a failure to is said, never fatal: a stale order
    is not resumed anyway once a newer certificate is in service)."""
    path = store.pending_order_path(name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("%s: cannot remove the kept order (%s)", path, err.strerror,
                    extra={"cert": name})  # fmt: skip


def refuses_replaces(store: Store, directory: str, now: datetime) -> bool:
    """The CA at ``directory`` refused a newOrder with ``replaces`` less than a day ago."""
    until = _refusals(store).get(directory)
    try:
        return until is not None and datetime.fromisoformat(until) > now
    except (TypeError, ValueError):
        return False


def remember_refusal(store: Store, directory: str, until: datetime) -> None:
    """Best effort: if it cannot be written, the next renewal tries ``replaces`` again."""
    refusals = _refusals(store)
    refusals[directory] = until.isoformat()
    try:
        folder = store.private_dir("orders")
        write_file_atomic(folder / REFUSALS, json.dumps(refusals).encode(), 0o600)
    except (StoreError, OSError) as err:
        log.warning("%s: cannot remember that the CA refused replaces: %s", directory, err)


def _refusals(store: Store) -> dict[str, str]:
    try:
        data = json.loads((store.root / "orders" / REFUSALS).read_bytes())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

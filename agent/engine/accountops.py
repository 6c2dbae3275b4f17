"""`account show|update|rollover|deactivate` and `revoke`: operations on the stored
account of one CA (the fleet's shared one in fleet mode)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from .. import keys
from ..acme.client import account_key_pem_new
from ..config.types import DEFAULT_CA, AcmeConfig, Config
from ..errors import AgentError, ConfigError, StoreError, UsageError
from ..fleet.cluster import open_cluster
from ..model import REVOCATION_REASONS
from ..store import orders
from ..store.attempts import record_revocation
from ..store.certs import Store
from ..store.files import write_file_atomic
from .accounts import open_client, set_aside, set_aside_accounts, stored_client, thumbprint
from .issuing import issuing_ca

log = logging.getLogger(__name__)


def ca_named(config: Config, name: str | None) -> AcmeConfig:
    """The CA ``--ca NAME`` names ([acme] is "default", the default)."""
    ca = config.ca(name or DEFAULT_CA)
    if ca is None:
        raise UsageError(f"--ca {name}: no such CA in {config.path} (configured: "
                         f"{', '.join(config.cas)})")  # fmt: skip
    return ca


def show(config: Config, ca: AcmeConfig | None = None) -> dict[str, object]:
    """The account as the CA has it now. Read-only: never registers (that would spend
    single-use EAB credentials), deactivates or rolls over; with no account, says so."""
    ca = ca or config.acme
    store = Store(config.state_dir)
    directory = ca.directory
    folder = store.account_dir(directory)
    client = stored_client(ca, store, open_cluster(config.cluster))
    if client is None:
        aside = set_aside_accounts(store, directory)
        if not aside:
            raise AgentError(
                f"no ACME account for {directory} in {folder}: 'acme-agent register' creates "
                "one (renew and run do too, when a certificate is due)"
            )
        stamp, uri = aside[0]
        return {"url": uri, "ca": ca.name, "directory": directory, "status": "deactivated",
                "deactivated": stamp, "folder": f"{folder}.deactivated-{stamp}",
                "next": "the next renew or run registers a new account (fresh EAB "
                        "credentials where the CA asks for them)"}  # fmt: skip
    details = client.account_details()
    return {
        "url": client.account_uri,
        "ca": ca.name,
        "directory": directory,
        "status": details.get("status"),
        "contact": details.get("contact", []),
        "key": f"EC {client.key.key.curve.name}" if hasattr(client.key.key, "curve") else "RSA",
        "thumbprint": thumbprint(client.key),
        "folder": str(folder),
    }


def update_email(config: Config, ca: AcmeConfig, email: str) -> list[str]:
    """RFC 8555 section 7.3.2: the account's contact becomes ``email``; the CA's new list.
    Needs an account (never registers one: that could spend single-use EAB credentials)."""
    client = stored_client(ca, Store(config.state_dir), open_cluster(config.cluster))
    if client is None:
        raise AgentError(f"no ACME account for {ca.directory} ({ca.label}): 'acme-agent "
                         "register' creates one (with the email of the configuration)")  # fmt: skip
    contact = client.update_contact([email])
    log.info("%s: the account %s's contact is now %s (set email in %s too, for a new "
             "account)", ca.label, client.account_uri, ", ".join(contact), ca.label)  # fmt: skip
    return contact


def rollover(config: Config, ca: AcmeConfig | None = None) -> str:
    """Replace the account key. The new key is saved beside the old one first, so a crash
    at any point leaves a key the CA accepts on disk (the next key, or the old one)."""
    ca = ca or config.acme
    store = Store(config.state_dir)
    cluster = open_cluster(config.cluster)
    client = open_client(ca, store, cluster)
    folder = store.account_dir(ca.directory)
    pending = folder / "private_key.pem.next"
    new = account_key_pem_new()
    write_file_atomic(pending, keys.key_to_pem(new.key), 0o600)
    client.change_key(new)
    try:
        os.replace(pending, folder / "private_key.pem")
    except OSError as err:
        raise StoreError(
            f"{folder}: the CA now knows the new key, but it could not be put in place "
            f"({err.strerror}); move private_key.pem.next over private_key.pem by hand"
        ) from None
    if cluster is not None:  # the other hosts take the new key from Redis
        generation = cluster.store_account(ca.directory, keys.key_to_pem(new.key),
                                           str(client.account_uri), thumbprint(new))  # fmt: skip
        store.save_account(ca.directory, str(client.account_uri), thumbprint(new),
                           generation)  # fmt: skip
    return str(client.account_uri)


def deactivate(config: Config, ca: AcmeConfig | None = None) -> str:
    """Deactivate the account at the CA and set its folder aside (the next run registers a
    new account, which needs fresh EAB credentials where the CA asks for them)."""
    ca = ca or config.acme
    store = Store(config.state_dir)
    cluster = open_cluster(config.cluster)
    client = open_client(ca, store, cluster)
    uri = str(client.account_uri)
    client.deactivate()
    set_aside(store, ca.directory)
    if cluster is not None:  # the other hosts set their copies aside and register anew
        cluster.forget_account(ca.directory, uri)
    return uri


def revoke(config: Config, name: str, reason: str, ca_name: str | None = None) -> str:
    """Revoke ``name``'s certificate in service at the CA that issued it (``ca_name``:
    at that one instead, e.g. for a certificate whose CA is not known)."""
    store = Store(config.state_dir)
    cert = config.certificate(name)
    if cert is None:
        raise ConfigError(f"{config.path}: no certificate named {name!r}")
    current = store.current(name)
    record = store.record(name)
    if current is None or record is None:
        raise ConfigError(f"{name}: there is no certificate to revoke in {store.live_dir(name)}")
    ca = ca_named(config, ca_name) if ca_name else issuing_ca(config.cas, store, cert, record)
    if ca is None:
        raise UsageError(f"{name}: the CA that issued it is not known (imported, or a CA no "
                         f"longer configured); name it with --ca NAME (configured: "
                         f"{', '.join(config.cas)})")  # fmt: skip
    client = open_client(ca, store, open_cluster(config.cluster))
    client.revoke(current.cert, REVOCATION_REASONS[reason], name)
    with store.lock(name):  # a kept order with the revoked key (reuse_key) is never resumed
        kept = orders.load_pending(store, name)
        if kept is not None and keys.public_key_matches(current.cert, keys.load_key_pem(
                kept.key_pem)):  # fmt: skip
            orders.clear_pending(store, name)
    serial = f"{current.cert.serial_number:x}"
    record_revocation(store, name, serial, datetime.now(UTC))
    log.info("%s: serial %s revoked (%s); the next run obtains a new certificate",
             name, serial, reason)  # fmt: skip
    return serial

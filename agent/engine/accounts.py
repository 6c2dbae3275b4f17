"""Find or create the ACME account for the configured CA, and keep it.

EAB credentials are used exactly once, to create the account: managed CAs (AWS
Certificate Manager's ACME endpoint among them) expire them soon after first use. Later
runs use the stored account URL and key and never call newAccount with EAB again. In a
fleet the account is shared through Redis and registered once for all hosts.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

import josepy as jose

from .. import keys
from ..acme.client import AcmeClient, account_key_pem_new, load_account_key
from ..config.secretfile import read_secret_file
from ..config.types import AcmeConfig
from ..errors import AccountError, CAError, ConfigError
from ..fleet.cluster import ClusterError, Lease, RedisCluster
from ..store.certs import Store, StoredAccount

log = logging.getLogger(__name__)


def open_client(acme: AcmeConfig, store: Store, cluster: RedisCluster | None = None) -> AcmeClient:
    """A client bound to the stored account, creating the account when there is none.
    In a cluster the account is shared: taken from Redis, or registered once (under a
    lease, so that the hosts never spend the EAB credentials twice) and published."""
    if cluster is not None:
        return _open_shared(acme, store, cluster)
    return _open_local(acme, store)


def _open_shared(acme: AcmeConfig, store: Store, cluster: RedisCluster) -> AcmeClient:
    directory = acme.directory
    _drop_deactivated(store, cluster, directory)
    if _take_shared(store, cluster, directory):
        return _open_local(acme, store)
    lock = "_account-" + cluster.account_key(directory).rsplit(":", 1)[-1]
    with cluster.holding(lock, wait=cluster.settings.lease_seconds + acme.issuance_timeout) as held:
        if not isinstance(held, Lease):
            raise ClusterError(
                f"{held.node} is still registering the shared ACME account; will retry"
            )
        if _take_shared(store, cluster, directory):  # registered while we waited
            return _open_local(acme, store)
        if store.load_account(directory) is None and cluster.unauthenticated_account(directory):
            raise ClusterError(
                "the cluster's ACME account record carries no MAC of this cluster (written by "
                "an older acme-agent, or not by a host of the fleet); not registering another: "
                "a host that has the account republishes it at its next renewal (acme-agent "
                "renew --force there, once all hosts run this version)"
            )
        # Our stored account (also one the cluster has in an older or unauthenticated
        # form: migrated from this host's copy, never from Redis), or a new one (EAB, once).
        client = _open_local(acme, store)
        stored = store.load_account(directory)
        assert stored is not None
        print_ = thumbprint(client.key)
        generation = cluster.store_account(directory, stored.key_pem, stored.uri, print_)
        store.save_account(directory, stored.uri, print_, generation)
        log.info("ACME account %s shared with the cluster", stored.uri)
        return client


def forget_lost(store: Store, client: AcmeClient, err: Exception) -> bool:
    """The CA answered ``err`` (accountDoesNotExist) for ``client``'s account: make sure (an
    onlyReturnExisting look-up must not find it either) and, under the accounts' lock, set
    the stored account aside if it is still that one (another process may have registered
    a new one meanwhile). True when the next client registers (or finds) a new one."""
    lost = client.account_uri
    try:
        client.find_account()
        return False  # the CA knows it after all: the error was about something else
    except CAError as again:
        if again.problem_type != "accountDoesNotExist":
            return False
    with store.lock("_accounts"):
        stored = store.load_account(client.directory_url)
        if stored is not None and stored.uri == lost:
            set_aside(store, client.directory_url)
    log.warning("the CA no longer knows the ACME account %s (%s); set aside, registering a new "
                "account with the configured EAB credentials", lost, err)  # fmt: skip
    return True


def thumbprint(key: jose.JWK) -> str:
    """RFC 7638, base64url (:func:`agent.keys.thumbprint`)."""
    return keys.thumbprint(keys.key_to_pem(key.key))


def _drop_deactivated(store: Store, cluster: RedisCluster, directory: str) -> None:
    """Another host deactivated the shared account: set our copy of it aside too."""
    gone = cluster.deactivated_account(directory)
    local = store.load_account(directory) if gone else None
    if local is not None and local.uri == gone:
        set_aside(store, directory)
        log.warning("the cluster's ACME account %s was deactivated; registering anew", gone)


def set_aside(store: Store, directory: str) -> None:
    """Move the account folder out of the way (kept, renamed with a time stamp)."""
    folder = store.account_dir(directory)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder.with_name(f"{folder.name}.deactivated-{stamp}")
    for n in range(2, 100):  # two in one second (a CA that lost two accounts in a row)
        if not target.exists():
            break
        target = folder.with_name(f"{folder.name}.deactivated-{stamp}{n:02d}")
    os.replace(folder, target)


def _take_shared(store: Store, cluster: RedisCluster, directory: str) -> bool:
    """Make the cluster's account this host's; False when the cluster has none yet (or
    none that a host of the cluster wrote). A record older than this host's copy (a replay
    of one from before a rollover) is refused: this host keeps its newer copy."""
    shared = cluster.load_account(directory)
    if shared is None:
        return False
    local = store.load_account(directory)
    if local is not None and local.generation > shared.generation:
        log.warning("the cluster's ACME account record is older than this host's copy "
                    "(generation %d < %d: replayed?); this host keeps its own",
                    shared.generation, local.generation)  # fmt: skip
        return True
    if thumbprint(_load_key(shared.key_pem, store, directory)) != shared.thumbprint:
        raise ClusterError("the cluster's ACME account record names a thumbprint that is not "
                           "its key's; not used")  # fmt: skip
    if local is None or (local.uri, local.key_pem, local.generation) != (
        shared.uri, shared.key_pem, shared.generation):  # fmt: skip
        store.save_account_key(directory, shared.key_pem)
        store.save_account(directory, shared.uri, shared.thumbprint, shared.generation)
        log.info("using the cluster's ACME account %s", shared.uri)
    return True


def _open_local(acme: AcmeConfig, store: Store) -> AcmeClient:
    """A client bound to the stored account, creating the account when there is none."""
    bundle = str(acme.ca_bundle) if acme.ca_bundle else None
    timeout = acme.request_timeout
    stored = store.load_account(acme.directory)
    if stored is not None:
        key = _load_key(stored.key_pem, store, acme.directory)
        return AcmeClient(
            acme.directory, key, ca_bundle=bundle, account_uri=stored.uri, timeout=timeout
        )
    key_pem = store.load_account_key(acme.directory)
    if key_pem is None:
        # Save the key before newAccount, so a crash right after cannot orphan an account.
        jwk = account_key_pem_new()
        key_pem = keys.key_to_pem(jwk.key)
        store.save_account_key(acme.directory, key_pem)
        client = AcmeClient(acme.directory, jwk, ca_bundle=bundle, timeout=timeout)
    else:
        client = AcmeClient(
            acme.directory,
            _load_key(key_pem, store, acme.directory),
            ca_bundle=bundle,
            timeout=timeout,
        )
        uri = _find_existing(client)
        if uri is not None:
            store.save_account(acme.directory, uri)
            return client
    uri = client.register(acme.email, _eab_credentials(acme, client))
    store.save_account(acme.directory, uri)
    log.info("registered ACME account %s", uri)
    return client


def stored_client(
    acme: AcmeConfig, store: Store, cluster: RedisCluster | None = None
) -> AcmeClient | None:
    """A client bound to the account this host (or the fleet) has, or None when there is
    none; no request, no registration, nothing written (for read-only commands)."""
    stored = store.load_account(acme.directory)
    if cluster is not None:  # the fleet's word first: another host may have rolled it over
        if stored is not None and cluster.deactivated_account(acme.directory) == stored.uri:
            return None  # deactivated by another host (this copy is set aside at next run)
        shared = cluster.load_account(acme.directory)
        if shared is not None and (stored is None or shared.generation >= stored.generation):
            stored = StoredAccount(shared.uri, shared.key_pem, shared.thumbprint,
                                   shared.generation)  # fmt: skip
    if stored is None:
        return None
    key_pem, uri = stored.key_pem, stored.uri
    bundle = str(acme.ca_bundle) if acme.ca_bundle else None
    key = _load_key(key_pem, store, acme.directory)
    return AcmeClient(acme.directory, key, ca_bundle=bundle, account_uri=uri,
                      timeout=acme.request_timeout)  # fmt: skip


def set_aside_accounts(store: Store, directory: str) -> list[tuple[str, str]]:
    """(time stamp, account URL) of the accounts set aside for ``directory``, newest first."""
    folder = store.account_dir(directory)
    found = []
    for aside in folder.parent.glob(f"{folder.name}.deactivated-*"):
        try:
            uri = str(json.loads((aside / "account.json").read_text())["uri"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append((aside.name.rsplit("-", 1)[-1], uri))
    return sorted(found, reverse=True)


def _find_existing(client: AcmeClient) -> str | None:
    """An account the CA already has for this key (a crash after newAccount), or None."""
    try:
        return client.find_account()
    except CAError as err:
        if err.problem_type == "accountDoesNotExist":
            return None
        raise


def _load_key(pem: bytes, store: Store, directory: str) -> jose.JWK:
    try:
        return load_account_key(pem)
    except Exception:  # any damage (josepy asserts on some): untrusted input
        folder = store.account_dir(directory)
        raise AccountError(
            f"{folder}/private_key.pem: not a readable private key; restore it from a backup, "
            f"or move {folder} away and run 'acme-agent register' (a new account: fresh EAB "
            "credentials where the CA asks for them)"
        ) from None


def _eab_credentials(acme: AcmeConfig, client: AcmeClient) -> tuple[str, str] | None:
    """The EAB pair for a new account, or None when the CA does not want one."""
    if acme.eab_kid is None:
        if client.requires_eab():
            raise ConfigError(
                f"{acme.directory} requires External Account Binding: set {acme.label} eab_kid "
                "and eab_hmac_key_file (for its staging directory: staging_eab_kid and "
                "staging_eab_hmac_key_file) to the credentials your CA issued"
            )
        return None
    if acme.eab_hmac_key is not None:
        return acme.eab_kid, acme.eab_hmac_key.strip()
    if acme.eab_hmac_key_file is None:
        raise ConfigError(
            f"{acme.label} eab_hmac_key_file: needed to create the ACME account (eab_kid is set)"
        )
    field = f"{acme.label} eab_hmac_key_file"
    needed = "it is needed to create the ACME account"
    return acme.eab_kid, read_secret_file(acme.eab_hmac_key_file, field, needed)

"""Which configured CA issued a certificate in service (its renewal information, account
and revocation are that CA's). Reads the store only: planning imports no protocol code."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..config.cas import usable_cas
from ..config.types import DEFAULT_CA, AcmeConfig, CertificateConfig
from ..errors import AgentError
from ..model import CertRecord
from ..store.certs import Store


def issued_by(record: CertRecord) -> str:
    """The name of the CA its facts say issued ``record`` ("default" for a version with one
    CA; "": not known, e.g. installed from the fleet or imported)."""
    return DEFAULT_CA if record.ca is None else record.ca


def issuing_ca(
    cas: Mapping[str, AcmeConfig], store: Store, cert: CertificateConfig | None,
    record: CertRecord,
) -> AcmeConfig | None:  # fmt: skip
    """The configured CA that issued ``record``: the one its facts name; else the one whose
    stored account ordered it (the facts' account URL); else, when the certificate (``cert``;
    None: no longer configured) has one CA only, that one (an import from it, a fleet record
    of an older host: what a version with one CA did); None otherwise (nothing is asked of a
    CA that may not know it: its renewal information, account and revocation belong to that
    CA, never to another one guessed)."""
    found = cas.get(issued_by(record))
    if found is not None:
        return found
    if record.account:
        for ca in cas.values():
            if _account_uri(store, ca.directory) == record.account:
                return ca
    usable = usable_cas(cert, cas) if cert is not None else []
    return usable[0] if len(usable) == 1 and not record.ca else None


def _account_uri(store: Store, directory: str) -> str:
    """The stored account's URL for ``directory`` ("": none), cached while its file is
    unchanged (an account set aside, registered or imported is seen at once)."""
    path = store.account_dir(directory) / "account.json"
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return ""
    key = str(path)
    cached = _ACCOUNT_URIS.get(key)
    if cached is None or cached[0] != stamp:
        try:
            stored = store.load_account(directory)
        except AgentError:
            stored = None
        cached = (stamp, stored.uri if stored is not None else "")
        _ACCOUNT_URIS[key] = cached
    return cached[1]


_ACCOUNT_URIS: dict[str, tuple[int, str]] = {}  # account.json path -> (mtime, account URL)


def issuing_name(
    cas: Mapping[str, AcmeConfig], store: Store, cert: CertificateConfig | None,
    record: CertRecord | None,
) -> str | None:  # fmt: skip
    """The name of :func:`issuing_ca` (None: no certificate, or not known)."""
    if cert is None or record is None:
        return None
    found = issuing_ca(cas, store, cert, record)
    return found.name if found is not None else None

"""Which configured CA issued a certificate in service (its renewal information, account
and revocation are that CA's). Reads the store only: planning imports no protocol code."""

from __future__ import annotations

from collections.abc import Mapping

from ..config.cas import issuer_of
from ..config.types import AcmeConfig, CertificateConfig
from ..errors import AgentError
from ..model import CertRecord
from ..store.certs import Store


def issuing_ca(
    cas: Mapping[str, AcmeConfig], store: Store, cert: CertificateConfig, record: CertRecord
) -> AcmeConfig | None:
    """The configured CA that issued ``record``: the one its facts name, else the one whose
    stored account ordered it (the facts' account URL); None when neither is known (an
    import from another CA, a CA since removed): then nothing is asked of any CA for it."""
    found = issuer_of(cert, cas, record.ca)
    if found is not None or not record.account:
        return found
    for ca in cas.values():
        key = (str(store.root), ca.directory)
        if key not in _ACCOUNT_URIS:
            try:
                stored = store.load_account(ca.directory)
            except AgentError:
                stored = None
            _ACCOUNT_URIS[key] = stored.uri if stored is not None else ""
        if _ACCOUNT_URIS[key] == record.account:
            return ca
    return None


_ACCOUNT_URIS: dict[tuple[str, str], str] = {}  # (state_dir, directory) -> account URL

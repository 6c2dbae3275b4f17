"""ACME Renewal Information (RFC 9773): ask the CA for one certificate's window."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cryptography import x509

from ..errors import CAError
from ..model import AriState
from ..policy.retry_after import DEFAULT_ARI_RECHECK, ari_recheck_time
from .client import AcmeClient, ari_cert_id

log = logging.getLogger(__name__)

# When the CA has no renewalInfo, look again (it may add it) after this long.
NO_ARI_RECHECK = timedelta(days=1)


def fetch(client: AcmeClient, cert: x509.Certificate, name: str, now: datetime) -> AriState:
    """What the CA suggests for ``cert`` (the certificate ``name`` has in service)."""
    serial = f"{cert.serial_number:x}"
    if not client.supports_ari():
        return AriState(serial, False, now + NO_ARI_RECHECK)
    try:
        start, end, retry_after = client.renewal_info(ari_cert_id(cert), name)
    except (CAError, x509.ExtensionNotFound) as err:
        log.warning("%s: no renewal information from the CA (%s); using the lifetime", name, err)
        return AriState(serial, False, now + DEFAULT_ARI_RECHECK)
    return AriState(serial, True, ari_recheck_time(retry_after, now), start, end)

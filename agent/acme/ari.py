"""ACME Renewal Information (RFC 9773): ask the CA for one certificate's window."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timedelta

from cryptography import x509

from ..errors import CAError
from ..model import AriState
from ..policy.retry_after import DEFAULT_ARI_RECHECK, ari_recheck_time
from .client import AcmeClient

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


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{_b64(aki.key_identifier or b'')}.{_b64(serial_bytes)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

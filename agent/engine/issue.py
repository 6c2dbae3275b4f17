"""Obtain one certificate from the CA: the order, with RFC 9773's ``replaces`` when the CA
speaks ARI. The protocol stack is imported here, on the issuing path only."""

from __future__ import annotations

import contextlib

from ..acme.ari import ari_cert_id
from ..acme.client import AcmeClient
from ..acme.issuer import Issued, Issuer
from ..model import OrderRequest, Solver
from ..store.certs import LiveCertificate


def obtain(
    client: AcmeClient,
    solver: Solver,
    issuance_timeout: float,
    request: OrderRequest,
    replacing: LiveCertificate | None,
) -> Issued:
    """A new certificate for ``request`` (``replacing``: the one in service, if any)."""
    issuer = Issuer(client, solver, issuance_timeout)
    return issuer.obtain(request, replaces=_replaces(client, replacing))


def _replaces(client: AcmeClient, current: LiveCertificate | None) -> str | None:
    """The ARI id of the certificate being replaced, when the CA speaks ARI."""
    if current is None or not client.supports_ari():
        return None
    with contextlib.suppress(ValueError, LookupError):
        return ari_cert_id(current.cert)
    return None

"""Certificates made locally for unit tests (no CA involved)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from agent import keys
from agent.localca import self_signed_root

NOW = datetime.datetime(2027, 3, 1, tzinfo=datetime.UTC)


def make_chain(
    domains: tuple[str, ...], days: int = 90
) -> tuple[keys.PrivateKey, keys.IssuedChain]:
    key = keys.generate_key("ec-p256")
    return key, sign_for(key.public_key(), domains, days)


def sign_for(public_key: object, domains: tuple[str, ...], days: int = 90) -> keys.IssuedChain:
    """A chain whose leaf certifies ``public_key`` for ``domains``."""
    ca_key, ca = self_signed_root("unit test CA", days=365, not_before=NOW)
    ca_name = ca.subject
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    pem = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    return keys.split_chain(pem, "test")

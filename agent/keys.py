"""Private keys, CSRs and certificate checks (pure functions over bytes, no disk)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .errors import IssuanceError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}
_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def generate_key(key_type: str) -> PrivateKey:
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    bits = int(key_type.removeprefix("rsa-"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported key type")
    return key


def key_type_of(key: PrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, key.curve.name)
    return f"rsa-{key.key_size}"


def ip_address_of(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``name`` spells (an RFC 8738 identifier), or None for a DNS name."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def normal_name(name: str) -> str:
    """A name as configurations and facts compare it: a DNS name lowercased without the
    final dot, an IP address in its canonical form ("2001:db8::1")."""
    address = ip_address_of(name.strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # what CAs put in orders and certificates
    return address.compressed if address is not None else name.lower().rstrip(".")


def make_csr(key: PrivateKey, domains: tuple[str, ...]) -> bytes:
    """A CSR carrying every name as a SAN: DNS names as dNSName, IP addresses as iPAddress
    (RFC 8738); the first DNS name also as the CN (an IP address never is)."""
    names: list[x509.GeneralName] = []
    for domain in domains:
        address = ip_address_of(domain)
        names.append(x509.IPAddress(address) if address is not None else x509.DNSName(domain))
    common = next((d for d in domains if ip_address_of(d) is None and len(d) <= 64), None)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedChain:
    """A checked certificate chain as the CA sent it, split for the PEM files."""

    cert_pem: bytes
    chain_pem: bytes
    cert: x509.Certificate

    @property
    def fullchain_pem(self) -> bytes:
        return self.cert_pem + self.chain_pem


def split_chain(fullchain: bytes, where: str) -> IssuedChain:
    """Parse every PEM block; refuse anything that is not a well-formed chain."""
    blocks = _PEM_CERT_RE.findall(fullchain)
    if not blocks:
        raise IssuanceError(f"{where}: the CA sent no PEM certificate")
    if _PEM_CERT_RE.sub(b"", fullchain).strip():
        raise IssuanceError(
            f"{where}: the CA sent a truncated or malformed certificate chain (text outside "
            "complete PEM blocks); not used"
        )
    certs: list[x509.Certificate] = []
    for block in blocks:
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as err:
            raise IssuanceError(f"{where}: the CA sent a broken certificate: {err}") from None
    pems = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    return IssuedChain(pems[0], b"".join(pems[1:]), certs[0])


def root_name(chain: IssuedChain) -> str:
    """The common name of the issuer of the chain's topmost certificate: the root's name
    (what ``preferred_chain`` names; "" when it has none)."""
    return _common_name(([chain.cert, *_issuers(chain)])[-1].issuer)


def choose_chain(chains: Sequence[IssuedChain], preferred: str) -> int | None:
    """Which of ``chains`` (the CA's default first, then its alternates) ``preferred``
    names: the first whose root's name it is (certbot's and lego's rule), else the first
    with an intermediate of that name; None when no chain matches."""
    for index, chain in enumerate(chains):
        if root_name(chain) == preferred:
            return index
    for index, chain in enumerate(chains):
        if any(_common_name(c.subject) == preferred for c in _issuers(chain)):
            return index
    return None


def _issuers(chain: IssuedChain) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(chain.chain_pem) if chain.chain_pem.strip() else []


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def csr_domains(csr_pem: bytes) -> list[str]:
    """The names a CSR asks for, in its order: DNS names and IP addresses (canonical)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in san if isinstance(name, x509.DNSName | x509.IPAddress)]


def dns_names(cert: x509.Certificate) -> set[str]:
    """The DNS names of a certificate, lowercased (IP addresses left out: see cert_names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def cert_names(cert: x509.Certificate) -> set[str]:
    """Every name a certificate is for, as configurations spell them: its DNS names
    lowercased and its IP addresses in canonical form (what facts and checks compare)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {normal_name(str(n.value)) for n in san if isinstance(n, x509.DNSName | x509.IPAddress)}


def public_key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def public_key_matches_csr(csr: x509.CertificateSigningRequest, key: PrivateKey) -> bool:
    return _spki(csr.public_key()) == _spki(key.public_key())


def _spki(public: object) -> bytes:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return public.public_bytes(serialization.Encoding.DER, spki)  # type: ignore[attr-defined]


def check_issued(chain: IssuedChain, key: PrivateKey, domains: tuple[str, ...], where: str) -> None:
    """The certificate must carry our key and exactly the requested names."""
    if not public_key_matches(chain.cert, key):
        raise IssuanceError(f"{where}: the CA returned a certificate for another key; not used")
    got, want = cert_names(chain.cert), {normal_name(d) for d in domains}
    ip_as_dns = sorted(n for n in dns_names(chain.cert) if ip_address_of(n))
    if ip_as_dns:  # a client connecting to the address would not accept it
        raise IssuanceError(f"{where}: the CA returned a certificate naming {ip_as_dns[0]!r} as a "
                            "DNS name, not an IP address; not used")  # fmt: skip
    if got != want:
        raise IssuanceError(
            f"{where}: the CA returned a certificate for {sorted(got)} instead of {sorted(want)}; "
            "not used"
        )


def check_chain(chain: IssuedChain, where: str, now: datetime) -> None:
    """The certificate is within its validity period and signed by the first certificate
    of the chain it came with (for a certificate that did not come from the CA just now:
    one from Redis is checked as one from the CA would be, and more)."""
    cert = chain.cert
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IssuanceError(
            f"{where}: the certificate is not valid now ({cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}); not used"
        )
    issuers = x509.load_pem_x509_certificates(chain.chain_pem) if chain.chain_pem.strip() else []
    if not issuers:
        raise IssuanceError(f"{where}: no issuer certificate with it; not used")
    try:
        cert.verify_directly_issued_by(issuers[0])
    except (ValueError, TypeError, InvalidSignature):
        raise IssuanceError(
            f"{where}: the certificate is not signed by the issuer certificate it came with "
            f"({issuers[0].subject.rfc4514_string()}); not used"
        ) from None


def chains_up(chain: IssuedChain) -> bool:
    """Is each certificate of ``chain`` signed by the next one (leaf first)?"""
    issuers = x509.load_pem_x509_certificates(chain.chain_pem) if chain.chain_pem.strip() else []
    certs = [chain.cert, *issuers]
    try:
        for child, parent in itertools.pairwise(certs):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def thumbprint(key_pem: bytes) -> str:
    """RFC 7638 thumbprint (base64url) of an EC or RSA account key: what the fleet's
    responders answer with and `account show` prints; computed here, so that the daemon's
    responder needs no protocol stack (josepy) for it."""

    def b64(number: int, size: int | None = None) -> str:
        raw = number.to_bytes(size or max(1, (number.bit_length() + 7) // 8), "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    key = load_key_pem(key_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        text = (f'{{"crv":"{crv}","kty":"EC","x":"{b64(numbers.x, size)}",'
                f'"y":"{b64(numbers.y, size)}"}}')  # fmt: skip
    else:  # RSA: load_key_pem returns nothing else
        rsa_numbers = key.public_key().public_numbers()
        text = f'{{"e":"{b64(rsa_numbers.e)}","kty":"RSA","n":"{b64(rsa_numbers.n)}"}}'
    digest = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")

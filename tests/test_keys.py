"""Keys, CSRs and the checks made before a certificate goes live."""

import pytest
from cryptography import x509

from agent import keys
from agent.errors import IssuanceError
from tests.certs import make_chain


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_key_types_round_trip(key_type: str) -> None:
    key = keys.generate_key(key_type)
    assert keys.key_type_of(keys.load_key_pem(keys.key_to_pem(key))) == key_type


def test_csr_carries_every_domain() -> None:
    key = keys.generate_key("ec-p256")
    domains = ("a.example.com", "b.example.com", "c.example.com")
    csr = x509.load_pem_x509_csr(keys.make_csr(key, domains))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(domains)


def test_check_issued_accepts_match_and_rejects_wrong_key_or_names() -> None:
    key, chain = make_chain(("example.com", "www.example.com"))
    keys.check_issued(chain, key, ("www.example.com", "example.com"), "www")
    with pytest.raises(IssuanceError, match="another key"):
        keys.check_issued(chain, keys.generate_key("ec-p256"), ("example.com",), "www")
    with pytest.raises(IssuanceError, match="instead of"):
        keys.check_issued(chain, key, ("example.com",), "www")


def test_split_chain_rejects_garbage_and_truncation() -> None:
    _, chain = make_chain(("example.com",))
    assert keys.split_chain(chain.fullchain_pem, "w").chain_pem == chain.chain_pem
    with pytest.raises(IssuanceError, match="no PEM certificate"):
        keys.split_chain(b"<html>oops</html>", "www")
    truncated = chain.fullchain_pem[: len(chain.cert_pem) // 2]
    with pytest.raises(IssuanceError):
        keys.split_chain(truncated, "www")
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(IssuanceError, match="broken certificate"):
        keys.split_chain(broken, "www")


def test_split_chain_rejects_a_cut_second_certificate() -> None:
    _, chain = make_chain(("example.com",))
    cut = chain.fullchain_pem[: len(chain.cert_pem) + len(chain.chain_pem) // 2]
    with pytest.raises(IssuanceError, match="truncated or malformed"):
        keys.split_chain(cut, "www")

"""Certificate options end to end against a real pebble: reuse_key, preferred_chain (RFC 8555
alternate chains), IP address identifiers (RFC 8738) and keep_versions; and the pure parts
(which chain, which versions) with fixed inputs."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import keys
from agent.acme.orders import OrderState, alternate_links, order_mismatch
from agent.acme.transport import Response
from agent.cli.main import main
from agent.errors import CAError, IssuanceError
from agent.localca import LocalCA
from agent.store.certs import Store
from agent.store.integrity import suspect
from agent.store.prune import prune_archive, versions_to_prune
from tests.certs import make_chain
from tests.conftest import Setup, cert_table, start_ca, write_config
from tests.test_issuer import CERT, FakeClient, RecordingSolver, issuer_for

CN = NameOID.COMMON_NAME


def live_key(setup: Setup, name: str) -> bytes:
    key = keys.load_key_pem((setup.live(name) / "privkey.pem").read_bytes())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(serialization.Encoding.DER, spki)


def live_cert(setup: Setup, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((setup.live(name) / "cert.pem").read_bytes())


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(CN)[0].value)


# -- reuse_key ---------------------------------------------------------------------------


def test_reuse_key_keeps_the_key_across_renewals(tmp_path: Path, pebble: LocalCA) -> None:
    certs = cert_table("kept", "kept.example.com") + "reuse_key = true\n\n"
    certs += cert_table("fresh", "fresh.example.com")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    kept, fresh = live_key(setup, "kept"), live_key(setup, "fresh")
    serials = {live_cert(setup, "kept").serial_number}
    for _ in range(2):
        assert setup.renew("--force") == 0
        assert live_key(setup, "kept") == kept
        serials.add(live_cert(setup, "kept").serial_number)
        assert live_key(setup, "fresh") != fresh  # the default: a fresh key every time
        fresh = live_key(setup, "fresh")
    assert len(serials) == 3
    assert setup.versions("kept") == ["0001", "0002", "0003"]
    assert (setup.live("kept") / "privkey.pem").stat().st_mode & 0o777 == 0o600


def test_reuse_key_takes_a_fresh_key_for_another_type_or_after_revocation(
    tmp_path: Path, pebble: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    certs = cert_table("k", "k.example.com") + "reuse_key = true\n\n"
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    first = live_key(setup, "k")
    text = setup.config.read_text()
    setup.config.write_text(
        text.replace("reuse_key = true", 'reuse_key = true\nkey_type = "ec-p384"')
    )
    caplog.set_level(logging.INFO, "agent")
    assert setup.renew() == 0  # due: the configured key type changed
    second = live_key(setup, "k")
    assert second != first
    key = keys.load_key_pem((setup.live("k") / "privkey.pem").read_bytes())
    assert keys.key_type_of(key) == "ec-p384"
    assert "it is ec-p256, not the configured ec-p384" in caplog.text
    argv = ["--config", str(setup.config), "revoke", "--cert", "k", "--reason", "keyCompromise"]
    assert main(argv) == 0
    assert setup.renew() == 0  # reissued: the one in service was revoked
    third = live_key(setup, "k")
    assert third != second  # a revoked certificate's key is never reused
    assert "its certificate was revoked" in caplog.text
    assert setup.renew("--force") == 0
    assert setup.versions("k")[-1] == "0004" and live_key(setup, "k") == third


# -- preferred_chain -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pebble_alternates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    """A pebble offering two alternate chains (three roots) of every certificate."""
    ca = start_ca(tmp_path_factory.mktemp("pebble-alt"), alternate_roots=2)
    yield ca
    ca.stop()


def test_preferred_chain_installs_the_chain_to_that_root(
    tmp_path: Path, pebble_alternates: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    ca = pebble_alternates
    roots = [x509.load_pem_x509_certificate(ca.root_pem(i)) for i in range(3)]
    names = [common_name(r.subject) for r in roots]
    assert len(set(names)) == 3
    certs = cert_table("alt", "alt.example.com") + f'preferred_chain = "{names[1]}"\n\n'
    certs += cert_table("plain", "plain.example.com")
    certs += cert_table("nomatch", "nomatch.example.com") + 'preferred_chain = "No Such Root"\n'
    setup = write_config(tmp_path, ca, certs)
    caplog.set_level(logging.INFO, "agent")
    assert setup.renew() == 0
    for name, root in (("alt", roots[1]), ("plain", roots[0]), ("nomatch", roots[0])):
        chain = x509.load_pem_x509_certificates((setup.live(name) / "chain.pem").read_bytes())
        assert common_name(chain[-1].issuer) == common_name(root.subject), name
        chain[-1].verify_directly_issued_by(root)  # the chain really ends at that root
        live_cert(setup, name).verify_directly_issued_by(chain[0])
        full = (setup.live(name) / "fullchain.pem").read_bytes()
        assert (
            full
            == (setup.live(name) / "cert.pem").read_bytes()
            + (setup.live(name) / "chain.pem").read_bytes()
        )
    assert f"alt: installing the alternate chain to {names[1]!r}" in caplog.text
    assert "nomatch: no chain the CA offers has the root 'No Such Root'" in caplog.text
    assert "installing the default chain" in caplog.text


def test_preferred_chain_default_root_needs_no_alternate(
    tmp_path: Path, pebble_alternates: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    ca = pebble_alternates
    root0 = common_name(x509.load_pem_x509_certificate(ca.root_pem(0)).subject)
    certs = cert_table("first", "first.example.com") + f'preferred_chain = "{root0}"\n'
    setup = write_config(tmp_path, ca, certs)
    caplog.set_level(logging.DEBUG, "agent")
    assert setup.renew() == 0
    chain = x509.load_pem_x509_certificates((setup.live("first") / "chain.pem").read_bytes())
    assert common_name(chain[-1].issuer) == root0
    assert "/alternate/" not in caplog.text  # the default chain matched: nothing more fetched


# -- IP address identifiers ------------------------------------------------------------------


def test_ip_address_certificates(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = cert_table("ip4", "127.0.0.1") + cert_table("ip6", "::1", "ip6.example.com")
    # pebble validates ::1 on [::1]:httpPort: the responder listens dual-stack.
    http01 = f'mode = "standalone"\nlisten = "[::]:{pebble.http_port}"\n'
    setup = write_config(tmp_path, pebble, certs, http01=http01)
    assert setup.renew() == 0
    san = live_cert(setup, "ip4").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.value.get_values_for_type(x509.DNSName) == []
    assert keys.cert_names(live_cert(setup, "ip6")) == {"::1", "ip6.example.com"}
    facts = json.loads((setup.live("ip6") / "facts.json").read_bytes())
    assert facts["domains"] == ["::1", "ip6.example.com"]
    capsys.readouterr()
    assert setup.renew() == 0  # the names in service are the configured ones: no loop
    out = capsys.readouterr().out
    assert "ip4: unchanged" in out and "ip6: unchanged" in out
    assert main(["--config", str(setup.config), "status", "--json"]) == 0
    status = {s["name"]: s for s in json.loads(capsys.readouterr().out)["certificates"]}
    assert status["ip4"]["domains"] == ["127.0.0.1"]
    assert status["ip6"]["domains"] == ["::1", "ip6.example.com"]
    assert main(["--config", str(setup.config), "status"]) == 0
    assert "127.0.0.1" in capsys.readouterr().out


# -- keep_versions -------------------------------------------------------------------------


def test_keep_versions_prunes_the_archive(tmp_path: Path, pebble: LocalCA) -> None:
    certs = cert_table("pruned", "pruned.example.com") + "keep_versions = 2\n\n"
    certs += cert_table("all", "all.example.com")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    for _ in range(3):
        assert setup.renew("--force") == 0
    assert setup.versions("pruned") == ["0003", "0004"]
    assert setup.versions("all") == ["0001", "0002", "0003", "0004"]  # the default: every one
    store = Store(setup.state)
    assert store.live_folder("pruned") == setup.state / "archive" / "pruned" / "0004"
    assert suspect(store, "pruned") is None  # the set in service is intact
    cert = live_cert(setup, "pruned")
    key = keys.load_key_pem((setup.live("pruned") / "privkey.pem").read_bytes())
    assert keys.public_key_matches(cert, key)
    assert setup.renew() == 0  # and nothing is due


# -- the pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "live", "keep", "deployed", "removed"),
    [
        (["0004", "0003", "0002", "0001"], "0004", 2, None, ["0002", "0001"]),
        (["0004", "0003", "0002", "0001"], "0004", 1, "0003", ["0002", "0001"]),
        (["0004", "0003", "0002", "0001"], "0003", 1, None, ["0002", "0001"]),  # newer kept
        (["0004", "0003", "0002", "0001"], "0002", 1, None, ["0001"]),
        (["0004", "0003"], "0004", 2, None, []),
        (["0004", "0003"], None, 1, None, []),  # nothing in service: nothing removed
        (["0004", "0003"], "0007", 1, None, []),  # the link is not ours
    ],
)
def test_versions_to_prune(
    versions: list[str], live: str | None, keep: int, deployed: str | None, removed: list[str]
) -> None:
    assert versions_to_prune(versions, live, keep, deployed) == removed


def _install(store: Store, name: str, count: int) -> None:
    for _ in range(count):
        key, chain = make_chain((f"{name}.example.com",))
        store.install(name, keys.key_to_pem(key), chain)


def test_prune_archive_logs_a_failure_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "state")
    _install(store, "c", 4)
    assert prune_archive(store, "c", None) == []
    import agent.store.prune as prune

    real = prune.os.rename

    def rename(src: object, dst: object) -> None:
        if str(src).endswith("0002"):
            raise PermissionError(13, "Permission denied")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(prune.os, "rename", rename)
    assert prune_archive(store, "c", 1) == ["0003", "0001"]
    assert store.versions("c") == ["0004", "0002"]
    assert "archive version 0002 not removed (Permission denied)" in caplog.text
    assert not [p for p in store.archive_dir("c").iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    store.mark_deployed("c", "0002")
    _install(store, "c", 1)
    assert prune_archive(store, "c", 1) == ["0004"]  # 0002 is the one deployed: kept
    assert store.versions("c") == ["0005", "0002"]


def _cert(subject: str, issuer: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(CN, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(CN, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _chain(*links: tuple[str, str]) -> keys.IssuedChain:
    return keys.split_chain(_cert("leaf.example", links[0][0]) + b"".join(
        _cert(s, i) for s, i in links), "test")  # fmt: skip


def test_choose_chain() -> None:
    default = _chain(("Int A", "Root A"))
    cross = _chain(("Int A", "Root B"), ("Root B", "Root X1"))
    other = _chain(("Int C", "Root C"))
    chains = [default, cross, other]
    assert keys.root_name(default) == "Root A" and keys.root_name(cross) == "Root X1"
    assert keys.choose_chain(chains, "Root A") == 0
    assert keys.choose_chain(chains, "Root X1") == 1  # the topmost certificate's issuer
    assert keys.choose_chain(chains, "Root C") == 2
    assert keys.choose_chain(chains, "Root B") == 1  # no root of that name: an intermediate's
    assert keys.choose_chain(chains, "Int C") == 2
    assert keys.choose_chain(chains, "leaf.example") is None  # never the leaf itself
    assert keys.choose_chain(chains, "root a") is None  # exact, as certbot compares
    assert keys.root_name(keys.split_chain(_cert("leaf", "Root Z"), "t")) == "Root Z"


def test_alternate_links() -> None:
    headers = {
        "Link": '<https://ca.test/cert/1/alt/1>;rel="alternate", </cert/1/alt/2>;rel="alternate"'
        ', <https://ca.test/dir>;rel="index", <https://evil.test/x>;rel="alternate"'
    }
    response = Response(200, headers, b"")
    assert alternate_links(response, "https://ca.test/cert/1") == [
        "https://ca.test/cert/1/alt/1",
        "https://ca.test/cert/1/alt/2",
    ]
    assert alternate_links(Response(200, {}, b""), "https://ca.test/cert/1") == []
    # A malformed entry is skipped (never the download's failure); rel as a list of tokens;
    # duplicates once; at most MAX_ALTERNATES.
    odd = Response(
        200,
        {
            "Link": '<https://[bad>;rel="alternate", <https://ca.test/a>;rel="up '
            'alternate", <https://ca.test/a>;rel="alternate"'
        },
        b"",
    )
    assert alternate_links(odd, "https://ca.test/cert/1") == ["https://ca.test/a"]
    many = ", ".join(f'<https://ca.test/{i}>;rel="alternate"' for i in range(50))
    assert len(alternate_links(Response(200, {"Link": many}, b""), "https://ca.test/c")) == 8


def test_a_chain_must_chain_and_an_ip_must_be_an_ip() -> None:
    from tests.certs import make_chain

    assert not keys.chains_up(_chain(("Int A", "Root A")))  # self-signed pieces: no chain
    _key, chain = make_chain(("www.example.com",))
    assert keys.chains_up(chain)
    ip_key, ip_as_dns = make_chain(("127.0.0.1",))  # an address as a dNSName
    with pytest.raises(IssuanceError, match="naming '127.0.0.1' as a DNS name"):
        keys.check_issued(ip_as_dns, ip_key, ("127.0.0.1",), "t")
    assert keys.normal_name("::ffff:127.0.0.1") == "127.0.0.1"


def test_a_kept_order_with_the_revoked_key_is_not_resumed(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from agent.engine.issue import _revoked_key
    from agent.store.attempts import record_revocation
    from agent.store.certs import Store
    from tests.certs import make_chain

    store = Store(tmp_path)
    key, chain = make_chain(("r.example.com",))
    store.install("r", keys.key_to_pem(key), chain)
    assert not _revoked_key(store, "r", keys.key_to_pem(key))  # not revoked
    record_revocation(store, "r", f"{chain.cert.serial_number:x}", datetime.now(UTC))
    assert _revoked_key(store, "r", keys.key_to_pem(key))
    assert not _revoked_key(store, "r", keys.key_to_pem(keys.generate_key("ec-p256")))


def test_ip_names_in_csr_and_order_checks() -> None:
    key = keys.generate_key("ec-p256")
    csr_pem = keys.make_csr(key, ("192.0.2.1", "www.example.com", "2001:db8::1"))
    assert keys.csr_domains(csr_pem) == ["192.0.2.1", "www.example.com", "2001:db8::1"]
    csr = x509.load_pem_x509_csr(csr_pem)
    assert common_name(csr.subject) == "www.example.com"  # never an IP address as the CN
    only_ip = x509.load_pem_x509_csr(keys.make_csr(key, ("192.0.2.1",)))
    assert list(only_ip.subject) == []
    order = OrderState("u", "pending", (), "f", None, "", None, ("2001:DB8:0::1", "192.0.2.1"))
    assert order_mismatch(order, ("192.0.2.1", "2001:db8::1"), None) is None
    assert order_mismatch(order, ("192.0.2.1",), None) == "names not requested: 2001:db8::1"
    assert keys.normal_name("[2001:DB8::1]") == "2001:db8::1"
    assert keys.normal_name("WWW.Example.com.") == "www.example.com"


class AlternatesClient(FakeClient):
    """The fake CA of test_issuer, offering two alternates: one unreadable, one to Root B."""

    def download_with_alternates(self, url: str, subject: str) -> tuple[bytes, list[str]]:
        self.default = self.download(url, subject)
        return self.default, ["https://ca/cert/1/alt/1", "https://ca/cert/1/alt/2"]

    def download(self, url: str, subject: str) -> bytes:
        if url.endswith("/alt/1"):
            raise CAError("the CA is unreachable", retryable=True)
        if url.endswith("/alt/2"):  # the default issuer, cross-signed by "Root B"
            default = keys.split_chain(self.default, "t")
            issuer = x509.load_pem_x509_certificates(default.chain_pem)[0]
            now = datetime.datetime.now(datetime.UTC)
            cross = (
                x509.CertificateBuilder()
                .subject_name(issuer.subject)
                .issuer_name(x509.Name([x509.NameAttribute(CN, "Root B")]))
                .public_key(issuer.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
            )
            return default.cert_pem + cross.public_bytes(serialization.Encoding.PEM)
        return super().download(url, subject)


def test_issuer_skips_an_unreadable_alternate(caplog: pytest.LogCaptureFixture) -> None:
    issuer, _ = issuer_for(AlternatesClient(), RecordingSolver())
    issued = issuer.obtain(dataclasses.replace(CERT, preferred_chain="Root B"))
    assert keys.root_name(issued.chain) == "Root B"
    assert "alternate chain https://ca/cert/1/alt/1 cannot be read" in caplog.text
    issuer, _ = issuer_for(AlternatesClient(), RecordingSolver())
    issued = issuer.obtain(dataclasses.replace(CERT, preferred_chain="Root Q"))
    assert keys.root_name(issued.chain) == "unit test CA"  # the default chain
    issuer, _ = issuer_for(AlternatesClient(), RecordingSolver())
    key = keys.generate_key("ec-p256")
    issued = issuer.obtain(dataclasses.replace(CERT, key_pem=keys.key_to_pem(key)))
    assert keys.public_key_matches(issued.chain.cert, key)  # reuse_key: the key given
    assert "secret" not in repr(dataclasses.replace(CERT, key_pem=b"secret"))  # never logged

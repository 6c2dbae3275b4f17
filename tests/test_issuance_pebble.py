"""End to end against a real pebble on loopback with EAB required."""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from agent import keys
from agent.localca import LocalCA
from agent.store.certs import Store
from tests.conftest import BLOCKED, Setup, cert_table, start_ca, write_config

pytestmark = pytest.mark.integration


def load_live(setup: Setup, name: str) -> tuple[x509.Certificate, keys.PrivateKey]:
    folder = setup.live(name)
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    return cert, keys.load_key_pem((folder / "privkey.pem").read_bytes())


def test_first_issuance_then_nothing_then_force(setup: Setup) -> None:
    assert setup.renew() == 0
    cert, key = load_live(setup, "www")
    assert keys.dns_names(cert) == {"example.com", "www.example.com"}
    assert keys.public_key_matches(cert, key)
    assert keys.key_type_of(key) == "ec-p256"
    assert (setup.live("www") / "privkey.pem").stat().st_mode & 0o777 == 0o600
    full = (setup.live("www") / "fullchain.pem").read_bytes()
    assert full.startswith((setup.live("www") / "cert.pem").read_bytes())
    account = (setup.state / "accounts").iterdir().__next__()
    assert (account / "private_key.pem").stat().st_mode & 0o777 == 0o600

    # Second run: the EAB key is gone (as when a managed CA expires it): no newAccount,
    # no new order.
    (setup.dir / "eab.key").unlink()
    account_json = (account / "account.json").read_bytes()
    assert setup.renew() == 0
    assert setup.versions("www") == ["0001"]
    assert (account / "account.json").read_bytes() == account_json

    assert setup.renew("--force") == 0
    assert setup.versions("www") == ["0001", "0002"]
    assert load_live(setup, "www")[0].serial_number != cert.serial_number


def test_register_prints_account_url(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main

    assert main(["--config", str(setup.config), "register"]) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith(setup.ca.directory_url.rsplit("/", 1)[0] + "/my-account/")
    assert main(["--config", str(setup.config), "register"]) == 0
    assert capsys.readouterr().out.strip() == first


def test_all_key_types_and_three_names(tmp_path: Path, pebble: LocalCA) -> None:
    certs = "".join(
        cert_table(kt, f"{kt}.example.com", key_type=kt)
        for kt in ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
    )
    certs += cert_table("three", "a.example.org", "b.example.org", "c.example.org")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    for kt in ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"):
        cert, key = load_live(setup, kt)
        assert keys.key_type_of(key) == kt
        assert keys.key_type_of(cert.public_key()) == kt  # type: ignore[arg-type]
    cert, _ = load_live(setup, "three")
    assert keys.dns_names(cert) == {"a.example.org", "b.example.org", "c.example.org"}


def test_changed_domains_reissue(setup: Setup) -> None:
    assert setup.renew() == 0
    text = setup.config.read_text().replace('"example.com"]', '"example.com", "api.example.com"]')
    setup.config.write_text(text)
    assert setup.renew() == 0
    assert setup.versions("www") == ["0001", "0002"]
    assert "api.example.com" in keys.dns_names(load_live(setup, "www")[0])


def test_webroot_mode(tmp_path: Path, pebble: LocalCA) -> None:
    webroot = tmp_path / "webroot"
    webroot.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(webroot))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", pebble.http_port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        http01 = f'mode = "webroot"\nwebroot = "{webroot}"\n'
        setup = write_config(tmp_path, pebble, cert_table("web", "web.example.com"), http01=http01)
        assert setup.renew() == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert load_live(setup, "web")[0]
    assert list((webroot / ".well-known" / "acme-challenge").iterdir()) == []


def test_blocked_domain_fails_clearly_others_issued(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = cert_table("bad", BLOCKED) + cert_table("good", "good.example.com")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 1
    out = capsys.readouterr()
    assert "bad: creating the order: the CA said rejectedIdentifier" in out.err
    assert BLOCKED in out.err
    assert "good: issued" in out.out and "bad: failed" in out.out
    assert load_live(setup, "good")[0]
    assert not setup.live("bad").exists()


def test_mode_none_pending_fails_with_advice(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = write_config(tmp_path, pebble, cert_table("n", "n.example.com"), http01='mode = "none"')
    assert setup.renew() == 1
    assert "pre-approve the domain on the CA" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reuse_ca(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ca = start_ca(tmp_path_factory.mktemp("reuse"), env={"PEBBLE_AUTHZREUSE": "100"})
    yield ca
    ca.stop()


def test_valid_authorizations_need_no_listener(tmp_path: Path, reuse_ca: LocalCA) -> None:
    setup = write_config(tmp_path, reuse_ca, cert_table("r", "r.example.com"))
    assert setup.renew() == 0
    # Hold the responder port: any bind attempt would now fail.
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", reuse_ca.http_port))
        blocker.listen()
        assert setup.renew("--force") == 0
    assert setup.versions("r") == ["0001", "0002"]


def test_port_in_use_is_a_clear_error(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = write_config(tmp_path, pebble, cert_table("p", "p.example.com"))
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", pebble.http_port))
        blocker.listen()
        assert setup.renew() == 1
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_nonce_rejection_50_percent(tmp_path: Path) -> None:
    ca = start_ca(tmp_path / "ca", env={"PEBBLE_WFE_NONCEREJECT": "50"})
    try:
        certs = "".join(cert_table(f"n{i}", f"n{i}.example.com") for i in range(3))
        setup = write_config(tmp_path, ca, certs)
        assert setup.renew() == 0
        assert setup.renew("--force") == 0
    finally:
        ca.stop()


def test_reader_never_sees_mismatched_pair(setup: Setup) -> None:
    assert setup.renew() == 0
    stop = threading.Event()
    seen: list[str] = []
    mismatches: list[str] = []

    def reader() -> None:
        link = setup.live("www")
        while not stop.is_set():
            fd = os.open(link, os.O_RDONLY | os.O_DIRECTORY)  # resolve live/<name> once
            try:
                cert_pem = _read_at(fd, "cert.pem")
                key_pem = _read_at(fd, "privkey.pem")
            finally:
                os.close(fd)
            cert = x509.load_pem_x509_certificate(cert_pem)
            if not keys.public_key_matches(cert, keys.load_key_pem(key_pem)):
                mismatches.append(hex(cert.serial_number))
            seen.append(hex(cert.serial_number))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(5):
            assert setup.renew("--force") == 0
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert mismatches == []
    assert len(set(seen)) >= 2  # the reader really watched renewals happen


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def test_store_matches_after_force_loop(setup: Setup) -> None:
    for _ in range(3):
        assert setup.renew("--force") == 0
    live = Store(setup.state).current("www")
    assert live is not None and live.version == "0003"


def test_many_orders_at_once_share_one_responder(tmp_path: Path, pebble: LocalCA) -> None:
    """16 certificates, 8 orders at a time, one standalone port: one responder serves all."""
    certs = "".join(cert_table(f"m{i}", f"m{i}.example.com") for i in range(16))
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    assert all((setup.live(f"m{i}") / "fullchain.pem").exists() for i in range(16))

"""``acme-agent run`` as a real process against a real pebble with short lifetimes."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from agent import keys
from agent.localca import LocalCA
from tests.conftest import Setup, cert_table, start_ca, write_config
from tests.daemon_proc import ROOT, DaemonProc

pytestmark = pytest.mark.integration

LIFETIME = 12  # seconds (pebble's certificateValidityPeriod); renewal at half-life


@pytest.fixture(scope="module")
def short_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    ca = start_ca(tmp_path_factory.mktemp("short"), validity_seconds=LIFETIME)
    yield ca
    ca.stop()


def versions_with_dates(setup: Setup, name: str) -> list[x509.Certificate]:
    folder = setup.state / "archive" / name
    certs = []
    for version in sorted(p for p in folder.iterdir() if p.name.isdigit()):
        certs.append(x509.load_pem_x509_certificate((version / "cert.pem").read_bytes()))
    return certs


def test_renews_every_certificate_twice_at_policy_times(tmp_path: Path, short_ca: LocalCA) -> None:
    certs = cert_table("a", "a.example.com") + cert_table("b", "b.example.com")
    setup = write_config(tmp_path, short_ca, certs)
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"b: installed serial", timeout=40, count=3)
        daemon.wait_for(r"a: installed serial", timeout=20, count=3)
    finally:
        assert daemon.stop() == 0
    for name in ("a", "b"):
        chain = versions_with_dates(setup, name)
        assert len(chain) >= 3
        for before, after in itertools.pairwise(chain):
            lifetime = before.not_valid_after_utc - before.not_valid_before_utc
            due = before.not_valid_after_utc - lifetime / 2
            # pebble backdates nothing; issuance happens at most a couple of seconds late
            lag = (after.not_valid_before_utc - due).total_seconds()
            assert -1.5 <= lag <= 3, (name, lag)


def test_hot_reload_add_change_remove_invalid(tmp_path: Path, pebble: LocalCA) -> None:
    certs_dir = tmp_path / "certs.d"
    certs_dir.mkdir()
    setup = write_config(tmp_path, pebble, cert_table("main", "main.example.com"))
    setup.config.write_text(f'certs_dir = "{certs_dir}"\n' + setup.config.read_text())
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"main: installed serial")
        # add: obtained at once
        (certs_dir / "extra.toml").write_text('domains = ["extra.example.com"]\n')
        daemon.wait_for(r"extra: installed serial", timeout=10)
        # change domains: a new certificate at once
        (certs_dir / "extra.toml").write_text('domains = ["extra.example.com", "x2.example.com"]\n')
        daemon.wait_for(r"extra: installed serial", timeout=10, count=2)
        cert = x509.load_pem_x509_certificate((setup.live("extra") / "cert.pem").read_bytes())
        assert keys.dns_names(cert) == {"extra.example.com", "x2.example.com"}
        # invalid edit: logged with file and field, daemon keeps running, old config stays
        (certs_dir / "extra.toml").write_text('domains = ["bad..name"]\n')
        text = daemon.wait_for(r"configuration not reloaded", timeout=10)
        assert "extra.toml: domains[0]" in text
        assert daemon.proc.poll() is None
        # remove: unscheduled, files stay
        (certs_dir / "extra.toml").unlink()
        daemon.wait_for(r"extra: removed from the configuration", timeout=10)
        assert (setup.live("extra") / "cert.pem").exists()
        # SIGHUP reloads too
        daemon.signal(signal.SIGHUP)
        daemon.wait_for(r"configuration reloaded", timeout=10, count=3)
    finally:
        assert daemon.stop() == 0


def test_sigterm_during_issuance_then_next_start_completes(tmp_path: Path) -> None:
    # Without PEBBLE_VA_NOSLEEP pebble waits up to 15 s before validating: a slow CA.
    ca = start_ca(tmp_path / "ca", env={"PEBBLE_VA_NOSLEEP": "0"})
    try:
        certs = "".join(cert_table(f"s{i}", f"s{i}.example.com") for i in range(3))
        setup = write_config(tmp_path, ca, certs)
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
        daemon.wait_for(r"obtaining a certificate", timeout=10)
        time.sleep(0.5)
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
        leftovers = [p for p in setup.state.rglob(".tmp-*")]
        assert leftovers == []
        for name in ("s0", "s1", "s2"):
            live = setup.live(name)
            if live.exists():  # either complete and matching, or absent
                cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
                key = keys.load_key_pem((live / "privkey.pem").read_bytes())
                assert keys.public_key_matches(cert, key)
        assert setup.renew() == 0
    finally:
        ca.stop()


def test_sd_notify_ready_status_watchdog(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("n", "n.example.com"))
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log", env=env)
        messages: list[str] = []
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (
                any("READY=1" in m for m in messages) and any("WATCHDOG=1" in m for m in messages)
            ):
                messages.append(sock.recv(4096).decode())
        finally:
            assert daemon.stop() == 0
        sock.settimeout(1)
        with pytest.raises(OSError):  # drain: STOPPING=1 arrives at the end
            while True:
                messages.append(sock.recv(4096).decode())
    text = "\n".join(messages)
    assert "READY=1" in text and "WATCHDOG=1" in text and "STOPPING=1" in text
    assert "STATUS=1 certificates" in text


def test_renew_force_racing_the_daemon(tmp_path: Path, short_ca: LocalCA) -> None:
    setup = write_config(tmp_path, short_ca, cert_table("r", "r.example.com"))
    # The daemon keeps the responder port; the one-shot hands its tokens to it.
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"r: installed serial")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "agent", "--config", str(setup.config), "renew", "--force"]
        results = [
            subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
            for _ in range(3)
        ]
        live = setup.live("r")
        cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        key = keys.load_key_pem((live / "privkey.pem").read_bytes())
        assert keys.public_key_matches(cert, key)
    finally:
        assert daemon.stop() == 0
    for result in results:
        assert result.returncode == 0, result.stderr
    # A run that meets an authorization the daemon's own renewal just validated (12-second
    # certificates: it renews every 6 s) has no challenge to hand over.
    assert any("handing tokens to it" in result.stderr for result in results)


def test_ca_unreachable_daemon_keeps_retrying_loudly(tmp_path: Path, short_ca: LocalCA) -> None:
    from agent.localca import free_port

    setup = write_config(tmp_path, short_ca, cert_table("u", "u.example.com"))
    assert setup.renew() == 0  # a 12-second certificate: due again in about 6 s
    before = (setup.live("u") / "cert.pem").read_bytes()
    gone = f"https://127.0.0.1:{free_port()}/dir"
    setup.config.write_text(setup.config.read_text().replace(short_ca.directory_url, gone))
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        log = daemon.wait_for(r"attempt 1 failed; retrying in", timeout=30)
        assert "connection refused" in log
        assert daemon.proc.poll() is None  # still running, will retry
    finally:
        assert daemon.stop() == 0
    assert (setup.live("u") / "cert.pem").read_bytes() == before

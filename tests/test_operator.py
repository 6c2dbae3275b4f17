"""Operator commands against a real pebble: status, check, dry run, revoke, account, import."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import josepy as jose
import pytest
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509

from agent.cli.main import main
from agent.localca import LocalCA
from agent.model import CertStatus
from agent.policy.check import CRITICAL, OK, WARNING, evaluate
from agent.store.certs import Store
from tests.certbot_run import certbot_certonly
from tests.conftest import Setup, cert_table, write_config

pytestmark = pytest.mark.integration


def serial(setup: Setup, name: str) -> int:
    return x509.load_pem_x509_certificate(
        (setup.live(name) / "cert.pem").read_bytes()
    ).serial_number


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def test_status_json_schema_and_table(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(setup, "status", "--json") == 0
    before = json.loads(capsys.readouterr().out)["certificates"][0]
    assert before["name"] == "www" and before["not_after"] is None
    assert setup.renew() == 0
    capsys.readouterr()
    assert cli(setup, "status", "--json") == 0
    entry = json.loads(capsys.readouterr().out)["certificates"][0]
    assert set(entry) == {
        "name", "domains", "key_type", "issuer", "serial", "not_before", "not_after", "ca",
        "seconds_left", "lifetime_seconds", "next_renewal", "next_renewal_reason",
        "last_attempt", "last_result", "last_error", "deployed", "revoked", "config_error",
        "damaged", "account_error", "configured",
    }  # fmt: skip
    assert entry["domains"] == ["example.com", "www.example.com"]
    assert entry["key_type"] == "ec-p256" and entry["last_result"] == "issued"
    assert entry["next_renewal_reason"] == "lifetime ratio"
    assert 89 * 86400 < entry["seconds_left"] <= 90 * 86400
    assert int(entry["serial"], 16) == serial(setup, "www")
    assert cli(setup, "status") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("NAME") and "www" in out and "lifetime ratio" in out


def status(left_days: float, lifetime_days: float = 90, **kw: object) -> CertStatus:
    now = datetime(2027, 3, 1, tzinfo=UTC)
    not_after = now + timedelta(days=left_days)
    renew_at = not_after - timedelta(days=lifetime_days / 3)
    base = dict(
        name="w", domains=["a"], key_type="ec-p256", issuer="CN=x", serial="1",
        not_before=(not_after - timedelta(days=lifetime_days)).isoformat(),
        not_after=not_after.isoformat(), seconds_left=left_days * 86400,
        lifetime_seconds=lifetime_days * 86400, next_renewal=renew_at.isoformat(),
        next_renewal_reason="lifetime ratio", last_attempt=None, last_result=None,
        last_error=None, deployed=None,
    )  # fmt: skip
    base.update(kw)
    return CertStatus(**base)  # type: ignore[arg-type]


def test_check_thresholds_with_fixed_clock() -> None:
    now = datetime(2027, 3, 1, tzinfo=UTC)
    assert evaluate([status(60)], now)[0] == OK
    assert evaluate([status(20)], now) == (WARNING, "WARNING: w is past its renewal time")
    assert evaluate([status(8)], now)[0] == CRITICAL  # under 10 % of 90 days
    assert evaluate([status(0.5, lifetime_days=6)], now)[0] == CRITICAL  # 6-day certificate
    assert evaluate([status(2, lifetime_days=6)], now)[0] == WARNING  # past half-life
    assert evaluate([status(-1)], now) == (CRITICAL, "CRITICAL: w expired")
    assert evaluate([status(60, last_error="boom")], now)[0] == WARNING
    assert evaluate([status(60, deployed=False)], now)[0] == WARNING
    assert evaluate([status(60)], now, warn=timedelta(days=70))[0] == WARNING
    assert evaluate([status(60)], now, crit=0.7)[0] == CRITICAL
    missing = status(1, seconds_left=None)
    assert evaluate([missing], now) == (CRITICAL, "CRITICAL: w has no certificate")


def test_check_command(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(setup, "check") == CRITICAL
    assert "www has no certificate" in capsys.readouterr().out
    assert setup.renew() == 0
    capsys.readouterr()
    assert cli(setup, "check") == OK
    assert capsys.readouterr().out.startswith("OK: 1 certificates")
    assert cli(setup, "check", "--warn", "100d") == WARNING
    assert cli(setup, "check", "--crit", "91d") == CRITICAL
    assert cli(setup, "check", "--warn", "soon") == 2  # usage error


def test_dry_run_touches_nothing(tmp_path: Path, pebble: LocalCA) -> None:
    out = tmp_path / "out"
    certs = cert_table("d", "d.example.com") + f'[certificate.deploy]\nfullchain = "{out}/fc.pem"\n'
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew("--dry-run", "--allow-production") == 0  # pebble has no staging
    assert not setup.live("d").exists() and not out.exists()
    assert setup.renew() == 0
    first = serial(setup, "d")
    assert setup.renew("--dry-run", "--allow-production") == 0
    assert serial(setup, "d") == first and setup.versions("d") == ["0001"]
    assert cli(setup, "renew", "--dry-run", "--force") == 2
    assert cli(setup, "renew", "--allow-production") == 2  # only with --dry-run


def test_revoke_then_next_run_reissues(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.renew() == 0
    first = serial(setup, "www")
    assert cli(setup, "revoke", "--cert", "www", "--reason", "keyCompromise") == 0
    assert f"serial {first:x} revoked" in capsys.readouterr().out
    assert setup.renew() == 0
    assert "revoked" in capsys.readouterr().out
    assert serial(setup, "www") != first
    assert setup.renew() == 0  # and only once
    assert setup.versions("www") == ["0001", "0002"]


def _old_key_works(setup: Setup, key_pem: bytes, uri: str) -> bool:
    key = jose.JWK.load(key_pem)
    net = acme_client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(setup.ca.ca_bundle))
    directory = acme_client.ClientV2.get_directory(setup.ca.directory_url, net)
    acme = acme_client.ClientV2(directory, net)
    try:
        acme.query_registration(
            messages.RegistrationResource(uri=uri, body=messages.Registration())
        )
        return True
    except (messages.Error, acme_errors.Error):
        return False


def test_account_show_rollover_deactivate(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert cli(setup, "account", "show") == 1  # read-only: it never registers
    assert "no ACME account for" in caplog.text
    assert not (setup.state / "accounts").exists()
    assert setup.renew() == 0
    capsys.readouterr()
    assert cli(setup, "account", "show", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "valid" and info["url"].startswith("https://127.0.0.1")
    key = jose.JWK.load(Store(setup.state).load_account(setup.ca.directory_url).key_pem)  # type: ignore[union-attr]
    assert info["thumbprint"] == jose.b64encode(key.thumbprint()).decode()  # RFC 7638
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", info["thumbprint"])
    stored = Store(setup.state).load_account(setup.ca.directory_url)
    assert stored is not None
    assert cli(setup, "account", "rollover") == 0
    assert "account key replaced" in capsys.readouterr().out
    new = Store(setup.state).load_account(setup.ca.directory_url)
    assert new is not None and new.key_pem != stored.key_pem and new.uri == stored.uri
    assert not _old_key_works(setup, stored.key_pem, stored.uri)
    assert _old_key_works(setup, new.key_pem, new.uri)
    assert setup.renew() == 0  # the new key works for orders
    assert cli(setup, "account", "deactivate") == 2  # no terminal, no --yes: refused
    assert cli(setup, "account", "deactivate", "--yes") == 0
    assert not _old_key_works(setup, new.key_pem, new.uri)
    capsys.readouterr()
    assert cli(setup, "account", "show", "--json") == 1  # the deactivated one, nothing new
    gone = json.loads(capsys.readouterr().out)
    assert gone["status"] == "deactivated" and gone["url"] == new.uri
    assert Store(setup.state).load_account(setup.ca.directory_url) is None
    assert setup.renew("--force") == 0  # registers a fresh account (EAB still valid here)
    again = Store(setup.state).load_account(setup.ca.directory_url)
    assert again is not None and again.uri != new.uri


def test_import_certbot_lineage_without_reissue(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    letsencrypt = certbot_certonly(tmp_path, pebble.directory_url, pebble.ca_bundle,
                                   pebble.http_port, (pebble.eab_kid, pebble.eab_hmac_key),
                                   "legacy", "legacy.example.com", "old.example.com")  # fmt: skip
    certs_dir = tmp_path / "certs.d"
    certs_dir.mkdir()
    setup = write_config(tmp_path, pebble, "")
    setup.config.write_text(f'certs_dir = "{certs_dir}"\n' + setup.config.read_text())
    assert cli(setup, "import-certbot", str(letsencrypt)) == 0
    out = capsys.readouterr().out
    assert "legacy: imported (legacy.example.com, old.example.com; ec-p256)" in out
    certbot_cert = (letsencrypt / "live" / "legacy" / "cert.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(certbot_cert)
    assert serial(setup, "legacy") == cert.serial_number
    assert setup.renew() == 0  # not due: no reissue
    assert setup.versions("legacy") == ["0001"]
    assert cli(setup, "import-certbot", str(letsencrypt)) == 0  # second time: idempotent
    assert "legacy: already imported" in capsys.readouterr().out
    assert setup.versions("legacy") == ["0001"]

"""CA and account failures against a real pebble: one clear line, the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import josepy as jose
import pytest
from acme import client as acme_client
from acme import messages

from agent.localca import LocalCA, free_port
from agent.store.certs import Store
from tests.conftest import Setup, cert_table, write_config

pytestmark = pytest.mark.integration


def run(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process: exit code and output as a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(setup.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )


def assert_clean(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, output


def test_wrong_eab_hmac(setup: Setup) -> None:
    (setup.dir / "eab.key").write_text("d3JvbmctaG1hYy1rZXktMDEyMzQ1Njc4OWFiY2RlZg")
    result = run(setup, "renew")
    assert_clean(result, 2, "creating the ACME account", "unauthorized", "eab_kid")
    assert "d3JvbmctaG1hYy1rZXktMDEy" not in result.stdout + result.stderr


def test_eab_hmac_never_logged_at_debug(setup: Setup) -> None:
    result = run(setup, "-vv", "renew")
    assert_clean(result, 0)
    assert setup.ca.eab_hmac_key not in result.stdout + result.stderr
    key = (setup.live("www") / "privkey.pem").read_text().splitlines()[1]
    assert key not in result.stdout + result.stderr


def test_missing_eab_when_required(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("www", "www.example.com"), eab=False)
    assert_clean(run(setup, "renew"), 2, "requires External Account Binding", "eab_kid")


def test_unreadable_eab_file_only_matters_for_new_accounts(setup: Setup) -> None:
    os.unlink(setup.dir / "eab.key")
    assert_clean(run(setup, "register"), 2, "eab_hmac_key_file: cannot read", "eab.key")


def test_connection_refused(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("www", "www.example.com"))
    text = setup.config.read_text().replace(
        pebble.directory_url, f"https://127.0.0.1:{free_port()}/dir"
    )
    setup.config.write_text(text)
    assert_clean(run(setup, "renew"), 1, "connection refused", "[acme] directory")


def test_untrusted_tls(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("www", "www.example.com"))
    lines = [ln for ln in setup.config.read_text().splitlines() if "ca_bundle" not in ln]
    setup.config.write_text("\n".join(lines) + "\n")
    assert_clean(run(setup, "renew"), 1, "not trusted", "ca_bundle")


def test_an_account_deactivated_outside_the_agent_is_replaced(setup: Setup) -> None:
    """As AWS ACM's RevokeAcmeAccount does: the next run sets the account aside and
    registers a new one with the configured EAB credentials (pebble lets them be reused)."""
    assert run(setup, "renew").returncode == 0
    store = Store(setup.state)
    stored = store.load_account(setup.ca.directory_url)
    assert stored is not None
    key = jose.JWK.load(stored.key_pem)
    net = acme_client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(setup.ca.ca_bundle))
    directory = acme_client.ClientV2.get_directory(setup.ca.directory_url, net)
    acme = acme_client.ClientV2(directory, net)
    regr = messages.RegistrationResource(uri=stored.uri, body=messages.Registration())
    net.account = regr
    acme.deactivate_registration(regr)
    result = run(setup, "renew", "--force")
    assert_clean(result, 0, "the CA no longer knows the ACME account", "registering a new")
    again = store.load_account(setup.ca.directory_url)
    assert again is not None and again.uri != stored.uri


def test_bad_usage_in_child_process(setup: Setup) -> None:
    result = run(setup, "renew", "--bogus")
    assert result.returncode == 2 and "usage:" in result.stderr
    assert_clean(run(setup, "renew", "--cert", "nope"), 2, "no certificate named 'nope'")


def test_world_writable_eab_key_file_is_refused(setup: Setup) -> None:
    (setup.dir / "eab.key").chmod(0o666)
    assert_clean(run(setup, "register"), 2, "writable by group and others", "chmod go-w")

"""Several CAs (issue 18): [ca.NAME] tables, a certificate's fallback list, key_types, dry
runs that never cost anything, and the account of each CA. Two real pebbles (each with
its own EAB key and TLS root) validate against the same HTTP-01 listener."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.localca import LocalCA, free_port
from tests.conftest import BLOCKED, Setup, cert_table, start_ca, write_config
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration
BLOCKED2 = "refused.test"  # the second pebble refuses it (two labels: see BLOCKED)


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory, pebble: LocalCA) -> Iterator[LocalCA]:
    """Another pebble, validating on the same port as the session's (one listener)."""
    ca = start_ca(tmp_path_factory.mktemp("second"), http_port=pebble.http_port,
                  blocklist=[BLOCKED2])  # fmt: skip
    yield ca
    ca.stop()


def ca_table(name: str, ca: LocalCA | FaultProxy, eab_file: Path, eab: LocalCA,
             extra: str = "") -> str:  # fmt: skip
    """A [ca.NAME] table for ``ca`` (a pebble, or a proxy in front of ``eab``'s pebble)."""
    eab_file.write_text(eab.eab_hmac_key)
    eab_file.chmod(0o600)
    return (
        f'[ca.{name}]\ndirectory = "{ca.directory_url}"\nca_bundle = "{ca.ca_bundle}"\n'
        f'eab_kid = "{eab.eab_kid}"\neab_hmac_key_file = "{eab_file}"\nissuance_timeout = 30\n'
        f"{extra}\n"
    )


def two_cas(tmp_path: Path, pebble: LocalCA, second: LocalCA, certs: str,
            extra: str = "") -> Setup:  # fmt: skip
    """[acme] is the session's pebble ("default"), [ca.second] the other one."""
    table = ca_table("second", second, tmp_path / "second.key", second, extra)
    return write_config(tmp_path, pebble, certs, acme_extra=table)


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def status_of(setup: Setup, capsys: pytest.CaptureFixture[str], name: str) -> dict[str, object]:
    capsys.readouterr()
    assert cli(setup, "status", "--json") == 0
    found = json.loads(capsys.readouterr().out)["certificates"]
    return next(s for s in found if s["name"] == name)


def with_ca(name: str, *domains: str, ca: str) -> str:
    return cert_table(name, *domains).rstrip("\n") + f"\nca = {ca}\n\n"


def test_a_refused_identifier_falls_back_to_the_next_ca_and_says_which_issued(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first CA refuses the name (rejectedIdentifier: pebble's blocklist); the second
    issues it in the same run; status, metrics and the log say so; the next renewal starts
    from the first again; revocation goes to the CA that issued it."""
    certs = with_ca("b", BLOCKED, ca='["default", "second"]') + cert_table("w", "w.example.com")
    setup = two_cas(tmp_path, pebble, second, certs)
    textfile = tmp_path / "metrics.prom"
    assert setup.renew("--metrics-textfile", str(textfile)) == 0
    err = capsys.readouterr().err
    assert "b: [acme]: " in err and "rejectedIdentifier" in err
    assert "trying [ca.second]" in err
    assert status_of(setup, capsys, "b")["ca"] == "second"
    assert status_of(setup, capsys, "w")["ca"] == "default"
    metrics = textfile.read_text()
    assert re.search(r'acme_agent_certificate_expiry_timestamp_seconds\{ca="second",name="b"\}',
                     metrics)  # fmt: skip
    assert re.search(r'acme_agent_certificate_expiry_timestamp_seconds\{ca="default",name="w"\}',
                     metrics)  # fmt: skip
    assert 'acme_agent_ca_fallbacks_total{ca="default",name="b"} 1.0' in metrics
    assert 'acme_agent_ca_fallbacks_total{ca="default",name="w"}' not in metrics
    cli(setup, "status")
    table = capsys.readouterr().out
    assert re.search(r"^b\s+blocked\.test\s+ec-p256\s+second\s", table, re.M)
    # Each CA has its own account (state_dir/accounts/<ca-id>).
    assert len(list((setup.state / "accounts").iterdir())) == 2
    # The next renewal starts from the first again (which still refuses).
    assert setup.renew("--force", "--cert", "b") == 0
    assert "b: [acme]: " in capsys.readouterr().err
    assert setup.versions("b") == ["0001", "0002"]
    # Revocation belongs to the CA that issued it (the default one would refuse it).
    assert cli(setup, "revoke", "--cert", "b") == 0


def test_a_stopped_ca_falls_back_and_the_last_failure_is_reported(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first CA does not answer (stopped: its port is closed) after the client's
    retries; the second issues. With no CA left, the certificate fails alone, naming it."""
    down = LocalCA(tmp_path / "down")
    down.directory_url = f"https://127.0.0.1:{free_port()}/dir"
    down.ca_bundle = pebble.ca_bundle
    stopped = ca_table("down", down, tmp_path / "down.key", pebble, "request_timeout = 2")
    certs = with_ca("s", "s.example.com", ca='["down", "second"]')
    certs += with_ca("only", "only.example.com", ca='"down"') + cert_table("ok", "ok.example.com")
    setup = two_cas(tmp_path, pebble, second, certs, stopped)
    started = time.monotonic()
    assert setup.renew() == 1  # "only" has no CA left
    assert time.monotonic() - started < 60
    out, err = capsys.readouterr()
    assert "s: issued" in out and "ok: issued" in out
    assert re.search(r"^only: failed: \[ca\.down\]: .*check \[ca\.down\] directory", out, re.M)
    assert "s: [ca.down]: " in err and "trying [ca.second]" in err
    assert status_of(setup, capsys, "s")["ca"] == "second"


def test_an_issuance_timeout_falls_back_and_the_order_is_kept_for_its_ca(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first CA keeps the order processing past its issuance_timeout (a slow CA); the
    second issues in the same run."""
    proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    try:

        def processing(body: bytes) -> bytes:
            data = json.loads(body)
            if data.get("status") == "valid":
                data["status"] = "processing"
                data.pop("certificate", None)
            return json.dumps(data).encode()

        proxy.faults = [Fault("replace", path=p, transform=processing)
                        for p in ("/my-order/", "/finalize-order/")]  # fmt: skip
        slow = ca_table("slow", proxy, tmp_path / "slow.key", pebble, "")
        slow = slow.replace("issuance_timeout = 30", "issuance_timeout = 2")
        certs = with_ca("t", "t.example.com", ca='["slow", "second"]')
        setup = two_cas(tmp_path, pebble, second, certs, slow)
        assert setup.renew() == 0
        err = capsys.readouterr().err
        assert "t: [ca.slow]: " in err and "still processing after 2 s" in err
        assert "[ca.slow] issuance_timeout" in err
        assert status_of(setup, capsys, "t")["ca"] == "second"
        assert len(proxy.posted("/order-plz")) == 1
        assert not (setup.state / "orders" / "t.json").exists()  # installed: stale now
        # The slow CA's order is kept when the fallback fails too, and resumed next time.
        setup.config.write_text(setup.config.read_text().replace("t.example.com", BLOCKED2))
        proxy.records.clear()
        assert setup.renew() == 1
        kept = json.loads((setup.state / "orders" / "t.json").read_text())
        assert kept["directory"] == proxy.directory_url
        # Once the slow CA is no longer one of its CAs, that order is dropped, not kept
        # for ever (which would stop every later order from being kept).
        setup.config.write_text(
            setup.config.read_text()
            .replace('ca = ["slow", "second"]', 'ca = "second"')
            .replace(BLOCKED2, "t.example.com")
        )
        assert setup.renew("--force") == 0
        assert "is for a CA this certificate no longer uses" in capsys.readouterr().err
        assert not (setup.state / "orders" / "t.json").exists()
    finally:
        proxy.stop()


def test_key_types_refuse_at_load_and_skip_a_ca_that_does_not_accept(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = FaultProxy(tmp_path / "proxy", second.directory_url, second.ca_bundle).start()
    try:
        rsa_only = ca_table(
            "rsaonly", proxy, tmp_path / "r.key", second, 'key_types = ["rsa-2048"]'
        )
        # Not accepted by any of its CAs: refused before any request, exit 2, naming both.
        certs = with_ca("k", "k.example.com", ca='"rsaonly"')
        setup = write_config(tmp_path, pebble, certs, acme_extra=rsa_only)
        assert setup.renew() == 2
        err = capsys.readouterr().err
        assert "certificate[0].key_type: 'ec-p256' is accepted by none of its CAs" in err
        assert "rsaonly accepts rsa-2048" in err
        assert cli(setup, "validate") == 2
        # Accepted by the second of its CAs: the first is skipped (no request reaches it).
        setup.config.write_text(
            setup.config.read_text().replace('ca = "rsaonly"', 'ca = ["rsaonly", "default"]')
        )
        assert setup.renew() == 0
        assert status_of(setup, capsys, "k")["ca"] == "default"
        assert proxy.records == []
    finally:
        proxy.stop()


def test_dry_run_goes_to_staging_and_never_to_a_ca_without_one(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "prod" (a proxy in front of pebble, to count its requests) gets the second pebble
    as its staging_directory: a dry run orders there only. Without one, --dry-run exits 2
    naming staging_directory before any request, unless --allow-production."""
    proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    # The staging CA has EAB credentials of its own (staging_eab_*): the production ones,
    # which may be single-use, never go there.
    staging_ca = start_ca(tmp_path / "staging", http_port=pebble.http_port)
    staging_key = tmp_path / "staging-eab.key"
    staging_key.write_text(staging_ca.eab_hmac_key)
    staging_key.chmod(0o600)
    try:
        prod = ca_table("prod", proxy, tmp_path / "p.key", pebble)
        certs = with_ca("d", "d.example.com", ca='"prod"')
        setup = write_config(tmp_path, second, certs, acme_extra=prod)
        # 1. No staging directory: refused before any request.
        assert setup.renew("--dry-run") == 2
        err = capsys.readouterr().err
        assert "[ca.prod] staging_directory: not set" in err and "--allow-production" in err
        assert proxy.records == []
        # 2. staging_directory set: the dry run goes there, and only there.
        text = setup.config.read_text()
        staging = (f'staging_directory = "{staging_ca.directory_url}"\n'
                   f'staging_eab_kid = "{staging_ca.eab_kid}"\n'
                   f'staging_eab_hmac_key_file = "{staging_key}"\n')  # fmt: skip
        # (Public CAs' staging and production share their TLS roots; these pebbles do not.)
        staged = text.replace("[ca.prod]\n", "[ca.prod]\n" + staging)
        staged = staged.replace(str(proxy.ca_bundle), str(staging_ca.ca_bundle))
        setup.config.write_text(staged)
        assert setup.renew("--dry-run") == 0
        out = capsys.readouterr().out
        assert "d: dry-run" in out and "from [ca.prod]" in out
        assert proxy.records == [] and not setup.live("d").exists()
        # 3. --allow-production without a staging directory: the CA itself, discarded.
        setup.config.write_text(text)
        assert setup.renew("--dry-run", "--allow-production") == 0
        assert proxy.posted("/order-plz") and not setup.live("d").exists()
    finally:
        proxy.stop()
        staging_ca.stop()


def test_account_update_email_per_ca_is_what_the_ca_shows(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = two_cas(tmp_path, pebble, second, cert_table("a", "a.example.com"))
    assert cli(setup, "account", "update", "--email", "ops@example.com") == 1  # no account yet
    assert "'acme-agent register' creates one" in capsys.readouterr().err
    assert cli(setup, "register") == 0
    assert cli(setup, "account", "update", "--email", "ops@example.com") == 0
    assert "mailto:ops@example.com" in capsys.readouterr().out
    assert cli(setup, "account", "show", "--json") == 0
    assert json.loads(capsys.readouterr().out)["contact"] == ["mailto:ops@example.com"]
    # The other CA's account: its own (created by a renewal there), updated on its own.
    setup.config.write_text(
        setup.config.read_text().replace('name = "a"', 'name = "a"\nca = "second"')
    )
    assert setup.renew() == 0
    assert cli(setup, "account", "update", "--ca", "second", "--email", "pki@example.com") == 0
    capsys.readouterr()
    assert cli(setup, "account", "show", "--ca", "second", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["contact"] == ["mailto:pki@example.com"] and shown["ca"] == "second"
    assert cli(setup, "account", "show", "--json") == 0
    assert json.loads(capsys.readouterr().out)["contact"] == ["mailto:ops@example.com"]
    assert cli(setup, "register", "--ca", "second") == 0  # found, not registered again
    assert capsys.readouterr().out.strip() == shown["url"]
    # Usage errors: exit 2, one line.
    assert cli(setup, "account", "update") == 2
    assert cli(setup, "account", "update", "--email", "not-an-address") == 2
    assert cli(setup, "account", "show", "--ca", "nope") == 2
    assert "--ca nope: no such CA" in capsys.readouterr().err


def test_a_fleet_host_learns_the_issuing_ca_from_the_shared_record(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, redis_server: object,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Host A orders from the fallback CA and shares the certificate; host B installs it
    from Redis and knows which CA issued it (its ARI and revocation go there too)."""
    from tests.test_cluster import cluster_table

    certs = with_ca("b", BLOCKED, ca='["default", "second"]')
    hosts = []
    for node in ("a", "b"):
        folder = tmp_path / node
        folder.mkdir()
        setup = two_cas(folder, pebble, second, certs)
        table = cluster_table(redis_server, tmp_path, node)  # type: ignore[arg-type]
        setup.config.write_text(setup.config.read_text() + "\n" + table)
        hosts.append(setup)
    a, b = hosts
    assert a.renew() == 0
    assert b.renew() == 0
    assert "b: deployed (serial" in capsys.readouterr().out
    assert status_of(a, capsys, "b")["ca"] == "second"
    assert status_of(b, capsys, "b")["ca"] == "second"


def test_no_fallback_once_the_first_ca_issued_it(
    tmp_path: Path, pebble: LocalCA, second: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first CA issued the certificate but its download keeps failing: asking the
    second CA would be a second order (at AWS ACM, a second charge). The run fails, the
    order is kept, and the next run downloads it: one newOrder in all, none at the second."""
    proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    try:
        proxy.faults = [Fault("status", path="/certZ/", status=503)]
        first = ca_table("first", proxy, tmp_path / "first.key", pebble)
        certs = with_ca("n", "n.example.com", ca='["first", "second"]')
        setup = two_cas(tmp_path, pebble, second, certs, first)
        assert setup.renew() == 1
        err = capsys.readouterr().err
        assert "trying [ca.second]" not in err
        assert not (setup.state / "accounts").exists() or len(
            list((setup.state / "accounts").iterdir())) == 1  # fmt: skip
        kept = json.loads((setup.state / "orders" / "n.json").read_text())
        assert kept["directory"] == proxy.directory_url
        proxy.faults = []
        assert setup.renew() == 0
        assert "resuming the order" in capsys.readouterr().err
        assert len(proxy.posted("/order-plz")) == 1
        assert status_of(setup, capsys, "n")["ca"] == "first"
    finally:
        proxy.stop()


def test_the_issuing_ca_is_the_recorded_one_or_the_one_whose_account_ordered_it(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from agent.config import load
    from agent.engine.issuing import issuing_ca
    from agent.model import CertRecord
    from agent.store.certs import Store

    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[acme]\ndirectory = "https://a.example/dir"\n'
        '[ca.b]\ndirectory = "https://b.example/dir"\n[[certificate]]\nname = "x"\n'
        'domains = ["x.example.com"]\nca = ["default", "b"]\n'
    )
    config_path.chmod(0o600)
    config = load(config_path)
    store = Store(config.state_dir)
    store.save_account_key("https://b.example/dir", b"not used here")
    store.save_account("https://b.example/dir", "https://b.example/acct/7")
    now = datetime.now(UTC)
    cert = config.certificates[0]

    def record(ca: str | None, account: str | None) -> CertRecord:
        return CertRecord("x", "0001", "1", frozenset(), "ec-p256", now, now, "", account,
                          None, ca)  # fmt: skip

    assert issuing_ca(config.cas, store, cert, record(None, None)) is config.cas["default"]
    assert issuing_ca(config.cas, store, cert, record("b", None)) is config.cas["b"]
    assert issuing_ca(config.cas, store, cert, record("gone", None)) is None  # never guessed
    assert issuing_ca(config.cas, store, cert, record("", "https://b.example/acct/7")) is (
        config.cas["b"])  # fmt: skip
    assert issuing_ca(config.cas, store, cert, record("", "https://c.example/acct/1")) is None
    # A certificate with one CA: an import from it, a fleet record of an older host.
    only = dataclasses.replace(cert, ca=("b",))
    assert issuing_ca(config.cas, store, only, record("", None)) is config.cas["b"]
    assert issuing_ca(config.cas, store, only, record("gone", None)) is None

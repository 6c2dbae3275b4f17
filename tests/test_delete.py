"""`acme-agent delete --cert NAME [--revoke]` and orphaned certificates in `status`, against
a real pebble: delete with and without revoke."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import generate_latest

from agent.cli.main import main
from agent.cli.renew_cache import CACHE_NAME
from agent.engine.metrics import Metrics
from agent.localca import LocalCA, free_port
from agent.model import Outcome, Status
from tests.conftest import Setup, cert_table, write_config
from tests.daemon_proc import DaemonProc
from tests.faultproxy import Fault, FaultProxy
from tests.redis_server import RedisServer
from tests.test_quick import renew as quick_renew

STAMP = "20260101T000000"


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def listing(state: Path) -> set[str]:
    """Every path under state_dir (links not followed)."""
    found = set()
    for folder, dirs, files in os.walk(state):
        for entry in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, entry), state))
    return found


def of_www(path: str) -> bool:
    """A path of "www" (not of "www2"): the folder's entry is named for it."""
    parts = path.split(os.sep)
    return len(parts) > 1 and re.match(r"\A(\.tmp-|\.)?www(\.|\Z)", parts[1]) is not None


def serial(setup: Setup, name: str) -> str:
    cert = x509.load_pem_x509_certificate((setup.live(name) / "cert.pem").read_bytes())
    return f"{cert.serial_number:x}"


def unconfigure(setup: Setup, name: str) -> None:
    """Remove ``[[certificate]] name = NAME`` from the main file."""
    text = setup.config.read_text()
    start = text.index(f'[[certificate]]\nname = "{name}"\n')
    end = text.find("[[certificate]]", start + 1)
    setup.config.write_text(text[:start] + (text[end:] if end != -1 else ""))


def extra_state(setup: Setup, name: str) -> None:
    """What a long life leaves beside the live set: set-aside copies, ARI state, a deploy
    record, a kept order, a revocation note, a dead writer's temporary, a second version."""
    state = setup.state
    for folder in ("attempts", "ari", "deployed", "orders", "revoked"):
        (state / folder).mkdir(exist_ok=True)
    (state / "attempts" / f"{name}.json.corrupt-{STAMP}").write_text("garbage")
    (state / "ari" / f"{name}.json").write_text("{}")
    (state / "deployed" / f"{name}.json").write_text('{"version": "0001"}')
    (state / "orders" / f"{name}.json").write_text("{}")
    (state / "revoked" / f"{name}.corrupt-{STAMP}").write_text("zz")
    (state / "attempts" / f".tmp-{name}.json.999999.0123abcd").write_text("")
    (state / "live" / f".{name}.damaged-{STAMP}").mkdir()


@pytest.fixture
def two(tmp_path: Path, pebble: LocalCA) -> Setup:
    """ "www" and "www2" (a name with the other as its prefix), both issued."""
    certs = cert_table("www", "www.example.com") + cert_table("www2", "www2.example.com")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    return setup


@pytest.mark.integration
def test_delete_without_revoke_removes_everything_of_it_and_nothing_else(
    two: Setup, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert two.renew("--force", "--cert", "www") == 0  # a second archive version
    extra_state(two, "www")
    extra_state(two, "www2")
    issued = serial(two, "www")
    unconfigure(two, "www")
    capsys.readouterr()

    assert cli(two, "status", "--json") == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["certificates"]}
    assert entries["www"]["configured"] is False and entries["www2"]["configured"] is True
    assert entries["www"]["serial"] == issued and entries["www"]["not_after"]
    assert entries["www"]["next_renewal"] is None
    assert cli(two, "status") == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("www "))
    assert "acme-agent delete --cert www" in row and "(not configured)" in row
    assert cli(two, "check") == 0  # an orphan is no alert: only mentioned
    out = capsys.readouterr().out
    assert out.startswith("OK: 1 certificates") and "not configured any more" in out
    assert "www=" not in out.split("|", 1)[1] and "www2=" in out

    before = listing(two.state)
    assert cli(two, "delete", "--cert", "www") == 0  # no terminal: no question
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"www: deleted from {two.state}: live, archive (2 versions)")
    assert "attempts, ARI state, deployment record, pending order, revocation note, lock" in line
    gone = before - listing(two.state)
    assert not listing(two.state) - before  # nothing new
    assert len([p for p in before if "www2" in p]) >= 13  # its files were there too
    assert gone == {p for p in before if of_www(p)}, gone ^ {p for p in before if of_www(p)}
    assert two.ca.cert_status(issued) == "Valid"  # not revoked
    assert cli(two, "delete", "--cert", "www") == 2
    assert "no certificate named 'www'" in caplog.text
    assert cli(two, "status", "--json") == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)["certificates"]] == ["www2"]


@pytest.mark.integration
def test_delete_revoke_revokes_at_the_ca_first(
    two: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = serial(two, "www2")
    unconfigure(two, "www2")
    before = listing(two.state)
    assert cli(two, "delete", "--cert", "www2", "--revoke", "--yes") == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"; serial {issued} revoked at [acme]"), line
    assert two.ca.cert_status(issued) == "Revoked"
    assert not [p for p in listing(two.state) if "www2" in p]
    assert {p for p in before - listing(two.state) if "www2" not in p} == set()
    assert serial(two, "www")  # the other one is untouched


@pytest.mark.integration
def test_an_already_revoked_certificate_is_deleted(
    two: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = serial(two, "www")
    assert cli(two, "revoke", "--cert", "www") == 0
    unconfigure(two, "www")
    assert cli(two, "delete", "--cert", "www", "--revoke") == 0
    assert f"serial {issued} already revoked at [acme]" in capsys.readouterr().out
    assert not (two.state / "archive" / "www").exists()


@pytest.mark.integration
def test_refused_while_configured_unknown_or_invalid(
    two: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    before = listing(two.state)
    assert cli(two, "delete", "--cert", "www") == 2
    assert "www: still configured in" in caplog.text
    assert "remove it from the configuration first" in caplog.text
    # A file of certs_dir in error still defines it: refused as well.
    unconfigure(two, "www")
    drop_ins = two.dir / "certs.d"
    drop_ins.mkdir()
    (drop_ins / "www.toml").write_text('name = "www"\ndomains = [3]\n')
    text = two.config.read_text()
    two.config.write_text(f'certs_dir = "{drop_ins}"\n' + text)
    caplog.clear()
    assert cli(two, "delete", "--cert", "www", "--revoke") == 2
    assert "(a file in error); remove it from the configuration first" in caplog.text
    for name, message in (("nothing", "no certificate named 'nothing'"),
                          ("../www", "not a certificate name"),
                          ("www/../www2", "not a certificate name")):  # fmt: skip
        caplog.clear()
        assert cli(two, "delete", "--cert", name) == 2
        assert message in caplog.text
    assert cli(two, "delete", "--cert", "www2", "--ca", "default") == 2  # --ca is for --revoke
    assert listing(two.state) == before


@pytest.mark.integration
def test_revocation_at_an_unknown_ca_needs_ca_and_a_failed_one_deletes_nothing(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from tests.conftest import through

    setup = through(tmp_path, pebble, proxy, cert_table("old", "old.example.com"))
    assert setup.renew() == 0
    issued = serial(setup, "old")
    unconfigure(setup, "old")
    facts = setup.live("old") / "facts.json"
    data = json.loads(facts.read_text())
    data["ca"], data["account"] = "retired", ""  # a CA since removed, not our account
    facts.write_text(json.dumps(data))
    before = listing(setup.state)
    assert cli(setup, "delete", "--cert", "old", "--revoke") == 2
    assert "'retired', which is not configured any more" in caplog.text
    assert "--ca NAME (configured: default)" in caplog.text
    data["ca"] = ""  # not known (an import)
    facts.write_text(json.dumps(data))
    caplog.clear()
    assert cli(setup, "delete", "--cert", "old", "--revoke") == 2
    assert "the CA that issued it is not recorded" in caplog.text
    assert cli(setup, "delete", "--cert", "old", "--revoke", "--ca", "nope") == 2
    # The CA fails the revocation: nothing is deleted, exit 1.
    proxy.faults = [Fault("status", status=403, problem="unauthorized", path="/revoke-cert")]
    caplog.clear()
    assert cli(setup, "delete", "--cert", "old", "--revoke", "--ca", "default") == 1
    assert (
        "old: not revoked, nothing deleted: revoking the certificate: the CA said " in caplog.text
    )
    assert listing(setup.state) == before
    assert pebble.cert_status(issued) == "Valid"
    proxy.faults = []
    capsys.readouterr()
    assert cli(setup, "delete", "--cert", "old", "--revoke", "--ca", "default") == 0
    assert f"serial {issued} revoked at [acme]" in capsys.readouterr().out
    assert pebble.cert_status(issued) == "Revoked"
    assert not [p for p in listing(setup.state) if "old" in p]


@pytest.mark.integration
def test_the_renew_cache_never_answers_after_a_delete(two: Setup) -> None:
    assert two.renew() == 0 and two.renew() == 0  # the second one leaves the cache
    cache = two.state / CACHE_NAME
    assert cache.exists()
    unconfigure(two, "www")
    assert cli(two, "delete", "--cert", "www") == 0
    assert not cache.exists()
    assert quick_renew(two, "renew", full=False).returncode != 0  # not from a cache
    full = quick_renew(two, "renew")
    assert full.returncode == 0 and "www:" not in full.stdout and "www2: unchanged" in full.stdout


def test_metrics_drop_the_series_of_names_that_are_gone() -> None:
    metrics = Metrics()
    for name in ("www", "www2"):
        metrics.refresh_one(name, None, None, True)
        metrics.expiry.labels(name, "default").set(1)
        failed = Outcome(name, Status.FAILED, "boom", error_type="CAError")
        metrics.observe_outcome(failed)
    metrics.retain({"www2"})
    text = generate_latest(metrics.registry).decode()
    assert 'name="www2"' in text and 'name="www"' not in text
    assert 'acme_agent_renewal_failures_total{name="www2",reason="CAError"} 1.0' in text


@pytest.mark.integration
def test_no_series_for_an_orphan_in_the_textfile_or_the_daemon(
    tmp_path: Path, pebble: LocalCA
) -> None:
    port = free_port()
    certs = cert_table("keep", "keep.example.com") + cert_table("gone", "gone.example.com")
    setup = write_config(tmp_path, pebble, certs)
    setup.config.write_text(
        setup.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    )
    target = tmp_path / "agent.prom"
    assert setup.renew("--metrics-textfile", str(target)) == 0
    assert 'name="gone"' in target.read_text()
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"acme-agent running with 2 certificates")
        assert 'name="gone"' in scrape(port, 'name="gone"')
        unconfigure(setup, "gone")  # the daemon reloads: no series of it any more
        daemon.wait_for(r"configuration reloaded: 1 certificates")
        assert 'name="gone"' not in scrape(port, 'name="keep"')
    finally:
        assert daemon.stop() == 0
    assert setup.renew("--metrics-textfile", str(target)) == 0  # an orphan: no series
    assert 'name="gone"' not in target.read_text() and 'name="keep"' in target.read_text()


def scrape(port: int, wanted: str) -> str:
    for _ in range(50):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        if wanted in text.decode():
            break
        time.sleep(0.1)
    return text.decode()


@pytest.mark.integration
def test_in_fleet_mode_only_this_hosts_copy_is_deleted(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from agent.fleet.cluster import RedisCluster
    from tests.test_cluster import cluster_settings, cluster_table

    certs = cert_table("www", "www.example.com") + cert_table("www2", "www2.example.com")
    setup = write_config(tmp_path, pebble, certs)
    table = cluster_table(redis_server, tmp_path, "a")
    setup.config.write_text(setup.config.read_text() + "\n" + table)
    assert setup.renew() == 0
    issued = serial(setup, "www")
    unconfigure(setup, "www")
    capsys.readouterr()
    assert cli(setup, "delete", "--cert", "www", "--revoke") == 0
    line = capsys.readouterr().out
    assert f"serial {issued} revoked at [acme]" in line
    assert "on this host only: the fleet's record in Redis is kept" in line
    assert pebble.cert_status(issued) == "Revoked"
    assert not [p for p in listing(setup.state) if of_www(p)]
    shared = RedisCluster(cluster_settings(redis_server, tmp_path, key_prefix="fleet:"))
    record = shared.load_cert("www")
    assert record is not None and record.serial == issued  # other hosts may still use it
    assert shared.load_cert("www2") is not None and serial(setup, "www2")


@pytest.mark.integration
def test_on_a_terminal_it_asks_first(
    two: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    unconfigure(two, "www")
    before = listing(two.state)
    questions: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda q: questions.append(q) or "n")
    assert cli(two, "delete", "--cert", "www", "--revoke") == 2
    assert "not confirmed (--yes: do not ask)" in caplog.text
    assert questions == [f"Revoke and delete www from {two.state}? This cannot be undone. [y/N] "]
    assert listing(two.state) == before
    assert cli(two, "delete", "--cert", "www", "--yes") == 0 and len(questions) == 1
    assert "www: deleted from" in capsys.readouterr().out

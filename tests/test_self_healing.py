"""Self-healing state (issue 15): damage to the files in service is seen on the next run,
repaired from the archive without an order when an intact version exists, reissued once
when none does; ``check`` says CRITICAL meanwhile; retries fit the urgency."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509

from agent import keys
from agent.cli.main import main
from agent.localca import LocalCA
from tests.conftest import Setup, cert_table, require_binary, write_config
from tests.test_quick import renew as quick_renew

pytestmark = pytest.mark.integration


def live_matches(setup: Setup, name: str = "d") -> bool:
    live = setup.live(name)
    cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    key = keys.load_key_pem((live / "privkey.pem").read_bytes())
    full = (live / "fullchain.pem").read_bytes()
    return keys.public_key_matches(cert, key) and full.startswith((live / "cert.pem").read_bytes())


def damage(setup: Setup, how: str, name: str = "d") -> None:
    live = setup.live(name)
    if how == "privkey deleted":
        (live / "privkey.pem").unlink()
    elif how == "cert truncated":
        path = live / "cert.pem"
        path.write_bytes(path.read_bytes()[:100])
    elif how == "fullchain garbage":
        (live / "fullchain.pem").write_bytes(b"this is not PEM\n")
    elif how == "live is a plain folder":  # a backup restored without its links
        folder = live.resolve()
        live.unlink()
        shutil.copytree(folder, live)
    elif how == "archive deleted":
        shutil.rmtree(setup.state / "archive" / name)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["privkey deleted", "cert truncated", "fullchain garbage", "live is a plain folder",
     "archive deleted"],
)  # fmt: skip
def test_damage_in_service_is_repaired_from_the_archive_without_an_order(
    tmp_path: Path,
    pebble: LocalCA,
    how: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = write_config(tmp_path, pebble, cert_table("d", "d.example.com"))
    assert setup.renew() == 0
    assert setup.renew("--force") == 0  # 0002 in service, 0001 intact in the archive
    for _ in range(2):  # the renewal information, then nothing due: the cache is kept
        assert quick_renew(setup, "renew").returncode == 0
    assert quick_renew(setup, "renew", full=False).returncode == 0  # answered from the cache
    damage(setup, how)
    assert quick_renew(setup, "renew", full=False).returncode != 0  # the cache does not answer
    capsys.readouterr()
    assert main(["--config", str(setup.config), "check"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("CRITICAL") and ("damaged" in out or "no certificate" in out)
    assert setup.renew() == 0
    assert live_matches(setup)
    if how == "archive deleted":
        assert "no archive version is intact; ordering a new one" in caplog.text
        assert setup.versions("d") == ["0001"]  # a new archive, one new order
    else:
        assert "restored version" in caplog.text and "(no new order)" in caplog.text
        assert setup.versions("d") == ["0001", "0002"]  # no order
    assert os.path.islink(setup.live("d"))
    capsys.readouterr()
    assert main(["--config", str(setup.config), "check"]) == 0, capsys.readouterr().out
    assert setup.renew() == 0 and setup.versions("d")[-1] in ("0001", "0002")


STATE_FILES = [
    "attempts/s.json", "ari/s.json", "ari/_ca.json", "deployed/s.json", "revoked/s",
    "renew-cache.json", "orders/s.json", "orders/_replaces.json", "live/s/facts.json",
    "accounts/*/account.json", "accounts/*/private_key.pem",
]  # fmt: skip
CORRUPTIONS = {"random bytes": os.urandom(64), "empty": b"", "wrong JSON type": b"[1, 2]"}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_state_file_is_untrusted_input(
    tmp_path: Path, pebble: LocalCA, corruption: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each state file corrupted in turn: renew, status and check give an answer, never a
    traceback, and the other certificate ("o") is never the worse for it."""
    certs = cert_table("s", "s.example.com") + cert_table("o", "o.example.com")
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 0
    (setup.state / "revoked").mkdir(exist_ok=True)
    (setup.state / "revoked" / "s").write_text("00")  # present, so that it can be corrupted
    (setup.state / "deployed").mkdir(exist_ok=True)
    (setup.state / "deployed" / "s.json").write_text('{"version": "0001"}')
    (setup.state / "orders").mkdir(exist_ok=True)
    for name in ("s.json", "_replaces.json"):
        (setup.state / "orders" / name).write_text("{}")
    (setup.state / "ari").mkdir(exist_ok=True)
    (setup.state / "ari" / "_ca.json").write_text("{}")
    for pattern in STATE_FILES:
        matches = list(setup.state.glob(pattern))
        assert matches, pattern
        for path in matches:
            saved = path.read_bytes()
            path.write_bytes(CORRUPTIONS[corruption])
            for command in (["renew"], ["status"], ["status", "--json"], ["check"]):
                code = main(["--config", str(setup.config), *command])
                captured = capsys.readouterr()
                text = captured.out + captured.err
                assert "Traceback" not in text and "internal error" not in text, (pattern, text)
                assert code in (0, 1, 2), (pattern, command, code)
                if command == ["renew"] and "account" not in pattern:
                    assert "o: failed" not in text, (pattern, text)
            if path.exists() or not any(path.parent.glob(path.name + ".corrupt-*")):
                path.write_bytes(saved)
            else:
                path.write_bytes(saved)


def test_the_daemon_starts_over_corrupt_state(tmp_path: Path, pebble: LocalCA) -> None:
    """Random bytes in revoked/<name> and ari/<name>.json used to crash the daemon at start
    (a crash loop under Restart=on-failure)."""
    from tests.daemon_proc import DaemonProc

    setup = write_config(tmp_path, pebble, cert_table("s", "s.example.com"))
    assert setup.renew() == 0
    for folder, name in (("revoked", "s"), ("ari", "s.json"), ("attempts", "s.json")):
        (setup.state / folder).mkdir(exist_ok=True)
        (setup.state / folder / name).write_bytes(os.urandom(64))
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"acme-agent running with 1 certificates")
    finally:
        assert daemon.stop() == 0
    text = daemon.text()
    assert "Traceback" not in text and "internal error" not in text
    assert "moved to s.corrupt-" in text


def test_a_ca_that_lost_the_account_gets_a_new_one_and_spent_eab_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The CA restarts empty behind the same URL: the next run registers anew with the
    configured EAB credentials, in the same run. Then a CA that refuses those credentials:
    exit 2 naming the key id, check CRITICAL, status saying so; new credentials in the
    configuration, and the next run recovers."""
    from types import SimpleNamespace

    from agent.store.certs import Store
    from tests.conftest import start_ca
    from tests.faultproxy import FaultProxy

    first = start_ca(tmp_path / "ca1")
    proxy = FaultProxy(tmp_path / "proxy", first.directory_url, first.ca_bundle).start()
    cas = [first]
    try:
        ca = SimpleNamespace(eab_kid=first.eab_kid, eab_hmac_key=first.eab_hmac_key,
                             directory_url=proxy.directory_url, ca_bundle=proxy.ca_bundle,
                             http_port=first.http_port)  # fmt: skip
        setup = write_config(tmp_path, ca, cert_table("a", "a.example.com"))  # type: ignore[arg-type]
        assert setup.renew() == 0
        old = Store(setup.state).load_account(proxy.directory_url)
        assert old is not None

        def restart(eab_hmac_key: str) -> LocalCA:
            cas[-1].stop()
            cas.append(start_ca(tmp_path / f"ca{len(cas) + 1}", eab_hmac_key=eab_hmac_key,
                                http_port=first.http_port))  # fmt: skip
            proxy.retarget(cas[-1].directory_url, cas[-1].ca_bundle)
            return cas[-1]

        restart(first.eab_hmac_key)  # forgot every account; the same EAB credentials
        assert setup.renew("--force") == 0
        assert "the CA no longer knows the ACME account" in caplog.text
        new = Store(setup.state).load_account(proxy.directory_url)
        assert new is not None and new.uri != old.uri

        third = restart("A" * 43)  # and now it refuses the configured credentials
        capsys.readouterr()
        assert setup.renew("--force") == 2
        err = capsys.readouterr().err
        assert "refused the EAB credentials with key id 'kid-1'" in err and "new ones" in err
        assert main(["--config", str(setup.config), "check"]) == 2
        out = capsys.readouterr().out
        assert out.startswith("CRITICAL") and "a cannot be renewed" in out
        assert main(["--config", str(setup.config), "status"]) == 0
        assert "refused the EAB credentials" in capsys.readouterr().out

        (setup.dir / "eab.key").write_text(third.eab_hmac_key)  # the operator's new ones
        assert setup.renew("--force") == 0
        assert setup.versions("a") == ["0001", "0002", "0003"]
    finally:
        proxy.stop()
        cas[-1].stop()


def pebble_orders(ca: LocalCA) -> int:
    import re

    return len(re.findall(r"Added order \"[^\"]+\" to the db", ca.log_text()))


def test_a_renew_before_longer_than_the_lifetime_is_no_order_loop(tmp_path: Path) -> None:
    """10-minute certificates with renew_before = "1h" were ordered 77 times in 30 s."""
    from tests.conftest import start_ca
    from tests.daemon_proc import DaemonProc

    ca = start_ca(tmp_path / "ca", validity_seconds=600)
    try:
        certs = cert_table("l", "l.example.com") + 'renew_before = "1h"\n'
        setup = write_config(tmp_path, ca, certs)
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
        try:
            daemon.wait_for(r"l: installed serial")
            time.sleep(15)
        finally:
            assert daemon.stop() == 0
        assert pebble_orders(ca) <= 2
        assert "renew_before 1h does not fit the 10m lifetime" in daemon.text()
    finally:
        ca.stop()


def test_a_clock_200_days_fast_orders_once_and_says_so(tmp_path: Path, pebble: LocalCA) -> None:
    """libfaketime: the host's clock 200 days ahead. Each certificate the CA issues is
    expired by that clock; the agent orders once, says the clock is off (log, check
    CRITICAL, the metric), and holds back (it ordered 192 times in 40 s)."""
    import subprocess
    import sys

    from tests.daemon_proc import ROOT
    from tests.test_daemon_liveness import faketime_env

    setup = write_config(tmp_path, pebble, cert_table("k", "k.example.com"))
    offset = tmp_path / "faketime"
    env = {**os.environ, **faketime_env(tmp_path, offset)}
    offset.write_text("+200d\n")
    before = pebble_orders(pebble)
    argv = [sys.executable, "-m", "agent", "--config", str(setup.config)]
    runs = [subprocess.run([*argv, "renew"], capture_output=True, text=True, env=env,
                           timeout=60, cwd=ROOT) for _ in range(5)]  # fmt: skip
    assert pebble_orders(pebble) - before == 1, runs[0].stderr + runs[1].stderr
    assert "this host's clock is 200d0h ahead of the CA's" in runs[0].stderr
    assert all("clock is 200d0h ahead of the CA" in r.stderr for r in runs[1:]), runs[1].stderr
    assert all("Traceback" not in r.stderr for r in runs)
    check = subprocess.run([*argv, "check"], capture_output=True, text=True, env=env,
                           timeout=60, cwd=ROOT)  # fmt: skip
    assert check.returncode == 2 and "clock is 200d0h ahead of the CA's" in check.stdout


def test_a_read_only_state_dir_makes_no_worker_storm(tmp_path: Path, pebble: LocalCA) -> None:
    """state_dir on a read-only mount (a unit without ReadWritePaths=): the daemon used to
    start 83 workers in 20 s (a worker that recorded nothing counted as a success). In a
    mount namespace of the test's own, state_dir is made read-only under a daemon."""
    import subprocess
    import sys

    from tests.daemon_proc import ROOT

    require_binary("unshare", "util-linux")  # under CI=true a failure, never a skip
    setup = write_config(tmp_path, pebble, cert_table("r", "r.example.com"))
    state = setup.state
    state.mkdir(mode=0o700)
    (state / "http01").mkdir(mode=0o700)
    log_path = tmp_path / "daemon.log"
    script = (f"mount --bind {state} {state} && mount -o remount,bind,ro {state} && "
              f"exec {sys.executable} -m agent -v --config {setup.config} run")  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        try:
            time.sleep(15)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    text = log_path.read_text()
    starts = text.count("in a worker process")
    assert 1 <= starts <= 3, text
    assert "read-only file system" in text.lower()
    assert "Traceback" not in text


def test_sets_installed_by_an_older_version_are_recorded_quietly(
    tmp_path: Path, pebble: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    """facts.json without file stats (written before they were recorded): no "damaged",
    no order, and the stats are there after one run."""
    import json

    setup = write_config(tmp_path, pebble, cert_table("u", "u.example.com"))
    assert setup.renew() == 0
    facts_path = setup.live("u") / "facts.json"
    facts = json.loads(facts_path.read_text())
    del facts["files"], facts["installed"], facts["account"]
    facts_path.write_text(json.dumps(facts))
    caplog.clear()
    assert main(["--config", str(setup.config), "check"]) == 0
    assert setup.renew() == 0
    assert "damaged" not in caplog.text and setup.versions("u") == ["0001"]
    assert "files" in json.loads(facts_path.read_text())

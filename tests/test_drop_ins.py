"""Configurations spread over drop-ins, one of them broken: the fault stays with its
certificate in `renew`, `status`, `check`, `validate` and `run`."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.cli.renew_cache import CACHE_NAME
from agent.localca import LocalCA
from tests.conftest import Setup, start_ca, write_config
from tests.daemon_proc import DaemonProc

pytestmark = pytest.mark.integration

BROKEN = 'domains = ["bad..name"]\n'


def with_drop_ins(tmp_path: Path, ca: LocalCA, files: dict[str, str]) -> Setup:
    folder = tmp_path / "certs.d"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    setup = write_config(tmp_path, ca, "")
    setup.config.write_text(f'certs_dir = "{folder}"\n' + setup.config.read_text())
    return setup


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def test_one_broken_drop_in_fails_alone(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = with_drop_ins(tmp_path, pebble, {
        "a.toml": 'domains = ["a.example.com"]\n',
        "b.toml": BROKEN,
        "c.toml": 'domains = ["c.example.com"]\n',
    })  # fmt: skip
    assert setup.renew() == 1  # b failed; a and c are issued
    out = capsys.readouterr()
    assert (setup.live("a") / "fullchain.pem").exists()
    assert (setup.live("c") / "fullchain.pem").exists()
    assert not setup.live("b").exists()
    line = next(x for x in out.out.splitlines() if x.startswith("b: "))
    assert "b: failed: configuration error:" in line and "b.toml: domains[0]" in line
    assert "3 certificates: 2 issued, 1 failed" in out.out
    assert "Traceback" not in out.err

    assert cli(setup, "status", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["certificates"]}
    assert set(rows) == {"a", "b", "c"}
    assert "b.toml: domains[0]" in rows["b"]["config_error"]
    assert rows["a"]["config_error"] is None
    assert cli(setup, "status") == 0
    assert "not renewed: configuration error" in capsys.readouterr().out

    assert cli(setup, "check") == 2  # b has no certificate, and why
    out_line = capsys.readouterr().out
    assert out_line.startswith("CRITICAL: b has no certificate:") and "domains[0]" in out_line
    assert " | a=" in out_line and " c=" in out_line  # performance data for the others

    assert cli(setup, "validate") == 2
    problems = capsys.readouterr().out.splitlines()
    assert len(problems) == 1 and "b.toml: domains[0]" in problems[0]
    (setup.dir / "certs.d" / "b.toml").write_text('domains = ["b.example.com"]\n')
    assert cli(setup, "validate") == 0
    assert capsys.readouterr().out.startswith("OK: ")
    assert setup.renew() == 0 and (setup.live("b") / "fullchain.pem").exists()


def test_broken_drop_in_of_a_certificate_in_service_is_a_warning(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = with_drop_ins(tmp_path, pebble, {"a.toml": 'domains = ["a2.example.com"]\n'})
    assert setup.renew() == 0
    (setup.dir / "certs.d" / "a.toml").write_text("domains = [\n")  # a typo
    assert setup.renew() == 1
    capsys.readouterr()
    assert cli(setup, "check") == 1
    line = capsys.readouterr().out
    assert line.startswith("WARNING: a is not renewed:") and "invalid TOML" in line


def test_main_file_broken_is_still_exit_2(tmp_path: Path, pebble: LocalCA) -> None:
    setup = with_drop_ins(tmp_path, pebble, {"a.toml": 'domains = ["a3.example.com"]\n'})
    setup.config.write_text(setup.config.read_text() + "\nbogus = 1\n")
    assert setup.renew() == 2
    assert cli(setup, "validate") == 2
    assert cli(setup, "check") == 3  # UNKNOWN: the configuration cannot be read


def test_daemon_starts_and_renews_the_others(tmp_path: Path) -> None:
    """12-second certificates: the good ones keep renewing beside a broken drop-in, and
    a good one broken by an edit keeps its previous definition in force."""
    ca = start_ca(tmp_path / "ca", validity_seconds=12)
    try:
        setup = with_drop_ins(tmp_path, ca, {
            "a.toml": 'domains = ["a.example.com"]\n',
            "b.toml": BROKEN,
            "c.toml": 'domains = ["c.example.com"]\n',
        })  # fmt: skip
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
        try:
            text = daemon.wait_for(r"c: installed serial", timeout=20)
            assert (
                "b.toml: domains[0]" in text and "b is not renewed until the file is fixed" in text
            )
            (setup.dir / "certs.d" / "c.toml").write_text("domains = [\n")  # an edit breaks c
            daemon.wait_for(r"configuration not reloaded for c: .*invalid TOML", timeout=10)
            # Renewed at half-life (6 s): both keep renewing, c with its previous definition.
            daemon.wait_for(r"a: installed serial", timeout=30, count=3)
            daemon.wait_for(r"c: installed serial", timeout=30, count=3)
        finally:
            assert daemon.stop() == 0
        assert not setup.live("b").exists()
        assert "Traceback" not in daemon.text()
    finally:
        ca.stop()


def test_daemon_status_line_counts_files_in_error(tmp_path: Path, pebble: LocalCA) -> None:
    setup = with_drop_ins(tmp_path, pebble, {
        "a.toml": 'domains = ["a4.example.com"]\n', "b.toml": BROKEN,
    })  # fmt: skip
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": address})
        try:
            message = ""
            while "READY=1" not in message:
                message = sock.recv(4096).decode()
        finally:
            assert daemon.stop() == 0
    assert "STATUS=1 certificates" in message
    assert "1 with configuration errors (acme-agent validate)" in message


def test_a_file_in_error_is_never_answered_from_the_renew_cache(
    tmp_path: Path, pebble: LocalCA
) -> None:
    """b.toml names a certificate already defined: every run says so (exit 1), none is
    answered from the cache as "nothing to do"."""
    setup = with_drop_ins(tmp_path, pebble, {
        "a.toml": 'domains = ["a5.example.com"]\n',
        "b.toml": 'name = "a"\ndomains = ["x.example.com"]\n',
    })  # fmt: skip
    assert setup.renew() == 1
    assert setup.renew() == 1  # ARI state fetched: everything else unchanged now
    assert setup.renew() == 1
    assert not (setup.state / CACHE_NAME).exists()

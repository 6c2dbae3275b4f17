"""A daemon that cannot die quietly (issue 14): the schedule follows the wall clock, SIGHUP
retries what failed, a hung worker is killed, a lost interpreter ends the process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import keys
from agent.config.types import AcmeConfig, CertificateConfig
from agent.daemon.schedule import Schedule
from agent.engine.plan import Planner
from agent.localca import LocalCA
from agent.store.certs import Store
from tests.conftest import IN_CI, cert_table, through, write_config
from tests.daemon_proc import ROOT, DaemonProc
from tests.faultproxy import Fault, FaultProxy

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def schedule(tmp_path: Path) -> tuple[Schedule, list[str]]:
    due: list[str] = []
    cas = {"default": AcmeConfig("https://ca.example/dir")}
    planner = Planner(Store(tmp_path / "state"), cas, lambda: T0)
    return Schedule(planner, due.append), due


def test_a_clock_jump_forward_renews_at_once_and_back_renews_nothing(tmp_path: Path) -> None:
    plan, due = schedule(tmp_path)
    plan._bulk = True
    plan.schedule("a", T0 + timedelta(days=30))
    assert plan.evaluate(T0) == 0 and due == []
    assert plan.evaluate(T0 - timedelta(days=365)) == 0  # back: nothing early
    assert plan.evaluate(T0 + timedelta(days=31)) == 1 and due == ["a"]  # forward: at once
    assert plan.evaluate(T0 + timedelta(days=32)) == 0  # and once


def test_a_ca_known_without_renewal_information_wakes_nothing_at_start(tmp_path: Path) -> None:
    """The daemon's first look at a certificate without ARI state (old state, an import)
    starts no worker when the CA that issued it is known to offer none."""
    from agent.store import ari
    from tests.certs import make_chain

    plan, _ = schedule(tmp_path)
    plan._bulk = True
    store = plan.planner.store
    key, chain = make_chain(("s.example.com",))
    store.install("s", keys.key_to_pem(key), chain)  # facts without "ca": the default CA's
    cert = CertificateConfig("s", ("s.example.com",))
    ari.remember_ca_without_ari(store, "https://ca.example/dir", T0 + timedelta(days=1))
    plan.schedule_next(cert)
    when = plan.states["s"].next_run
    assert when is not None and when > T0 + timedelta(days=1)  # its renewal time, not now


def test_sighup_retries_what_failed_now(tmp_path: Path) -> None:
    plan, _ = schedule(tmp_path)
    plan._bulk = True
    cert = CertificateConfig("f", ("f.example.com",))
    plan.schedule_retry(cert, "boom")
    plan.schedule("ok", T0 + timedelta(days=30))
    before = plan.states["f"].next_run
    assert plan.retry_failed_now() == 1
    assert plan.states["f"].next_run is not None and before is not None
    assert plan.states["f"].next_run <= datetime.now(UTC) < before


@pytest.mark.integration
def test_sighup_after_a_fixed_failure_renews_within_seconds(
    tmp_path: Path, pebble: LocalCA
) -> None:
    setup = write_config(tmp_path, pebble, cert_table("h", "h.example.com"))
    good = setup.config.read_text()
    broken_port = good.replace(pebble.directory_url, pebble.directory_url.replace(
        str(pebble.directory_url.split(":")[2].split("/")[0]), "1"))  # fmt: skip
    setup.config.write_text(broken_port)
    stale = setup.state / "http01" / ("T" * 43)
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a killed worker")
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"h: attempt 1 failed; retrying in", timeout=30)
        assert not stale.exists()  # removed at start
        setup.config.write_text(good)  # the operator fixes it ...
        daemon.wait_for(r"configuration reloaded", timeout=10)
        started = time.monotonic()
        daemon.signal(signal.SIGHUP)  # ... and asks for a retry
        daemon.wait_for(r"SIGHUP: retrying 1 failed certificate\(s\) now", timeout=10)
        daemon.wait_for(r"h: installed serial", timeout=15)
        assert time.monotonic() - started < 10  # not after the backoff (a minute or more)
    finally:
        assert daemon.stop() == 0


def worker_pids(daemon_pid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == daemon_pid and b"agent.cli.worker" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.integration
def test_a_worker_that_hangs_is_killed_at_its_deadline(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("w", "w.example.com"))
    text = setup.config.read_text().replace("issuance_timeout = 30", "issuance_timeout = 1")
    setup.config.write_text(text.replace("[acme]\n", "[acme]\nrequest_timeout = 1\n", 1))
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 10
        while not (pids := worker_pids(daemon.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert pids, "no worker started"
        os.kill(pids[0], signal.SIGSTOP)  # hung: it reports nothing
        # issuance_timeout 1 + 6 x request_timeout 1 + 10 s margin = 17 s of silence
        daemon.wait_for(r"the renewal worker reported nothing for 17 s; killed it", timeout=30)
        daemon.wait_for(r"w: attempt 1 failed; retrying in", timeout=5)
        assert daemon.proc.poll() is None  # the daemon itself carries on
        assert worker_pids(daemon.proc.pid) == []
    finally:
        assert daemon.stop() == 0


@pytest.mark.integration
def test_an_interpreter_gone_under_the_daemon_ends_it_non_zero(
    tmp_path: Path, pebble: LocalCA
) -> None:
    """A package upgrade replaced the virtualenv: the daemon says so and exits 1, so that
    systemd starts the new one (it used to live on, renewing nothing)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    certs = tmp_path / "certs.d"
    certs.mkdir()
    setup = write_config(tmp_path, pebble, "")
    setup.config.write_text(f'certs_dir = "{certs}"\n' + setup.config.read_text())
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{site}"}
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "agent", "--config",
                             str(setup.config), "run"], stderr=log, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while b"running with" not in (tmp_path / "daemon.log").read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        shutil.rmtree(venv)  # the upgrade
        (certs / "new.toml").write_text('domains = ["new.example.com"]\n')
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "cannot start the renewal worker" in text and "Traceback" not in text


@pytest.mark.integration
def test_a_recreated_certs_dir_is_noticed(tmp_path: Path, pebble: LocalCA) -> None:
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "a.toml").write_text('domains = ["ra.example.com"]\n')
    setup = write_config(tmp_path, pebble, "")
    setup.config.write_text(f'certs_dir = "{certs}"\n' + setup.config.read_text())
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"a: installed serial")
        shutil.rmtree(certs)  # what configuration management does
        certs.mkdir()
        (certs / "a.toml").write_text('domains = ["ra.example.com"]\n')
        (certs / "b.toml").write_text('domains = ["rb.example.com"]\n')
        daemon.wait_for(r"b: installed serial", timeout=10)
        (certs / "c.toml").write_text('domains = ["rc.example.com"]\n')  # watched again
        daemon.wait_for(r"c: installed serial", timeout=10)
    finally:
        assert daemon.stop() == 0
    assert "configuration changed: " in daemon.text()


@pytest.mark.integration
def test_a_symlink_swapped_main_file_is_noticed(tmp_path: Path, pebble: LocalCA) -> None:
    """A Kubernetes ConfigMap mount: agent.toml -> ..data/agent.toml, ..data -> ..v1,
    and an update swaps ..data atomically."""
    (tmp_path / "src").mkdir()
    setup = write_config(tmp_path / "src", pebble, cert_table("k1", "k1.example.com"))
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "agent.toml").write_text(setup.config.read_text())
    (mount / "..data").symlink_to("..v1")
    (mount / "agent.toml").symlink_to("..data/agent.toml")
    daemon = DaemonProc(mount / "agent.toml", tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"k1: installed serial")
        (mount / "..v2").mkdir()
        text = setup.config.read_text() + cert_table("k2", "k2.example.com")
        (mount / "..v2" / "agent.toml").write_text(text)
        (mount / "..data_tmp").symlink_to("..v2")
        os.replace(mount / "..data_tmp", mount / "..data")
        daemon.wait_for(r"k2: installed serial", timeout=10)
    finally:
        assert daemon.stop() == 0


def test_a_thread_that_dies_says_so_and_stops_the_daemon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.daemon.threads import supervised

    deaths: list[str] = []

    def batcher() -> None:
        raise OverflowError("date value out of range")  # as timedelta(seconds=1e14) did

    supervised("batcher", batcher, deaths.append).join(timeout=5)
    assert deaths == ["the batcher thread died"]
    assert "OverflowError: date value out of range" in caplog.text  # the traceback, once


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 makes clock_nanosleep(CLOCK_MONOTONIC,
# TIMER_ABSTIME) fail with EINVAL, which Python 3.11's time.sleep uses; the processes under
# test sleep on an Event instead (same monotonic clock, which a wall-clock step leaves alone).
SLEEP_SHIM = """import threading, time
def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)
time.sleep = _sleep
"""


def faketime_env(tmp_path: Path, offset: Path) -> dict[str, str]:
    if not FAKETIME.exists():
        message = "libfaketime is not installed (apt-get install faketime)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message + "; under CI=true this is a failure")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
    offset.write_text("+0\n")
    return {"LD_PRELOAD": str(FAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": f"{ROOT}:{shim}"}  # fmt: skip


@pytest.mark.integration
def test_a_wall_clock_step_forward_under_libfaketime_renews_at_once(
    tmp_path: Path, pebble: LocalCA
) -> None:
    """An NTP step or a resumed VM: the wall clock moves two days, the monotonic clock
    does not. With ``renew_before = 89d`` the 90-day certificate falls due one day after
    issuance: the daemon renews it within seconds of the step, not a day later."""
    setup = write_config(tmp_path, pebble, cert_table("j", "j.example.com"))
    setup.config.write_text(setup.config.read_text().replace(
        'name = "j"', 'name = "j"\nrenew_before = "89d"'))  # fmt: skip
    assert setup.renew() == 0
    first = setup.versions("j")
    offset = tmp_path / "faketime"
    address = str(tmp_path / "notify.sock")
    env = faketime_env(tmp_path, offset)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        # WatchdogSec=4: the daemon looks at the schedule every 2 s (60 s without one)
        env |= {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"}
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log", env=env)
        try:
            daemon.wait_for(r"acme-agent running with 1 certificates")
            time.sleep(3)
            assert setup.versions("j") == first  # not due yet
            offset.write_text("+2d\n")  # the step
            started = time.monotonic()
            daemon.wait_for(r"j: installed serial", timeout=30)
            assert time.monotonic() - started < 20
            offset.write_text("+0\n")  # and back: nothing is renewed early
            time.sleep(2)
            renewed = setup.versions("j")
            time.sleep(4)
            assert setup.versions("j") == renewed and len(renewed) > len(first)
            assert daemon.proc.poll() is None
        finally:
            assert daemon.stop() == 0
    assert "Traceback" not in daemon.text()


@pytest.mark.integration
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_mid_batch_leaves_no_tokens(tmp_path: Path, pebble: LocalCA, how: str) -> None:
    """The worker has handed its token to the daemon's responder and waits on the CA (the
    challenge answer stalls): SIGTERM removes the tokens; after a SIGKILL of the whole
    process group, the next start does."""
    proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    try:
        proxy.faults = [Fault("stall", stall=30, path="/chalZ/", method="POST")]
        setup = through(tmp_path, pebble, proxy, cert_table("t", "t.example.com"))
        tokens = setup.state / "http01"
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log", new_session=True)
        try:
            deadline = time.monotonic() + 20
            while not [r for r in proxy.records if r.action == "stall"]:
                assert time.monotonic() < deadline, daemon.text()
                time.sleep(0.05)
            pending = [p.name for p in tokens.iterdir() if not p.name.startswith(".")]
            assert pending, "no token handed over"
            if how == "SIGTERM":
                assert daemon.stop() == 0
            else:
                os.killpg(daemon.proc.pid, signal.SIGKILL)
                assert daemon.stop() == -signal.SIGKILL
                assert [p for p in pending if (tokens / p).exists()]  # left behind ...
                proxy.faults = []
                daemon = DaemonProc(setup.config, tmp_path / "daemon2.log", new_session=True)
                daemon.wait_for(r"acme-agent running with")  # ... removed at start
            assert [p for p in pending if (tokens / p).exists()] == []
        finally:
            daemon.stop()
    finally:
        proxy.stop()

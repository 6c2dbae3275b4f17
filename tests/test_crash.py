"""Crashes and the disk: kill -9 at random moments, and a full file system."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from agent import keys
from agent.localca import LocalCA
from tests.conftest import IN_CI, Setup, write_config
from tests.daemon_proc import ROOT

pytestmark = pytest.mark.integration

KILLS = 12  # a modest count here; bench/kill_loop.py runs as many as you like


def certificate_with_targets(out: Path) -> str:
    return (
        '[[certificate]]\nname = "k"\ndomains = ["k.example.com", "k2.example.com"]\n'
        f'[certificate.deploy]\nfullchain = "{out}/fullchain.pem"\nkey = "{out}/key.pem"\n'
    )


def assert_consistent(setup: Setup, out: Path, *, final: bool = False) -> None:
    """live/ and the deploy targets: parseable, and each key matches its certificate. A kill
    mid-write may leave a temporary dotfile (never named *.pem, so nothing reads it); the
    next run removes it (``final``)."""
    live = setup.live("k")
    if live.exists():
        cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        key = keys.load_key_pem((live / "privkey.pem").read_bytes())
        assert keys.public_key_matches(cert, key)
        assert keys.split_chain((live / "fullchain.pem").read_bytes(), "k").cert == cert
    if (out / "key.pem").exists():
        chain = keys.split_chain((out / "fullchain.pem").read_bytes(), "target")
        key = keys.load_key_pem((out / "key.pem").read_bytes())
        assert keys.public_key_matches(chain.cert, key)
    for folder in (setup.state / "live", out):
        if folder.exists():
            temporaries = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
            assert not [name for name in temporaries if name.endswith(".pem")]
            assert not (final and temporaries), temporaries


def test_kill_9_at_random_moments(tmp_path: Path, pebble: LocalCA) -> None:
    out = tmp_path / "targets"
    setup = write_config(tmp_path, pebble, certificate_with_targets(out))
    assert setup.renew() == 0
    rng = random.Random(7)
    argv = [sys.executable, "-m", "agent", "-q", "--config", str(setup.config), "renew", "--force"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(KILLS):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.25, 0.8))  # start-up takes ~0.3 s; issuance ~0.1 s
        proc.kill()
        proc.wait()
        assert_consistent(setup, out)
    assert setup.renew("--force") == 0  # the next run completes and cleans up
    assert_consistent(setup, out, final=True)
    live_key = (setup.live("k") / "privkey.pem").read_bytes()
    assert (out / "key.pem").read_bytes() == live_key


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> object:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if IN_CI:
            pytest.fail("the full-disk test needs root and mount(8)")
        pytest.skip("needs root and mount(8); under CI=true this is a failure")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)], check=True)
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def test_full_disk_keeps_previous_files_and_says_so(
    tmp_path: Path, pebble: LocalCA, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "targets"
    setup = write_config(tmp_path, pebble, certificate_with_targets(out))
    assert setup.renew() == 0
    before = digest(setup.live("k"))
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    capsys.readouterr()
    assert setup.renew("--force") == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "previous files are intact" in err
    assert digest(setup.live("k")) == before
    assert_consistent(setup, out)
    archive = setup.state / "archive" / "k"
    assert not [p for p in archive.iterdir() if p.name.startswith(".tmp-")]
    (small_disk / "filler").unlink()
    assert setup.renew("--force") == 0

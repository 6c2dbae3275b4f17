"""Hosts set up the Debian way: the agent under the systemd unit's capability set (no
CAP_DAC_*), deploy targets owned by another user, monitoring as an unprivileged user,
logs into the journal."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.localca import LocalCA
from agent.store.files import describe
from tests.conftest import IN_CI, Setup, cert_table, write_config
from tests.daemon_proc import ROOT

# The unit's CapabilityBoundingSet (systemd/acme-agent.service), as setpriv applies it.
UNIT_CAPS = ["--bounding-set=-all,+net_bind_service,+chown", "--inh-caps=-all"]
AS_NOBODY = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def require_setpriv() -> None:
    if shutil.which("setpriv") is None:
        message = "setpriv is not installed (apt-get install util-linux)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message + "; under CI=true this is a failure")
    if os.geteuid() != 0:
        pytest.skip("needs root (as the agent runs on a host); not the case under CI")


def agent(
    setup: Setup, *args: str, setpriv: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "agent", "--config", str(setup.config), *args]
    if setpriv is not None:
        argv = ["setpriv", *setpriv, *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)


@pytest.mark.integration
def test_renewal_with_the_units_capabilities_and_targets_owned_by_another_user(
    tmp_path: Path, pebble: LocalCA
) -> None:
    require_setpriv()
    out = tmp_path / "tls"
    deploy = (
        f'[certificate.deploy]\nfullchain = "{out}/site/fullchain.pem"\n'
        f'key = "{out}/site/key.pem"\nowner = "nobody"\ngroup = "nogroup"\nmode = "0600"\n'
    )
    setup = write_config(tmp_path, pebble, cert_table("caps", "caps.example.com") + deploy)
    first = agent(setup, "renew", setpriv=UNIT_CAPS)
    assert first.returncode == 0, first.stderr
    key = out / "site" / "key.pem"
    info = key.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (65534, 0o600)
    assert stat.S_IMODE((out / "site").stat().st_mode) == 0o755  # under umask 077 too
    # Again: root without CAP_DAC_* cannot read the old key (nobody's, 0600) to back it up.
    second = agent(setup, "renew", "--force", setpriv=UNIT_CAPS)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    new_key = (setup.live("caps") / "privkey.pem").read_bytes()
    assert key.read_bytes() == new_key and key.stat().st_uid == 65534


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder other users can reach (pytest's tmp_path is 0700 root), as /etc is."""
    folder = Path(tempfile.mkdtemp(prefix="acme-agent-test-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.integration
def test_monitoring_as_an_unprivileged_user(public_dir: Path, pebble: LocalCA) -> None:
    require_setpriv()
    textfile = public_dir / "metrics" / "acme.prom"
    textfile.parent.mkdir()
    os.chmod(textfile.parent, 0o755)  # the suite's umask is the agent's (077)
    setup = write_config(public_dir, pebble, cert_table("mon", "mon.example.com"))
    setup.config.write_text(setup.config.read_text() + f'\n[metrics]\ntextfile = "{textfile}"\n')
    assert agent(setup, "renew").returncode == 0
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    read = subprocess.run(["setpriv", *AS_NOBODY, "cat", str(textfile)], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert read.returncode == 0 and "acme_agent_certificate_expiry_timestamp_seconds" in read.stdout
    assert "acme_agent_cluster_connected" not in read.stdout  # no [cluster]: no gauge
    assert "acme_agent_config_errors 0.0" in read.stdout
    # check as nobody: the configuration (0644 here) is readable, the state (0700) is not.
    os.chmod(setup.config, 0o644)
    check = agent(setup, "check", setpriv=AS_NOBODY)
    assert check.returncode == 3, check.stdout + check.stderr
    assert check.stdout.startswith("UNKNOWN: ") and "cannot read the state" in check.stdout
    assert len(check.stdout.splitlines()) == 1 and "run check as root" in check.stdout
    os.chmod(setup.config, 0o600)
    check = agent(setup, "check", setpriv=AS_NOBODY)
    assert check.returncode == 3 and "Permission denied" in check.stdout
    assert "Traceback" not in check.stderr


@pytest.mark.integration
def test_check_revoked_certificate_is_critical(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("rv", "rv.example.com"))
    assert agent(setup, "renew").returncode == 0
    ok = agent(setup, "check")
    assert ok.returncode == 0 and " | rv=" in ok.stdout  # performance data
    assert agent(setup, "revoke", "--cert", "rv").returncode == 0
    check = agent(setup, "check")
    assert check.returncode == 2
    assert "rv: the certificate in service was revoked" in check.stdout


def test_log_lines_carry_journal_priorities(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("bogus = 1\n")
    log = tmp_path / "stderr"
    with open(log, "wb") as handle:
        info = os.fstat(handle.fileno())
        env = {**ENV, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "renew"],
                       stderr=handle, env=env, timeout=60, check=False)  # fmt: skip
    assert log.read_text().startswith("<3>ERROR ")
    plain = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "renew"],
                           capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert plain.stderr.startswith("ERROR ")  # not the journal: no prefix


def test_read_only_file_system_names_the_fix() -> None:
    message = describe(OSError(errno.EROFS, "Read-only file system"), Path("/etc/ssl/x.pem"))
    assert "ReadWritePaths=" in message and "/etc/ssl/x.pem" in message

"""scripts/install.sh: one command installs the agent on a host (into a staging root here,
and once for real under CI=true)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_staging_root_twice(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install("--root", str(root))
    agent = root / "usr/local/bin/acme-agent"
    assert agent.is_symlink() and os.readlink(agent) == str(root / "opt/acme-agent/bin/acme-agent")
    assert mode(root / "etc/acme-agent") == 0o750
    config = root / "etc/acme-agent/agent.toml"
    assert mode(config) == 0o600
    assert mode(root / "var/lib/acme-agent") == 0o700
    for unit in ("acme-agent.service", "acme-agent-renew.service", "acme-agent-renew.timer"):
        installed = root / "usr/local/lib/systemd/system" / unit
        assert installed.read_text() == (ROOT / "systemd" / unit).read_text()
    version = subprocess.run([str(agent), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("acme-agent ")
    check = subprocess.run([str(agent), "--config", str(config), "validate"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # Again: an upgrade in place; the operator's configuration and folder modes are kept.
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    os.chmod(root / "var/lib/acme-agent", 0o750)
    second = install("--root", str(root))
    assert "kept the existing" in second.stdout
    assert config.read_text().endswith("# edited by the operator\n")
    assert mode(root / "var/lib/acme-agent") == 0o750


def test_install_for_real_on_the_ci_machine() -> None:
    if not IN_CI:
        pytest.skip("installs into /opt, /etc and /usr/local: runs for real only under CI=true")
    install()
    version = subprocess.run(["/usr/local/bin/acme-agent", "--version"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert mode(Path("/etc/acme-agent")) == 0o750
    assert Path("/usr/local/lib/systemd/system/acme-agent.service").exists()

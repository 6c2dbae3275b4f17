"""The shipped systemd units: valid, and sandboxed at least as tightly as promised."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

UNITS = Path(__file__).parent.parent / "systemd"
TARGET_EXPOSURE = 2.0  # Debian's certbot.service: 9.4, caddy.service: 9.0


def analyze(*args: str) -> str:
    if shutil.which("systemd-analyze") is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze is missing; under CI=true this is a failure")
    result = subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize("unit", ["acme-agent.service", "acme-agent-renew.service"])
def test_security_exposure(unit: str) -> None:
    text = analyze("security", "--offline=true", str(UNITS / unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert match, text
    assert float(match.group(1)) <= TARGET_EXPOSURE


def test_units_verify() -> None:
    units = [str(p) for p in sorted(UNITS.iterdir())]
    text = analyze("verify", *units)
    problems = [ln for ln in text.splitlines() if ln and "is not executable" not in ln]
    assert problems == [], text


def test_daemon_unit_contract() -> None:
    text = (UNITS / "acme-agent.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", " run\n"):
        assert line in text
    timer = (UNITS / "acme-agent-renew.timer").read_text()
    assert "Persistent=true" in timer and "RandomizedDelaySec=" in timer

"""``renew`` with nothing due answers from state_dir/renew-cache.json without loading the
agent; any change to what the decision read sends it down the full path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.cli.renew_cache import CACHE_NAME
from tests.conftest import Setup

ROOT = Path(__file__).parent.parent
# agent.cli.main (and with it the whole agent) made unimportable: only the cache can answer.
NO_FULL_PATH = (
    "import sys; sys.modules['agent.cli.main'] = None; from agent.cli.quick import main; "
)


def renew(setup: Setup, *args: str, full: bool = True) -> subprocess.CompletedProcess[str]:
    code = (
        "from agent.cli.quick import main; " if full else NO_FULL_PATH
    ) + f"raise SystemExit(main({['--config', str(setup.config), *args]!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_nothing_due_is_answered_from_the_cache(setup: Setup) -> None:
    assert renew(setup, "renew").returncode == 0  # obtains
    assert not (setup.state / CACHE_NAME).exists()  # something happened: no cache
    assert renew(setup, "renew").returncode == 0  # first look at renewal information
    full = renew(setup, "-q", "renew")
    assert full.returncode == 0 and "unchanged" in full.stdout
    cache = setup.state / CACHE_NAME
    assert cache.stat().st_mode & 0o777 == 0o600
    cached = renew(setup, "-q", "renew", full=False)
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout == full.stdout

    # Anything but a plain renew goes in full (and fails here, proving it tried).
    assert renew(setup, "renew", "--cert", "www", full=False).returncode != 0
    assert renew(setup, "-v", "renew", full=False).returncode != 0
    assert renew(setup, "status", full=False).returncode != 0


def test_changes_send_renew_down_the_full_path(setup: Setup) -> None:
    for _ in range(3):  # obtain, look at renewal information, nothing due
        assert renew(setup, "renew").returncode == 0
    assert renew(setup, "renew", full=False).returncode == 0

    text = setup.config.read_text()  # the configuration changed
    setup.config.write_text(text + "\n")
    assert renew(setup, "renew", full=False).returncode != 0
    assert renew(setup, "renew").returncode == 0
    assert renew(setup, "renew", full=False).returncode == 0

    setup.config.chmod(0o666)  # refused by the full path, so never answered by the cache
    assert renew(setup, "renew", full=False).returncode != 0
    setup.config.chmod(0o644)
    assert renew(setup, "renew").returncode == 0

    (setup.state / "revoked").mkdir(exist_ok=True)  # e.g. `revoke` marks a serial
    (setup.state / "revoked" / "www").write_text("00")
    assert renew(setup, "renew", full=False).returncode != 0
    (setup.state / "revoked" / "www").unlink()
    assert renew(setup, "renew").returncode == 0

    cache = setup.state / CACHE_NAME  # the time it was valid until has come
    data = json.loads(cache.read_bytes())
    data["until"] = 0
    cache.write_text(json.dumps(data))
    assert renew(setup, "renew", full=False).returncode != 0

    assert renew(setup, "renew", "--force").returncode == 0  # a new certificate: stale
    assert renew(setup, "renew", full=False).returncode != 0

"""The house: the resident daemon never loads the protocol stack (its worker does), and the
worker renews with the configuration in force, never with what is on disk now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.localca import LocalCA
from tests.conftest import cert_table, write_config
from tests.daemon_proc import ROOT, DaemonProc

# Loaded by the worker only; each is several MiB of the resident daemon's memory otherwise.
PROTOCOL_STACK = (
    "acme",
    "josepy",
    "requests",
    "cryptography",
    "agent.acme",
    "agent.engine.renewer",
)

# `acme-agent run` in this process's main thread; a second thread waits until the first
# certificate is in service and the worker is done, writes sys.modules and stops the daemon.
PROBE = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from pathlib import Path

    config, live, out = sys.argv[1:4]

    def probe():
        deadline = time.monotonic() + 60
        while not Path(live).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # the batch's outcome recorded, the next renewal scheduled
        Path(out).write_text(json.dumps(sorted(sys.modules)))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=probe, daemon=True).start()
    from agent.cli.quick import main

    raise SystemExit(main(["--config", config, "run"]))
    """
)


@pytest.mark.integration
def test_resident_daemon_never_loads_the_protocol_stack(tmp_path: Path, pebble: LocalCA) -> None:
    setup = write_config(tmp_path, pebble, cert_table("h", "h.example.com"))
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", PROBE, str(setup.config), str(setup.live("h")), str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert (setup.live("h") / "fullchain.pem").exists()  # the worker did issue
    loaded = set(json.loads(out.read_text()))
    assert "agent.daemon.service" in loaded
    assert not [m for m in loaded if m.split(".")[0] in PROTOCOL_STACK or m in PROTOCOL_STACK]


@pytest.mark.integration
def test_worker_renews_with_the_configuration_in_force(tmp_path: Path) -> None:
    """An invalid edit is not reloaded, and the renewals go on with what is in force."""
    from tests.conftest import start_ca

    ca = start_ca(tmp_path / "ca", validity_seconds=12)
    try:
        setup = write_config(tmp_path, ca, cert_table("w", "w.example.com"))
        daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
        try:
            daemon.wait_for(r"w: next renewal")
            setup.config.write_text(setup.config.read_text() + "\n[[certificate]\n")  # broken
            daemon.wait_for(r"configuration not reloaded", timeout=10)
            # The certificate lives 12 s and is renewed at half-life: twice more by now.
            daemon.wait_for(r"w: installed serial", timeout=30, count=3)
        finally:
            assert daemon.stop() == 0
        assert "w: attempt" not in daemon.text()  # no failed attempt
    finally:
        ca.stop()

"""Metrics (daemon over HTTP, renew as a textfile), alert rules, dashboard, JSON logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from agent.localca import LocalCA, free_port
from tests.conftest import IN_CI, Setup, cert_table, write_config
from tests.daemon_proc import DaemonProc

ROOT = Path(__file__).parent.parent
METRIC_NAMES = (
    "acme_agent_certificate_expiry_timestamp_seconds",
    "acme_agent_certificate_next_renewal_timestamp_seconds",
    "acme_agent_certificate_last_renewal_success",
    "acme_agent_renewal_attempts_total",
    "acme_agent_acme_request_duration_seconds_bucket",
    "acme_agent_last_run_timestamp_seconds",
)


def sample(text: str, name: str, cert: str) -> float:
    match = re.search(rf'^{name}\{{(?:[^}}]*,)?name="{cert}"(?:,[^}}]*)?\}} (\S+)$', text, re.M)
    assert match, f"{name} for {cert} missing"
    return float(match.group(1))


@pytest.mark.integration
def test_daemon_serves_metrics(tmp_path: Path, pebble: LocalCA) -> None:
    port = free_port()
    setup = write_config(tmp_path, pebble, cert_table("m", "m.example.com"))
    setup.config.write_text(
        setup.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    )
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"m: next renewal")
        time_left = 0.0
        for _ in range(50):
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            text = body.decode()
            if 'acme_agent_certificate_expiry_timestamp_seconds{ca="default",name="m"}' in text:
                time_left = sample(text, "acme_agent_certificate_expiry_timestamp_seconds", "m")
                break
            import time

            time.sleep(0.1)
    finally:
        assert daemon.stop() == 0
    for name in METRIC_NAMES:
        assert name in text
    assert sample(text, "acme_agent_certificate_last_renewal_success", "m") == 1
    assert sample(text, "acme_agent_renewal_attempts_total", "m") == 1
    assert time_left > 0
    assert 'step="creating the order"' in text


@pytest.mark.integration
def test_renew_writes_textfile_atomically(setup: Setup) -> None:
    target = setup.dir / "textfile" / "acme_agent.prom"
    target.parent.mkdir()
    assert setup.renew("--metrics-textfile", str(target)) == 0
    text = target.read_text()
    for name in METRIC_NAMES:
        assert name in text
    assert sample(text, "acme_agent_certificate_last_renewal_success", "www") == 1
    assert [p.name for p in target.parent.iterdir()] == ["acme_agent.prom"]  # no temp left


@pytest.mark.integration
def test_json_logs_carry_fields_and_no_secret(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli.main import main

    assert main(["--log-format", "json", "--config", str(setup.config), "renew"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    obtaining = next(e for e in lines if "obtaining" in e["message"])
    assert obtaining["cert"] == "www" and obtaining["domains"] == ["www.example.com", "example.com"]
    installed = next(e for e in lines if "installed serial" in e["message"])
    assert installed["order"].startswith("https://127.0.0.1")
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    assert setup.ca.eab_hmac_key not in json.dumps(lines)


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool is missing; under CI=true this is a failure")
    rules = ROOT / "config" / "prometheus" / "alerts.yml"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=ROOT / "tests" / "prometheus",
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "config" / "grafana" / "acme-agent.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set(re.findall(r"acme_agent_[a-z_]+", " ".join(exprs)))
    from agent.engine.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    assert used and used <= exported, used - exported

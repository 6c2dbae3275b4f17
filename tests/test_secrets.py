"""Secrets stay secret: at -vv, through success, failure, deploy and hooks, no EAB HMAC key
and no private key material in any log line, error message, child argv or environment."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent import keys
from agent.localca import LocalCA
from tests.conftest import Setup, write_config
from tests.daemon_proc import ROOT

pytestmark = pytest.mark.integration

RECORDER = Path(__file__).parent / "hook_recorder.py"


def run(setup: Setup, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "-vv", "--config", str(setup.config), *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return result.stdout + result.stderr


def secret_fragments(setup: Setup, eab: str) -> list[str]:
    """The EAB key (as written and re-encoded) and, for every private key, its secret
    scalar in base64, base64url and hex (public parts legitimately appear in CSRs and JWS),
    plus the PEM body's first line."""
    fragments = [eab, base64.b64encode(base64.urlsafe_b64decode(eab + "==")).decode()[:24]]
    paths = list(setup.state.rglob("privkey.pem")) + list(setup.state.rglob("private_key.pem"))
    assert paths
    for path in paths:
        key = keys.load_key_pem(path.read_bytes())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        secret = key.private_numbers().private_value.to_bytes(48, "big").lstrip(b"\0")
        fragments += [
            base64.b64encode(secret).decode()[:20],
            base64.urlsafe_b64encode(secret).decode().rstrip("=")[:20],
            secret.hex()[:24],
            path.read_text().splitlines()[1],
        ]
    return fragments


def test_no_secret_anywhere(tmp_path: Path, pebble: LocalCA) -> None:
    record = tmp_path / "children.jsonl"
    recorder = [sys.executable, str(RECORDER), str(record)]
    out = tmp_path / "out"
    certs = (
        '[hooks]\npre = ' + json.dumps([*recorder, "pre"]) + "\npost = "
        + json.dumps([*recorder, "post"]) + "\n"
        '[[certificate]]\nname = "s"\ndomains = ["s.example.com"]\n'
        f'[certificate.deploy]\nfullchain = "{out}/fc.pem"\nkey = "{out}/key.pem"\n'
        'reload = "command"\n'
        f"test_command = {json.dumps([*recorder, 'test'])}\n"
        f"reload_command = {json.dumps([*recorder, 'reload'])}\n"
        f"hook = {json.dumps([*recorder, 'hook'])}\n"
    )  # fmt: skip
    setup = write_config(tmp_path, pebble, certs)
    logs = run(setup, "register") + run(setup, "renew") + run(setup, "renew", "--force")
    # a failure path: a CA that refuses, at -vv
    broken = setup.config.read_text().replace('"s.example.com"', '"blocked.test"')
    setup.config.write_text(broken)
    logs += run(setup, "renew")
    children = record.read_text()
    assert "DEBUG" in logs and '"reload"' in children and '"hook"' in children
    for fragment in secret_fragments(setup, pebble.eab_hmac_key):
        assert fragment not in logs
        assert fragment not in children

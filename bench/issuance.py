#!/usr/bin/env python3
"""One issuance in a fresh process: acme-agent vs certbot (PyPI) vs lego (Debian).

All three talk to the same local pebble on 127.0.0.1 (PEBBLE_VA_NOSLEEP=1,
PEBBLE_WFE_NONCEREJECT=0), each with its account registered beforehand, and each answers
HTTP-01 with its own standalone responder on pebble's validation port. Prints the median
wall time of each and the ratio to acme-agent.

    .venv/bin/python bench/issuance.py [--runs 5]

certbot is installed into bench/.venv-certbot from PyPI on first use; lego comes from
Debian (apt-get install lego) and is skipped with a note when missing. A benchmark, not a
test: figures vary by machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.cli.demo import write_config  # noqa: E402
from agent.localca import LocalCA  # noqa: E402

CERTBOT_VENV = ROOT / "bench" / ".venv-certbot"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def ensure_certbot() -> Path:
    certbot = CERTBOT_VENV / "bin" / "certbot"
    if not certbot.exists():
        print("installing certbot from PyPI into bench/.venv-certbot ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CERTBOT_VENV)], check=True)
        subprocess.run([str(CERTBOT_VENV / "bin" / "pip"), "install", "-q", "certbot"], check=True)
    return certbot


def agent_runner(ca: LocalCA, work: Path) -> Callable[[int], float]:
    config = write_config(ca, work, ("agent.example.com",))
    agent = str(ROOT / ".venv" / "bin" / "acme-agent")
    timed([agent, "-q", "--config", str(config), "register"])
    return lambda i: timed([agent, "-q", "--config", str(config), "renew", "--force"])


def certbot_runner(ca: LocalCA, work: Path) -> Callable[[int], float]:
    certbot = str(ensure_certbot())
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca.ca_bundle)}
    dirs = [
        "--config-dir", str(work / "etc"), "--work-dir", str(work / "var"),
        "--logs-dir", str(work / "log"), "--server", ca.directory_url, "--non-interactive",
    ]  # fmt: skip
    # certbot only takes EAB credentials on its command line (a local throwaway CA here).
    timed(
        [certbot, "register", *dirs, "--agree-tos", "--register-unsafely-without-email",
         "--eab-kid", ca.eab_kid, "--eab-hmac-key", ca.eab_hmac_key],
        env,
    )  # fmt: skip
    return lambda i: timed(
        [certbot, "certonly", *dirs, "--standalone", "--http-01-port", str(ca.http_port),
         "--http-01-address", "127.0.0.1", "-d", "certbot.example.com", "--force-renewal",
         "--no-random-sleep-on-renew", "--cert-name", "bench"],
        env,
    )  # fmt: skip


def lego_runner(ca: LocalCA, work: Path) -> Callable[[int], float] | None:
    lego = shutil.which("lego")
    if lego is None:
        print("lego not installed (apt-get install lego): skipped")
        return None
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(ca.ca_bundle)}
    base = [
        lego, "--server", ca.directory_url, "--path", str(work / "lego"), "--accept-tos",
        "--email", "bench@example.com", "--eab", "--kid", ca.eab_kid, "--hmac", ca.eab_hmac_key,
        "--http", "--http.port", f"127.0.0.1:{ca.http_port}", "-d", "lego.example.com",
    ]  # fmt: skip
    timed([*base, "run"], env)  # registers the account and issues once
    return lambda i: timed([*base, "renew", "--days", "365", "--no-random-sleep"], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acme-bench-") as tmp:
        work = Path(tmp)
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        with LocalCA(work / "pebble", env=env) as ca:
            runners = {
                "acme-agent": agent_runner(ca, work / "agent"),
                "certbot": certbot_runner(ca, work / "certbot"),
                "lego": lego_runner(ca, work / "lego"),
            }
            results: dict[str, float] = {}
            for name, runner in runners.items():
                if runner is None:
                    continue
                samples = [runner(i) for i in range(args.runs)]
                results[name] = statistics.median(samples)
    agent = results["acme-agent"]
    print(f"\none issuance in a fresh process, median of {args.runs} (account registered):")
    for name, seconds in results.items():
        print(f"  {name:<11} {seconds:7.3f} s   {seconds / agent:6.1f}x acme-agent")


if __name__ == "__main__":
    main()

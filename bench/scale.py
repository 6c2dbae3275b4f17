#!/usr/bin/env python3
"""Performance and scale: acme-agent against certbot (PyPI), lego (Debian) and Caddy
(Debian, the daemon peer), all against the same local pebble on 127.0.0.1
(PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0). Prints each figure and the ratio to the
best peer.

    .venv/bin/python bench/scale.py                 # everything (certbot's part takes minutes)
    .venv/bin/python bench/scale.py --skip certbot  # leave out a slow peer
    .venv/bin/python bench/scale.py --big 10000     # also the daemon with 10,000 certificates

 1. one issuance in a fresh process (account already registered)
 2. `renew` with 100 configured certificates, none due
 3. forced renewal of 100 certificates
 4. the daemon with 100 (and --big) certificates: time until all are obtained, RSS, and
    CPU seconds over --idle seconds of idle; Caddy with the same 100 names

A benchmark, not a test: run it on an otherwise idle machine. Missing peers are installed
(certbot into bench/.venv-certbot) or skipped with a note (lego, caddy: apt-get install).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
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
from agent.localca import LocalCA, free_port  # noqa: E402
from bench.issuance import ensure_certbot  # noqa: E402

AGENT = str(ROOT / ".venv" / "bin" / "acme-agent")
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


def run(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def names(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}.example.com" for i in range(count)]


# -- acme-agent ------------------------------------------------------------------------------
def agent_setup(ca: LocalCA, work: Path, domains: list[str], certs_dir: bool = False) -> Path:
    config = write_config(ca, work, (domains[0],))
    head = config.read_text().split("[[certificate]]")[0]
    if certs_dir:
        folder = work / "certs.d"
        folder.mkdir(parents=True, exist_ok=True)
        for i, domain in enumerate(domains):
            (folder / f"a{i}.toml").write_text(f'domains = ["{domain}"]\n')
        config.write_text(f'certs_dir = "{folder}"\n' + head)
    else:
        body = "".join(
            f'[[certificate]]\nname = "a{i}"\ndomains = ["{d}"]\n\n' for i, d in enumerate(domains)
        )
        config.write_text(head + body)
    return config


def agent_one(ca: LocalCA, work: Path) -> tuple[float, float]:
    """(one forced issuance, importing acme.client alone): medians of 9, interleaved, so
    that both see the same machine (its speed here varies by up to 40 % for minutes)."""
    config = agent_setup(ca, work, ["one.example.com"])
    run([AGENT, "-q", "--config", str(config), "register"])
    python = str(ROOT / ".venv" / "bin" / "python")
    issuance, floor = [], []
    for _ in range(9):
        issuance.append(run([AGENT, "-q", "--config", str(config), "renew", "--force"]))
        floor.append(run([python, "-c", "import acme.client"]))
    return statistics.median(issuance), statistics.median(floor)


def agent_hundred(ca: LocalCA, work: Path) -> tuple[float, float]:
    config = agent_setup(ca, work, names(100, "a"))
    cmd = [AGENT, "-q", "--config", str(config), "renew"]
    run(cmd)  # obtain
    run(cmd)  # first look at renewal information
    idle = statistics.median(run(cmd) for _ in range(5))
    forced = run([*cmd, "--force"])
    return idle, forced


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    cpu = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    return cpu, int(status.split("VmRSS:")[1].split()[0]) / 1024


def agent_daemon(ca: LocalCA, work: Path, count: int, idle: float) -> dict[str, float]:
    config = agent_setup(ca, work, names(count, "d"), certs_dir=True)
    live = work / "state" / "live"
    log = open(work / "daemon.log", "w")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    proc = subprocess.Popen([AGENT, "--config", str(config), "run"], stderr=log)
    ready = None
    while True:
        if ready is None and "running with" in (work / "daemon.log").read_text():
            ready = time.perf_counter() - start
        done = len(list(live.iterdir())) if live.exists() else 0
        if done >= count or proc.poll() is not None or time.perf_counter() - start > 3600:
            break
        time.sleep(0.05)
    obtained = time.perf_counter() - start
    settle = settle_time(proc.pid)
    cpu0, _ = proc_stats(proc.pid)
    time.sleep(idle)
    cpu1, rss = proc_stats(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()
    return {"obtained": obtained, "startup": ready or 0.0, "rss": rss, "idle_cpu": cpu1 - cpu0,
            "settle": settle}  # fmt: skip


def settle_time(pid: int, limit: float = 120.0) -> float:
    """Seconds until the daemon is idle (under 0.02 CPU-s in a second) after the last
    certificate appeared: it still records the batch's outcomes and plans each one."""
    start = time.perf_counter()
    time.sleep(2)
    before, _ = proc_stats(pid)
    while time.perf_counter() - start < limit:
        time.sleep(1)
        now, _ = proc_stats(pid)
        if now - before < 0.02:
            break
        before = now
    return time.perf_counter() - start


# -- certbot ---------------------------------------------------------------------------------
def certbot_base(ca: LocalCA, work: Path) -> tuple[list[str], dict[str, str]]:
    certbot = str(ensure_certbot())
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca.ca_bundle)}
    base = [
        certbot, "--config-dir", str(work / "etc"), "--work-dir", str(work / "var"),
        "--logs-dir", str(work / "log"), "--server", ca.directory_url, "--non-interactive",
    ]  # fmt: skip
    # certbot takes EAB credentials only on its command line (a throwaway local CA here).
    run([*base, "register", "--agree-tos", "--register-unsafely-without-email",
         "--eab-kid", ca.eab_kid, "--eab-hmac-key", ca.eab_hmac_key], env)  # fmt: skip
    return base, env


def certbot_all(ca: LocalCA, work: Path) -> dict[str, float]:
    base, env = certbot_base(ca, work)

    def certonly(domain: str, name: str) -> float:
        return run([*base, "certonly", "--standalone", "--http-01-port", str(ca.http_port),
                    "--http-01-address", "127.0.0.1", "-d", domain, "--cert-name", name,
                    "--force-renewal", "--no-random-sleep-on-renew"], env)  # fmt: skip

    one = statistics.median(certonly("cb.example.com", "one") for _ in range(3))
    shutil.rmtree(work / "etc" / "live" / "one")
    for path in (work / "etc" / "renewal" / "one.conf", work / "etc" / "archive" / "one"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    for i, domain in enumerate(names(100, "c")):
        certonly(domain, f"c{i}")
    renew = [*base, "renew", "--no-random-sleep-on-renew", "--standalone",
             "--http-01-port", str(ca.http_port), "--http-01-address", "127.0.0.1"]  # fmt: skip
    idle = run(renew, env)
    forced = run([*renew, "--force-renewal"], env)
    return {"one": one, "idle": idle, "forced": forced}


# -- lego ------------------------------------------------------------------------------------
def lego_all(ca: LocalCA, work: Path) -> dict[str, float] | None:
    lego = shutil.which("lego")
    if lego is None:
        return None
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(ca.ca_bundle)}

    def cmd(domain: str) -> list[str]:
        return [lego, "--server", ca.directory_url, "--path", str(work), "--accept-tos",
                "--email", "bench@example.com", "--eab", "--kid", ca.eab_kid,
                "--hmac", ca.eab_hmac_key, "--http", "--http.port",
                f"127.0.0.1:{ca.http_port}", "-d", domain]  # fmt: skip

    run([*cmd("lg.example.com"), "run"], env)
    one = statistics.median(
        run([*cmd("lg.example.com"), "renew", "--days", "9999", "--no-random-sleep"], env)
        for _ in range(3)
    )
    domains = names(100, "l")
    for domain in domains:
        run([*cmd(domain), "run"], env)
    # lego renews one certificate per invocation: a cron job loops over them.
    idle = sum(run([*cmd(d), "renew", "--days", "30", "--no-random-sleep"], env) for d in domains)
    forced = sum(
        run([*cmd(d), "renew", "--days", "9999", "--no-random-sleep"], env) for d in domains
    )
    return {"one": one, "idle": idle, "forced": forced}


# -- caddy -----------------------------------------------------------------------------------
def caddy_daemon(ca: LocalCA, work: Path, idle: float) -> dict[str, float] | None:
    caddy = shutil.which("caddy")
    if caddy is None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    domains = names(100, "k")
    sites = "".join(f'{d}:{free_port()} {{\n\trespond "ok"\n}}\n' for d in domains)
    caddyfile = work / "Caddyfile"
    caddyfile.write_text(
        "{\n"
        f"\tacme_ca {ca.directory_url}\n"
        f"\tacme_ca_root {ca.ca_bundle}\n"
        f"\tacme_eab {{\n\t\tkey_id {ca.eab_kid}\n\t\tmac_key {ca.eab_hmac_key}\n\t}}\n"
        f"\thttp_port {ca.http_port}\n"
        f"\thttps_port {free_port()}\n"
        f"\tstorage file_system {work / 'data'}\n"
        "\tadmin off\n"
        "\tdefault_bind 127.0.0.1\n"
        "\tcert_issuer acme {\n\t\tdisable_tlsalpn_challenge\n\t}\n"
        "}\n" + sites
    )
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "xdg")}
    log = open(work / "caddy.log", "w")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    proc = subprocess.Popen(
        [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    certs = work / "data" / "certificates"
    while time.perf_counter() - start < 600 and proc.poll() is None:
        done = len(list(certs.rglob("*.crt"))) if certs.exists() else 0
        if done >= len(domains):
            break
        time.sleep(0.1)
    obtained = time.perf_counter() - start
    if proc.poll() is not None:
        log.close()
        return None
    time.sleep(2)
    cpu0, _ = proc_stats(proc.pid)
    time.sleep(idle)
    cpu1, rss = proc_stats(proc.pid)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    return {"obtained": obtained, "rss": rss, "idle_cpu": cpu1 - cpu0}


# -- report ----------------------------------------------------------------------------------
def row(
    label: str, ours: float, peers: dict[str, float | None], unit: str, lower: bool = True
) -> None:
    known = {k: v for k, v in peers.items() if v is not None}
    text = f"{label:<44} acme-agent {ours:9.3f} {unit}"
    for peer, value in known.items():
        text += f" | {peer} {value:9.3f}"
    if known:
        best = min(known.values()) if lower else max(known.values())
        if ours == best == 0:
            text += " | both zero"
        elif ours == 0:
            text += " | acme-agent zero"
        else:
            ratio = best / ours if ours else float("inf")
            text += f" | best peer / acme-agent = {ratio:.1f}x"
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--skip", action="append", default=[], choices=["certbot", "lego", "caddy", "agent"],
        help="leave out a peer; 'agent': acme-agent's 1-4 with 100 (to rerun only --big)",
    )  # fmt: skip
    parser.add_argument("--big", type=int, default=0, help="also the daemon with this many")
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds measured")
    args = parser.parse_args()
    # Byte-compiled like an installed wheel (PYTHONDONTWRITEBYTECODE would otherwise make
    # every start of the agent compile its modules again).
    compileall.compile_dir(str(ROOT / "agent"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="acme-scale-") as tmp:
        work = Path(tmp)
        with LocalCA(work / "pebble", env=PEBBLE_ENV) as ca:
            step: Callable[[str], None] = lambda s: print(f"... {s}", file=sys.stderr, flush=True)  # noqa: E731
            step("acme-agent")
            one = floor = idle100 = forced100 = daemon100 = None
            if "agent" not in args.skip:
                one, floor = agent_one(ca, work / "a1")
                idle100, forced100 = agent_hundred(ca, work / "a100")
                daemon100 = agent_daemon(ca, work / "ad100", 100, args.idle)
            big = agent_daemon(ca, work / "adbig", args.big, args.idle) if args.big else None
            certbot = lego = caddy = None
            if "certbot" not in args.skip:
                step("certbot (100 issuances one after another: minutes)")
                certbot = certbot_all(ca, work / "certbot")
            if "lego" not in args.skip:
                step("lego")
                lego = lego_all(ca, work / "lego")
            if "caddy" not in args.skip:
                step("caddy")
                caddy = caddy_daemon(ca, work / "caddy", args.idle)
    print()
    if one is not None and idle100 is not None and forced100 is not None and daemon100:
        rows_100(args, one, idle100, forced100, daemon100, certbot, lego, caddy)
        print(f"   (same run: python -c 'import acme.client' alone takes {floor:.3f} s)")
    if big:
        print(f"4. daemon, {args.big}: start-up {big['startup']:.2f} s, all obtained in "
              f"{big['obtained']:.1f} s (then busy {big['settle']:.1f} s), idle RSS "
              f"{big['rss']:.1f} MiB, CPU over {args.idle:.0f} s idle "
              f"{big['idle_cpu']:.3f} s")  # fmt: skip
    for name, value in (("lego", lego), ("caddy", caddy)):
        if value is None and name not in args.skip:
            print(f"({name}: not installed or failed; apt-get install {name})")


def rows_100(
    args: argparse.Namespace, one: float, idle100: float, forced100: float,
    daemon100: dict[str, float], certbot: dict[str, float] | None,
    lego: dict[str, float] | None, caddy: dict[str, float] | None,
) -> None:  # fmt: skip
    get = lambda d, k: d[k] if d else None  # noqa: E731
    row("1. one issuance, fresh process", one,
        {"certbot": get(certbot, "one"), "lego": get(lego, "one")}, "s")  # fmt: skip
    row("2. renew, 100 certificates, none due", idle100,
        {"certbot": get(certbot, "idle"), "lego": get(lego, "idle")}, "s")  # fmt: skip
    row("3. forced renewal of 100 certificates", forced100,
        {"certbot": get(certbot, "forced"), "lego": get(lego, "forced")}, "s")  # fmt: skip
    row("4. daemon, 100 obtained after start", daemon100["obtained"],
        {"caddy": get(caddy, "obtained")}, "s")  # fmt: skip
    row("4. daemon, 100: idle RSS", daemon100["rss"], {"caddy": get(caddy, "rss")}, "MiB")
    row(f"4. daemon, 100: CPU over {args.idle:.0f} s idle", daemon100["idle_cpu"],
        {"caddy": get(caddy, "idle_cpu")}, "s")  # fmt: skip


if __name__ == "__main__":
    main()

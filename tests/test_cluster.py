"""Fleet mode against real parts: redis-server, pebble, nginx as the load balancer.

Tier 2: leases, fencing and sealing against a real Redis. Tier 3: three agents behind
nginx share one order per renewal; a killed lock holder is replaced; Redis restarts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import load
from agent.config.cluster import ClusterConfig
from agent.errors import ConfigError
from agent.fleet.cluster import ClusterError, Lease, LeaseLost, RedisCluster
from agent.fleet.sealing import Sealer, SealError
from agent.localca import LOOPBACK, LocalCA, free_ports
from agent.model import Holder
from agent.store.certs import Store
from tests.conftest import cert_table, require_binary, start_ca, write_config
from tests.daemon_proc import DaemonProc
from tests.faultproxy import Fault, FaultProxy
from tests.redis_server import RedisServer

HOOK = Path(__file__).parent / "hook_recorder.py"
SECRET = "b" * 44


def key_file(directory: Path) -> Path:
    path = directory / "cluster.key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def cluster_settings(server: RedisServer, directory: Path, **extra: object) -> ClusterConfig:
    return ClusterConfig(
        url=server.url, key_file=key_file(directory), password_file=server.password_file(), **extra
    )  # type: ignore[arg-type]


def cluster_table(
    server: RedisServer, directory: Path, node: str, lease: str = "60s", check: str = "5m"
) -> str:
    return (
        f'[cluster]\nbackend = "redis"\nurl = "{server.url}"\nkey_prefix = "fleet:"\n'
        f'key_file = "{key_file(directory)}"\npassword_file = "{server.password_file()}"\n'
        f'node = "{node}"\nlease = "{lease}"\ncheck_interval = "{check}"\n'
    )


def pebble_orders(ca: LocalCA) -> int:
    return len(re.findall(r"Added order \"[^\"]+\" to the db", ca.log_text()))


# -- tier 2: a real Redis ------------------------------------------------------------


def test_lease_is_exclusive_expires_and_fences_a_stalled_holder(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a = RedisCluster(cluster_settings(redis_server, tmp_path, node="a", lease_seconds=5))
    b = RedisCluster(cluster_settings(redis_server, tmp_path, node="b", lease_seconds=5))
    first = a.acquire("www")
    assert isinstance(first, Lease)
    held = b.acquire("www")
    assert isinstance(held, Holder) and held.node == "a" and 0 < held.seconds_left <= 5
    # "a" stalls: its keeper stops, the lease runs out, "b" takes over with a newer fence.
    first._stop.set()
    redis_server.client().pexpire("acme-agent:lock:www", 1)
    time.sleep(0.05)
    second = b.acquire("www")
    assert isinstance(second, Lease) and second.fence > first.fence
    chain_pem = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    not_after = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(LeaseLost, match="another host took over"):
        a.put_cert(first, "www", b"stale key", chain_pem, "aa", not_after)
    b.put_cert(second, "www", b"new key", chain_pem, "bb", not_after)
    shared = a.load_cert("www")
    assert shared is not None and shared.serial == "bb" and shared.version == second.fence
    assert a.open_key(shared) == b"new key"
    second.release()
    third = a.acquire("www")
    assert isinstance(third, Lease)  # released: free at once
    third.release()


def test_lease_is_kept_alive_while_held(tmp_path: Path, redis_server: RedisServer) -> None:
    a = RedisCluster(cluster_settings(redis_server, tmp_path, node="a", lease_seconds=5))
    lease = a.acquire("www")
    assert isinstance(lease, Lease)
    time.sleep(6)  # longer than the lease: the keeper renewed it
    assert isinstance(a.acquire("www"), Holder)
    assert not lease.lost
    lease.release()


def test_tls_and_an_acl_user(tmp_path: Path) -> None:
    """rediss:// with ca_file, an ACL user in the URL and its password in password_file;
    the user may touch only keys and channels under its prefix, and that is enough."""
    require_binary("redis-server", "redis-server")
    server = RedisServer(tmp_path / "redis", tls=True, user="fleet-host").start()
    try:
        settings = cluster_settings(server, tmp_path, node="a", key_prefix="fleet:",
                                    ca_file=server.ca_file)  # fmt: skip
        assert settings.url.startswith("rediss://fleet-host@")
        cluster = RedisCluster(settings)
        lease = cluster.acquire("www")
        assert isinstance(lease, Lease)
        chain_pem = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
        cluster.put_cert(lease, "www", b"key", chain_pem, "aa", datetime.now(UTC))
        lease.release()
        assert cluster.serials(["www", "api"]) == {"www": "aa", "api": None}

        untrusted = RedisCluster(cluster_settings(server, tmp_path, key_prefix="fleet:"))
        with pytest.raises(ClusterError, match=r"Redis at rediss://fleet-host@127\.0\.0\.1"):
            untrusted.ping()  # no ca_file: the server's certificate is not trusted
        server.password_file().write_text("wrong\n")
        with pytest.raises(ConfigError, match=r"\[cluster\] password_file: .*check the password"):
            RedisCluster(settings).ping()
    finally:
        server.stop()


def test_sealed_values_need_the_same_key_and_place() -> None:
    sealer = Sealer(b"x" * 32)
    sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----", "cert:www")
    assert "PRIVATE" not in sealed
    assert sealer.open(sealed, "cert:www") == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(SealError, match="key files differ"):
        Sealer(b"y" * 32).open(sealed, "cert:www")
    with pytest.raises(SealError):
        sealer.open(sealed, "cert:api")  # swapped in for another certificate


def test_key_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"key_file: .* holds 5 bytes"):
        Sealer.from_file(path)
    path.write_text(SECRET)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Sealer.from_file(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('backend = "etcd"\nurl = "redis://h"\nkey_file = "k"', r"cluster\.backend: 'etcd'"),
        ('backend = "redis"\nurl = "redis://u:pw@h:6379"\nkey_file = "k"', "password_file"),
        (
            'backend = "redis"\nurl = "redis://h:6379/0?password=pw"\nkey_file = "k"',
            "must not contain a password",
        ),
        ('backend = "redis"\nurl = "http://h"\nkey_file = "k"', r"cluster\.url: must start"),
        ('backend = "redis"\nurl = "redis://h"', r"cluster\.key_file: is required"),
        ('backend = "redis"\nurl = "redis://h"\nkey_file = "k"\nlease = "1s"', "between 5"),
        ('backend = "redis"\nurl = "redis://h"\nkey_file = "k"\nleese = "9s"', "unknown key"),
    ],
)
def test_cluster_config_errors(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[acme]\ndirectory = "https://ca/dir"\n[cluster]\n{table}\n')
    with pytest.raises(ConfigError, match=message):
        load(path)
    assert main(["--config", str(path), "renew"]) == 2


def test_webroot_mode_is_refused_in_a_cluster(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[acme]\ndirectory = "https://ca/dir"\n[http01]\nmode = "webroot"\nwebroot = "/w"\n'
        '[cluster]\nbackend = "redis"\nurl = "redis://h"\nkey_file = "k"\n'
    )
    with pytest.raises(ConfigError, match=r"http01\.mode: \"webroot\" cannot answer"):
        load(path)


# -- tier 3: hosts, pebble, nginx, Redis ---------------------------------------------


@dataclass
class Host:
    name: str
    dir: Path
    config: Path
    port: int

    @property
    def store(self) -> Store:
        return Store(self.dir / "state")

    def deployed_serial(self, cert: str) -> str | None:
        from cryptography import x509

        path = self.dir / "deployed" / f"{cert}.pem"
        try:
            return f"{x509.load_pem_x509_certificate(path.read_bytes()).serial_number:x}"
        except (OSError, ValueError):
            return None

    def reloads(self) -> int:
        path = self.dir / "reloads.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def renew(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("renew", *args)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=120, env=_env(),
        )  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}


def make_host(
    tmp_path: Path, ca: LocalCA, server: RedisServer, name: str, port: int, certs: list[str],
    *, lease: str = "60s", directory: str | None = None, ca_bundle: Path | None = None,
    metrics_port: int = 0, check: str = "5m",
) -> Host:  # fmt: skip
    folder = tmp_path / name
    folder.mkdir()
    tables = ""
    for cert in certs:
        reload = json.dumps([sys.executable, str(HOOK), str(folder / "reloads.jsonl")])
        tables += cert_table(cert, f"{cert}.fleet.example.com") + (
            f'[certificate.deploy]\nfullchain = "{folder}/deployed/{cert}.pem"\n'
            f'key = "{folder}/deployed/{cert}.key"\nreload = "command"\n'
            f"reload_command = {reload}\n\n"
        )
    setup = write_config(
        folder, ca, tables + cluster_table(server, tmp_path, name, lease, check)
        + (f'[metrics]\nlisten = "{LOOPBACK}:{metrics_port}"\n' if metrics_port else ""),
        http01=f'mode = "standalone"\nlisten = "{LOOPBACK}:{port}"\n',
    )  # fmt: skip
    if directory is not None:  # e.g. through a fault proxy
        text = setup.config.read_text().replace(ca.directory_url, directory)
        setup.config.write_text(text.replace(str(ca.ca_bundle), str(ca_bundle)))
    return Host(name, folder, setup.config, port)


class LoadBalancer:
    """nginx, round-robin over the hosts' responders, on the port pebble validates."""

    def __init__(self, folder: Path, port: int, backends: list[int]) -> None:
        require_binary("nginx", "nginx-light")
        self.dir = folder
        (folder / "tmp").mkdir(parents=True)
        servers = "".join(f"server {LOOPBACK}:{p} max_fails=0;\n" for p in backends)
        self.conf = folder / "nginx.conf"
        self.conf.write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format lb '$upstream_addr $status $request_uri';
    access_log {folder}/access.log lb;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    upstream hosts {{ {servers} }}
    server {{
        listen {LOOPBACK}:{port};
        location /.well-known/acme-challenge/ {{
            proxy_pass http://hosts;
            proxy_next_upstream off;
        }}
    }}
}}
""")
        subprocess.run(["nginx", "-c", str(self.conf), "-p", str(folder), "-e",
                        str(folder / "error.log")], check=True, timeout=30)  # fmt: skip

    def answers(self) -> list[tuple[str, str]]:
        """(upstream, status) of every challenge request."""
        path = self.dir / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(ln.split()[0], ln.split()[1]) for ln in lines if "acme-challenge" in ln]

    def stop(self) -> None:
        with_pid = self.dir / "nginx.pid"
        if with_pid.exists():
            os.kill(int(with_pid.read_text()), signal.SIGQUIT)


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_three_hosts_behind_a_load_balancer_share_one_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    lb_port, *ports = free_ports(4)
    ca = start_ca(tmp_path / "ca", http_port=lb_port)
    lb = LoadBalancer(tmp_path / "lb", lb_port, ports)
    certs = ["www", "api"]
    hosts = [make_host(tmp_path, ca, redis_server, f"host{i}", p, certs) for i, p in
             enumerate(ports)]  # fmt: skip
    daemons = [DaemonProc(h.config, h.dir / "daemon.log") for h in hosts]
    try:

        def all_same() -> bool:
            for cert in certs:
                serials = {h.deployed_serial(cert) for h in hosts}
                if len(serials) != 1 or None in serials:
                    return False
            return True

        wait_until(all_same, 60, "every host deploys the same certificates")
        assert pebble_orders(ca) == len(certs)  # one order per certificate, fleet-wide
        assert len(re.findall(r"There are now \d+ accounts", ca.log_text())) == 1
        answers = lb.answers()
        assert answers and all(status == "200" for _, status in answers), answers
        assert len({upstream for upstream, _ in answers}) == 3  # every host answered some
        wait_until(lambda: all(h.reloads() >= 1 for h in hosts), 10, "every host reloads")

        # A forced renewal on one host: one more order, and every host deploys it.
        before = hosts[0].deployed_serial("www")
        result = hosts[1].renew("--force", "--cert", "www")
        assert result.returncode == 0, result.stdout + result.stderr
        new = hosts[1].deployed_serial("www")
        assert new != before
        wait_until(lambda: {h.deployed_serial("www") for h in hosts} == {new}, 30,
                   "the renewed certificate reaches every host")  # fmt: skip
        assert pebble_orders(ca) == len(certs) + 1

        for daemon in daemons:  # neither the Redis password nor the sealing secret leaks
            assert redis_server.password not in daemon.text() and SECRET not in daemon.text()

        # Redis keeps no private key in the clear (certificate and account keys).
        dump = redis_server.dump_bytes()
        assert b"fleet:cert:www" in dump
        assert b"PRIVATE KEY" not in dump
        for host in hosts:
            key_pem = (host.store.live_dir("www") / "privkey.pem").read_bytes()
            assert key_pem.split(b"\n")[1] not in dump
            assert _private_scalar(key_pem) not in dump
    finally:
        for daemon in daemons:
            daemon.stop()
        lb.stop()
        ca.stop()


def _private_scalar(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, None)
    return key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]


def test_a_killed_lock_holder_is_replaced_after_its_lease(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ca = start_ca(tmp_path / "ca")
    proxy = FaultProxy(tmp_path / "proxy", ca.directory_url, ca.ca_bundle).start()
    proxy.faults = [Fault("stall", stall=120, path="/finalize-order")]
    try:
        stalled = make_host(tmp_path, ca, redis_server, "a", ca.http_port, ["www"], lease="5s",
                            directory=proxy.directory_url, ca_bundle=proxy.ca_bundle)  # fmt: skip
        other = make_host(tmp_path, ca, redis_server, "b", ca.http_port, ["www"], lease="5s")
        holder = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(stalled.config), "renew"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
        )  # fmt: skip
        wait_until(lambda: any("/finalize-order" in r.path for r in proxy.records), 30,
                   "the holder reaches finalize")  # fmt: skip
        assert redis_server.client().get("fleet:lock:www") is not None
        time.sleep(6)  # the keeper renews the lease past its 5 s
        assert redis_server.client().get("fleet:lock:www") is not None
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        waiting = other.renew()
        assert waiting.returncode == 0
        assert "waiting" in waiting.stdout and "a is renewing it" in waiting.stdout
        daemon = DaemonProc(other.config, other.dir / "daemon.log")
        try:
            wait_until(lambda: other.deployed_serial("www") is not None, 40,
                       "the other host takes over")  # fmt: skip
        finally:
            daemon.stop()
        assert time.monotonic() - killed_at >= 3  # not before the dead holder's lease ran out
        shared = redis_server.client().hget("fleet:cert:www", "serial")
        assert shared is not None and shared.decode() == other.deployed_serial("www")
        assert stalled.store.record("www") is None  # the killed host never installed one
    finally:
        proxy.stop()
        ca.stop()


def test_redis_restart_and_outage(tmp_path: Path, redis_server: RedisServer) -> None:
    ca = start_ca(tmp_path / "ca")
    other_port, metrics_port = free_ports(2)
    a = make_host(tmp_path, ca, redis_server, "a", ca.http_port, ["www"],
                  metrics_port=metrics_port)  # fmt: skip

    def connected() -> str:
        url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return re.findall(r"^acme_agent_cluster_connected (\S+)", text, re.M)[0]

    b = make_host(tmp_path, ca, redis_server, "b", other_port, ["www"])
    daemon_a = DaemonProc(a.config, a.dir / "daemon.log")
    try:
        wait_until(lambda: a.deployed_serial("www") is not None, 30, "a obtains www")
        first = a.deployed_serial("www")
        result = b.renew()  # takes a's certificate from Redis: no order
        assert result.returncode == 0, result.stdout + result.stderr
        assert b.deployed_serial("www") == first and pebble_orders(ca) == 1
        assert "from the cluster, obtained by a" in result.stdout

        redis_server.stop()  # outage: both hosts keep what they serve
        down = b.renew("--force")
        assert down.returncode == 1
        assert "Redis at redis://127.0.0.1" in down.stdout + down.stderr
        assert "certificates in service are kept" in down.stdout + down.stderr
        assert "Traceback" not in down.stderr
        assert b.deployed_serial("www") == first
        daemon_a.wait_for(r"certificates in service are kept; reconnecting", 20)
        assert connected() == "0.0"

        redis_server.start()  # same data directory: the append-only file brings it back
        assert redis_server.client().hget("fleet:cert:www", "serial").decode() == first
        daemon_a.wait_for(r"Redis at \S+ is back", 40)
        wait_until(lambda: connected() == "1.0", 10, "the gauge says connected again")
        renewed = b.renew("--force")  # b orders; a hears of it and deploys it
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        new = b.deployed_serial("www")
        assert new != first
        wait_until(lambda: a.deployed_serial("www") == new, 30, "a deploys b's renewal")
        assert pebble_orders(ca) == 2
    finally:
        daemon_a.stop()
        ca.stop()


def test_account_rollover_and_deactivation_reach_every_host(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ca = start_ca(tmp_path / "ca")
    try:  # one after another, so both may answer on pebble's HTTP-01 port
        a = make_host(tmp_path, ca, redis_server, "a", ca.http_port, ["www"])
        b = make_host(tmp_path, ca, redis_server, "b", ca.http_port, ["www"])
        assert a.renew().returncode == 0
        taken = b.renew()
        assert taken.returncode == 0 and "using the cluster's ACME account" in taken.stderr
        accounts = lambda: len(re.findall(r"There are now \d+ accounts", ca.log_text()))  # noqa: E731
        assert accounts() == 1

        rolled = a.run("account", "rollover")
        assert rolled.returncode == 0, rolled.stderr
        renewed = b.renew(
            "--force"
        )  # b's copy of the old key is refused by now: it takes the new one
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        assert "using the cluster's ACME account" in renewed.stderr

        gone = a.run("account", "deactivate", "--yes")
        assert gone.returncode == 0, gone.stderr
        assert b"PRIVATE" not in redis_server.dump_bytes()
        fresh = b.renew("--force")  # b sets its copy aside and registers anew (EAB)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "was deactivated; registering anew" in fresh.stderr
        assert accounts() == 2
        again = a.renew("--force")  # a takes the new shared account: no third registration
        assert again.returncode == 0, again.stdout + again.stderr
        assert accounts() == 2
    finally:
        ca.stop()


def fresh_chain(domain: str, days: int) -> tuple[bytes, bytes, str]:
    """(key PEM, fullchain PEM, serial) of a certificate valid from now, from a local CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from agent import keys
    from agent.localca import self_signed_root

    now = datetime.now(UTC) - timedelta(minutes=1)
    ca_key, ca = self_signed_root("fleet test CA", not_before=now)
    key = keys.generate_key("ec-p256")
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    from cryptography.hazmat.primitives.serialization import Encoding

    chain = leaf.public_bytes(Encoding.PEM) + ca.public_bytes(Encoding.PEM)
    return keys.key_to_pem(key), chain, f"{leaf.serial_number:x}"


def test_a_missed_message_is_caught_by_the_periodic_check(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ca = start_ca(tmp_path / "ca")
    try:
        a = make_host(tmp_path, ca, redis_server, "a", ca.http_port, ["www"])
        b = make_host(tmp_path, ca, redis_server, "b", free_ports(1)[0], ["www"], check="5s")
        assert a.renew().returncode == 0
        daemon = DaemonProc(b.config, b.dir / "daemon.log")
        try:
            daemon.wait_for(r"www: installed serial \S+ from the cluster", 20)
            # A new version whose message never reaches b (published on another channel).
            writer = RedisCluster(cluster_settings(redis_server, tmp_path, node="a",
                                                   key_prefix="fleet:"))  # fmt: skip
            writer.events_channel = "elsewhere"
            lease = writer.acquire("www")
            assert isinstance(lease, Lease)
            key_pem, chain, serial = fresh_chain("www.fleet.example.com", 91)
            writer.put_cert(lease, "www", key_pem, chain, serial,
                            datetime.now(UTC) + timedelta(days=91))  # fmt: skip
            lease.release()
            wait_until(lambda: b.deployed_serial("www") == serial, 20,
                       "b's periodic check installs it")  # fmt: skip
        finally:
            daemon.stop()
        assert pebble_orders(ca) == 1
    finally:
        ca.stop()

"""A real nginx on loopback ports with its own config, prefix and pid file (for tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.deploy.deployer import served_serial
from agent.localca import free_port
from tests.certs import make_chain

SNIPPET = Path(__file__).parent.parent / "config" / "nginx" / "acme-challenge.conf"


def snippet(variant: str, *, proxy_port: int = 0, webroot: Path | None = None) -> str:
    """The shipped snippet, variant "proxy" or "webroot", pointed at test ports/paths."""
    text = SNIPPET.read_text()
    proxy, _, web = text.partition("# Variant 2")
    if variant == "proxy":
        return "\n".join(ln for ln in proxy.splitlines()).replace("8402", str(proxy_port))
    lines = [ln.removeprefix("# ") for ln in web.splitlines() if ln.startswith("# ")]
    return "\n".join(lines[1:]).replace("/var/www/acme", str(webroot))


@dataclass
class Nginx:
    dir: Path
    http_port: int
    challenge_snippet: str
    tls_port: int = field(default_factory=free_port)

    @property
    def conf(self) -> Path:
        return self.dir / "nginx.conf"

    @property
    def fullchain(self) -> Path:
        return self.dir / "tls" / "fullchain.pem"

    @property
    def key(self) -> Path:
        return self.dir / "tls" / "key.pem"

    def base_argv(self) -> list[str]:
        return [
            "nginx",
            "-c",
            str(self.conf),
            "-p",
            str(self.dir),
            "-e",
            str(self.dir / "error.log"),
        ]

    def test_command(self) -> list[str]:
        return [*self.base_argv(), "-t", "-q"]

    def reload_command(self) -> list[str]:
        return [*self.base_argv(), "-s", "reload"]

    def write_conf(self, extra: str = "") -> None:
        d = self.dir
        self.conf.write_text(f"""
user www-data;  # as Debian ships it: the workers are unprivileged
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    {extra}
    server {{
        listen 127.0.0.1:{self.http_port};
        server_name _;
        {self.challenge_snippet}
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{self.tls_port} ssl;
        server_name _;
        ssl_certificate {self.fullchain};
        ssl_certificate_key {self.key};
        location / {{ return 200 "ok"; }}
    }}
}}
""")

    def start(self) -> Nginx:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.dir / "tls").mkdir(exist_ok=True)
        key, chain = make_chain(("initial.example.com",))
        from agent import keys

        self.key.write_bytes(keys.key_to_pem(key))
        self.fullchain.write_bytes(chain.fullchain_pem)
        self.write_conf()
        subprocess.run(self.base_argv(), check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.serial("initial.example.com")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()}")

    def master_pid(self) -> int:
        return int((self.dir / "nginx.pid").read_text())

    def serial(self, sni: str) -> int:
        return served_serial("127.0.0.1", self.tls_port, sni, 5)

    def stop(self) -> None:
        try:
            pid = self.master_pid()
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

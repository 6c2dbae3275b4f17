"""A real redis-server on loopback with a password and an append-only file (for tests)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from agent.localca import LOOPBACK, _write_tls_material, free_port


@dataclass
class RedisServer:
    dir: Path
    password: str = "test-redis-password-5f1c"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tls: bool = False  # TLS only (no plain port); ca_file is the root to trust
    user: str = ""  # an ACL user limited to keys and channels under "fleet:"

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.user}@" if self.user else ""
        return f"{scheme}://{user}{LOOPBACK}:{self.port}/0"

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "tls-ca.pem"

    def _tls_lines(self) -> str:
        if not self.tls:
            return f"port {self.port}\n"
        folder = self.dir / "tls"
        if not folder.exists():  # kept across restarts: clients keep trusting the same root
            folder.mkdir()
            _write_tls_material(folder)
        cert, key = folder / "tls-cert.pem", folder / "tls-key.pem"
        return (
            f"port 0\ntls-port {self.port}\ntls-cert-file {cert}\ntls-key-file {key}\n"
            f"tls-ca-cert-file {self.ca_file}\ntls-auth-clients no\n"
        )

    def password_file(self) -> Path:
        path = self.dir / "redis.password"
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            f"bind {LOOPBACK}\n{self._tls_lines()}dir {self.dir}\nrequirepass {self.password}\n"
            + (
                f"user {self.user} on >{self.password} ~fleet:* &fleet:* +@all\n"
                if self.user
                else ""
            )
            + 'appendonly yes\nappendfsync always\nsave ""\ndaemonize no\nprotected-mode yes\n'
            f"logfile {self.dir}/redis.log\n"
        )  # the password only in a 0600 file, never in argv
        conf.chmod(0o600)
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.dir}") from None
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return redis.Redis(host=LOOPBACK, port=self.port, password=self.password,
                           socket_timeout=5, **tls)  # type: ignore[arg-type]  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def dump_bytes(self) -> bytes:
        """Everything Redis persists: an RDB snapshot and the append-only files."""
        self.client().save()
        return b"".join(p.read_bytes() for p in sorted(self.dir.rglob("*")) if _persisted(p))


def _persisted(path: Path) -> bool:
    return path.is_file() and (path.suffix in (".rdb", ".aof") or "appendonly" in path.name)

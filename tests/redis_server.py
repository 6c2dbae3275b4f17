"""A real redis-server on loopback with a password and an append-only file (for tests)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from agent.localca import LOOPBACK, free_port


@dataclass
class RedisServer:
    dir: Path
    password: str = "test-redis-password-5f1c"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def password_file(self) -> Path:
        path = self.dir / "redis.password"
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            f"bind {LOOPBACK}\nport {self.port}\ndir {self.dir}\nrequirepass {self.password}\n"
            'appendonly yes\nappendfsync always\nsave ""\ndaemonize no\nprotected-mode yes\n'
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
        return redis.Redis(host=LOOPBACK, port=self.port, password=self.password,
                           socket_timeout=5)  # fmt: skip

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

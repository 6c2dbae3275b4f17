"""Shared fixtures: real pebble CAs on loopback, configuration writers, CLI runner.

Under CI=true a missing pebble is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.cli.main import main
from agent.localca import LocalCA
from tests.faultproxy import FaultProxy
from tests.redis_server import RedisServer

IN_CI = os.environ.get("CI", "").lower() == "true"
# pebble 2.4 panics when a blocklist entry has more labels than a requested name, so
# the blocked name has two labels (no requested name has fewer).
BLOCKED = "blocked.test"


def require_binary(name: str, package: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not installed (apt-get install {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message + "; under CI=true this is a failure")


def start_ca(workdir: Path, **kwargs: object) -> LocalCA:
    require_binary("pebble", "pebble")
    return LocalCA(workdir, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    """One pebble for the session: EAB required, one blocked domain, 90-day certificates."""
    ca = start_ca(tmp_path_factory.mktemp("pebble"), blocklist=[BLOCKED])
    yield ca
    ca.stop()


@dataclass
class Setup:
    """A configuration file for one CA in a temporary directory."""

    dir: Path
    ca: LocalCA
    config: Path

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def live(self, name: str) -> Path:
        return self.state / "live" / name

    def versions(self, name: str) -> list[str]:
        folder = self.state / "archive" / name
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def renew(self, *args: str) -> int:
        return main(["--config", str(self.config), "renew", *args])


def write_config(
    directory: Path,
    ca: LocalCA,
    certs: str,
    *,
    http01: str | None = None,
    acme_extra: str = "",
    eab: bool = True,
) -> Setup:
    eab_file = directory / "eab.key"
    eab_file.write_text(ca.eab_hmac_key)
    eab_file.chmod(0o600)
    eab_lines = f'eab_kid = "{ca.eab_kid}"\neab_hmac_key_file = "{eab_file}"\n' if eab else ""
    if http01 is None:
        http01 = f'mode = "standalone"\nlisten = "127.0.0.1:{ca.http_port}"\n'
    text = (
        f'state_dir = "{directory / "state"}"\n\n'
        f'[acme]\ndirectory = "{ca.directory_url}"\nca_bundle = "{ca.ca_bundle}"\n'
        f"issuance_timeout = 30\n{eab_lines}{acme_extra}\n"
        f"[http01]\n{http01}\n{certs}"
    )
    config = directory / "agent.toml"
    config.write_text(text)
    return Setup(directory, ca, config)


def cert_table(name: str, *domains: str, key_type: str | None = None) -> str:
    names = ", ".join(f'"{d}"' for d in domains)
    extra = f'key_type = "{key_type}"\n' if key_type else ""
    return f'[[certificate]]\nname = "{name}"\ndomains = [{names}]\n{extra}\n'


@pytest.fixture
def setup(tmp_path: Path, pebble: LocalCA) -> Setup:
    """One certificate ("www") against the session pebble, standalone HTTP-01."""
    return write_config(tmp_path, pebble, cert_table("www", "www.example.com", "example.com"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on loopback, with a password (fleet-mode tests)."""
    require_binary("redis-server", "redis-server")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def proxy(tmp_path: Path, pebble: LocalCA) -> Iterator[FaultProxy]:
    """The fault proxy in front of the session's pebble (tests/faultproxy.py)."""
    server = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    yield server
    server.stop()


def through(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, certs: str | None = None, extra: str = ""
) -> Setup:
    """A configuration for pebble reached through ``proxy`` (one certificate "f" unless
    ``certs`` says otherwise)."""
    ca = SimpleNamespace(
        eab_kid=pebble.eab_kid,
        eab_hmac_key=pebble.eab_hmac_key,
        directory_url=proxy.directory_url,
        ca_bundle=proxy.ca_bundle,
        http_port=pebble.http_port,
    )
    certs = cert_table("f", "f.example.com") if certs is None else certs
    return write_config(tmp_path, ca, certs, acme_extra=extra)  # type: ignore[arg-type]

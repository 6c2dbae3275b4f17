"""``[cluster]``: several hosts share certificates, locks and HTTP-01 answers through Redis.

Without the table nothing changes: the local filesystem is the only store.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..policy.durations import parse_duration
from .tomltable import Table, relative_to

BACKENDS = ("redis",)
URL_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_KEY_PREFIX = "acme-agent:"
# A lease outlives a stalled request or two; a dead holder is replaced after this long.
DEFAULT_LEASE = 60.0
# Pub/sub tells hosts of a new certificate at once; this check catches what it missed.
DEFAULT_CHECK_INTERVAL = 300.0


@dataclass(frozen=True)
class ClusterConfig:
    url: str  # never holds a password (refused at load): safe in messages
    key_file: Path
    backend: str = "redis"
    key_prefix: str = DEFAULT_KEY_PREFIX
    password_file: Path | None = None
    ca_file: Path | None = None
    node: str = ""  # this host's name in locks and logs (default: the host name)
    lease_seconds: float = DEFAULT_LEASE
    check_interval: float = DEFAULT_CHECK_INTERVAL

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()


def parse_cluster(top: Table, base: Path) -> ClusterConfig | None:
    table = top.optional_table("cluster")
    if table is None:
        return None
    backend = table.require("backend", str)
    if backend not in BACKENDS:
        raise table.error("backend", f'{backend!r} is not supported; use "redis"')
    url = table.require("url", str)
    _check_url(url, table)
    prefix = table.text("key_prefix", DEFAULT_KEY_PREFIX) or DEFAULT_KEY_PREFIX
    key_file = table.require("key_file", str)
    password_file = table.text("password_file")
    ca_file = table.text("ca_file")
    node = table.text("node") or ""
    lease = _seconds(table, "lease", DEFAULT_LEASE, 5, 3600)
    check = _seconds(table, "check_interval", DEFAULT_CHECK_INTERVAL, 5, 86400)
    table.finish()
    return ClusterConfig(
        url=url,
        key_file=relative_to(Path(key_file), base),
        backend=backend,
        key_prefix=prefix,
        password_file=relative_to(Path(password_file), base) if password_file else None,
        ca_file=relative_to(Path(ca_file), base) if ca_file else None,
        node=node,
        lease_seconds=lease,
        check_interval=check,
    )


def _check_url(url: str, table: Table) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise table.error("url", f"not a valid URL ({err})") from None
    if parts.scheme not in URL_SCHEMES:
        raise table.error("url", "must start with redis://, rediss:// (TLS) or unix://")
    query = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if parts.password is not None or "password" in query:
        raise table.error(
            "url", "must not contain a password: put it in a file and set password_file"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise table.error("url", "names no host (e.g. redis://10.0.0.5:6379/0)")
    del port


def _seconds(table: Table, key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, (str, int, float), None)
    if value is None:
        return default
    try:
        seconds = parse_duration(value).total_seconds() if isinstance(value, str) else float(value)
    except ValueError:
        raise table.error(key, f'{value!r} is not a duration (e.g. "60s", "5m")') from None
    if not low <= seconds <= high:
        raise table.error(key, f"{value!r} must be between {low:g} and {high:g} seconds")
    return seconds

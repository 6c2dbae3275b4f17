"""Addresses in the configuration: ``listen = "ADDRESS:PORT"`` and IP literals."""

from __future__ import annotations

import socket

from .tomltable import Table as _Table


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address (socket.inet_pton: no ipaddress import at start-up)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except OSError:
            pass
    return False


def parse_listen(listen: str, table: _Table) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
        if not is_ip_address(host):
            raise ValueError(host)
    except ValueError:
        raise table.error(
            "listen", f"{listen!r} must be ADDRESS:PORT, e.g. 0.0.0.0:80 or [::]:80"
        ) from None
    if not sep or not 1 <= port <= 65535:
        raise table.error("listen", f"{listen!r}: port must be 1-65535")
    return host, port

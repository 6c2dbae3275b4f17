"""The standalone responder on a real loopback socket, and the webroot solver."""

from __future__ import annotations

import contextlib
import http.client
import socket
from pathlib import Path

import pytest

from agent.errors import IssuanceError
from agent.http01.solvers import StandaloneSolver, WebrootSolver
from agent.localca import free_port
from agent.model import Challenge

TOKEN = "tok_-" + "A" * 40
CHALLENGE = Challenge("example.com", TOKEN, TOKEN + ".thumbprint", None)  # type: ignore[arg-type]


def request(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_responder_answers_only_pending_tokens() -> None:
    port = free_port()
    solver = StandaloneSolver("127.0.0.1", port)
    solver.present([CHALLENGE])
    try:
        base = "/.well-known/acme-challenge/"
        assert request(port, "GET", base + TOKEN) == (200, (TOKEN + ".thumbprint").encode())
        assert request(port, "HEAD", base + TOKEN)[0] == 200
        assert request(port, "GET", base + "B" * 43)[0] == 404
        assert request(port, "GET", base + "../../etc/passwd")[0] == 404
        assert request(port, "GET", "/")[0] == 404
        assert request(port, "POST", base + TOKEN)[0] == 501
    finally:
        solver.cleanup()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # closed once no challenge is pending


def test_port_in_use_message() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        solver = StandaloneSolver("127.0.0.1", blocker.getsockname()[1])
        with pytest.raises(IssuanceError, match="another program holds the port"):
            solver.present([CHALLENGE])


def test_webroot_writes_and_removes(tmp_path: Path) -> None:
    solver = WebrootSolver(tmp_path)
    solver.present([CHALLENGE])
    path = tmp_path / ".well-known" / "acme-challenge" / TOKEN
    assert path.read_text() == TOKEN + ".thumbprint"
    assert path.stat().st_mode & 0o777 == 0o644
    solver.cleanup()
    assert not path.exists()


def test_webroot_refuses_path_tokens(tmp_path: Path) -> None:
    evil = Challenge("example.com", "../../../etc/cron.d/x", "boom", None)  # type: ignore[arg-type]
    with pytest.raises(IssuanceError, match="unsafe challenge token"):
        WebrootSolver(tmp_path / "root").present([evil])
    assert not (tmp_path / "etc").exists()


def test_oversized_request_is_dropped_and_server_keeps_serving() -> None:
    port = free_port()
    solver = StandaloneSolver("127.0.0.1", port)
    solver.present([CHALLENGE])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
            try:
                reply = sock.recv(100)
            except ConnectionResetError:
                reply = b""
            assert b"200" not in reply
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 9000 + b"\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert b"200" not in sock.recv(100)
        path = "/.well-known/acme-challenge/" + TOKEN
        assert request(port, "GET", path)[0] == 200
    finally:
        solver.cleanup()


def test_slowloris_does_not_stop_validation() -> None:
    """300 connections trickling bytes (bounded: 300 sockets, about 3 s) while a validator
    asks for the token: every answer comes, and quickly."""
    import time

    port = free_port()
    solver = StandaloneSolver("127.0.0.1", port)
    solver.present([CHALLENGE])
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /.well-known/acme-chall")
            slow.append(sock)
        path = "/.well-known/acme-challenge/" + TOKEN
        for _ in range(5):
            started = time.monotonic()
            status, _ = request(port, "GET", path)
            assert status == 200
            assert time.monotonic() - started < 2
            for sock in slow[:50]:
                with contextlib.suppress(OSError):
                    sock.sendall(b"e")
            time.sleep(0.5)
    finally:
        for sock in slow:
            sock.close()
        solver.cleanup()

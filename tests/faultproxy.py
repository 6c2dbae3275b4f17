"""A fault-injecting HTTPS proxy on loopback, between the agent and pebble (for tests).

It terminates TLS with its own throwaway root (give the agent ``proxy.ca_bundle``),
forwards each request to pebble, rewrites pebble's URLs to its own, and, for a share of
requests matching a path filter, answers with a fault instead:

    status:500 / status:502 / status:503 [+ retry_after]   problem JSON or not (json=False)
    status:429 + retry_after                               rateLimited problem
    reset      close the connection without an answer
    stall      accept, read, and answer nothing for `stall` seconds
    drip       forward, but send the answer (status line, headers, body) one byte every
               `stall` seconds
    truncate   forward, but cut the body in half
    garbage    forward status and headers, body replaced with non-JSON text
    huge       a 2 MiB body
    replace    forward, but swap the body for `replacement` (bytes) or edit it (`transform`)
    strip_link forward, but drop the `Link: rel="up"` header (a server bug seen in the field)

A fault may be limited to requests whose JWS payload contains `payload` (e.g. '"replaces"'),
to `remaining` injections, or to the time before `until` (time.monotonic()). A status fault
sends the problem type `problem` (default: rateLimited for 429, serverInternal otherwise).

`ari` makes the proxy a server that speaks RFC 9773 in front of pebble (which does not):
"window" adds `renewalInfo` to the directory and answers every certID with a window a month
ahead; "404" adds it and answers every certID 404, as a server that does not understand
RFC 9773 certIDs does.

Every request is recorded (time, method, path, what was done) for assertions.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from agent.localca import LOOPBACK, _write_tls_material, free_port


@dataclass
class Fault:
    kind: str  # see module docstring
    share: float = 1.0  # of matching requests
    path: str = ""  # substring of the path; "" = every request
    method: str = ""  # "" = any
    status: int = 503
    retry_after: str | None = None
    json: bool = True
    stall: float = 5.0
    replacement: bytes = b""
    transform: Callable[[bytes], bytes] | None = None  # for kind "replace": edit the body
    remaining: int | None = None  # stop after this many injections
    payload: str = ""  # only requests whose JWS payload contains this
    problem: str = ""  # for kind "status": the ACME problem type
    until: float | None = None  # time.monotonic() after which the fault is off
    headers: list[tuple[str, str]] = field(default_factory=list)  # kind "status": sent too


@dataclass
class Record:
    at: float
    method: str
    path: str
    action: str  # "forward" or the fault kind
    status: int
    payload: str = ""  # the decoded JWS payload of a POST


@dataclass
class FaultProxy:
    workdir: Path
    upstream: str  # pebble's directory URL
    upstream_ca: Path
    faults: list[Fault] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    seed: int = 1
    ari: str | None = None  # None, "window" or "404": see the module docstring

    def start(self) -> FaultProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, cert, key = _write_tls_material(self.workdir)
        parts = urlsplit(self.upstream)
        self.upstream_base = f"{parts.scheme}://{parts.netloc}"
        self.upstream_host, self.upstream_port = parts.hostname or LOOPBACK, parts.port or 443
        self.port = free_port()
        self.base = f"https://{LOOPBACK}:{self.port}"
        self.directory_url = self.base + parts.path
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self._upstream_ctx = ssl.create_default_context(cafile=str(self.upstream_ca))
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def retarget(self, upstream: str, upstream_ca: Path) -> None:
        """Forward to another pebble from now on, at the same URL (a CA that restarted
        and forgot its accounts)."""
        parts = urlsplit(upstream)
        with self._lock:
            self.upstream, self.upstream_ca = upstream, upstream_ca
            self.upstream_base = f"{parts.scheme}://{parts.netloc}"
            self.upstream_host, self.upstream_port = parts.hostname or LOOPBACK, parts.port or 443
            self._upstream_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        assert parts.path == urlsplit(self.directory_url).path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def choose(self, method: str, path: str, payload: str = "") -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path and fault.path not in path:
                    continue
                if fault.method and fault.method != method:
                    continue
                if fault.payload and fault.payload not in payload:
                    continue
                if fault.until is not None and time.monotonic() >= fault.until:
                    continue
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if self._rng.random() < fault.share:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def record(self, method: str, path: str, action: str, status: int, payload: str = "") -> None:
        with self._lock:
            self.records.append(Record(time.monotonic(), method, path, action, status, payload))

    def posted(self, path: str) -> list[Record]:
        """The POSTs whose path contains ``path`` (e.g. "/order-plz": every newOrder)."""
        with self._lock:
            return [r for r in self.records if r.method == "POST" and path in r.path]

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPSConnection(
            self.upstream_host, self.upstream_port, context=self._upstream_ctx, timeout=30
        )
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out_headers = [(k, self.rewrite_text(v)) for k, v in response.getheaders()]
            return response.status, out_headers, self.rewrite(data)
        finally:
            conn.close()

    def rewrite(self, data: bytes) -> bytes:
        return data.replace(self.upstream_base.encode(), self.base.encode())

    def rewrite_text(self, text: str) -> str:
        return text.replace(self.upstream_base, self.base)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.owner
        payload = _jws_payload(body)
        if proxy.ari is not None and self.path.startswith(RENEWAL_INFO):
            self._renewal_info(method)
            return
        fault = proxy.choose(method, self.path, payload)
        forwarded = ("truncate", "garbage", "replace", "huge", "drip", "strip_link")
        if fault is None or fault.kind in forwarded:
            # Host stays ours: pebble checks the JWS "url" against the Host it was sent.
            headers = dict(self.headers.items())
            status, out_headers, data = proxy.forward(method, self.path, headers, body)
            if proxy.ari is not None and self.path == urlsplit(proxy.directory_url).path:
                directory = json.loads(data)
                directory["renewalInfo"] = proxy.base + RENEWAL_INFO
                data = json.dumps(directory).encode()
            if fault is not None and fault.kind == "strip_link":
                out_headers = [(k, v) for k, v in out_headers
                               if not (k.lower() == "link" and 'rel="up"' in v)]  # fmt: skip
            elif fault is not None and fault.kind != "drip":
                data = _mangle(fault, data)
            proxy.record(method, self.path, fault.kind if fault else "forward", status, payload)
            if fault is not None and fault.kind == "drip":
                self._drip(status, out_headers, data, fault.stall)
                return
            self._send(status, out_headers, data, method)
            return
        proxy.record(method, self.path, fault.kind, fault.status, payload)
        if fault.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.close_connection = True
            self.connection.close()
            return
        if fault.kind == "stall":
            time.sleep(fault.stall)
            self.close_connection = True
            return
        self._send_fault(fault, method)

    def _renewal_info(self, method: str) -> None:
        proxy = self.owner
        proxy.record(method, self.path, "ari", 404 if proxy.ari == "404" else 200)
        if proxy.ari == "404":
            problem = {"type": "urn:ietf:params:acme:error:malformed", "detail": "no such certID"}
            self._send(404, [("Content-Type", "application/problem+json")],
                       json.dumps(problem).encode(), method)  # fmt: skip
            return
        start = datetime.now(UTC) + timedelta(days=30)
        window = {
            "suggestedWindow": {
                "start": start.isoformat().replace("+00:00", "Z"),
                "end": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            }
        }
        self._send(200, [("Content-Type", "application/json"), ("Retry-After", "21600")],
                   json.dumps(window).encode(), method)  # fmt: skip

    def _send_fault(self, fault: Fault, method: str) -> None:
        problem = fault.problem or ("rateLimited" if fault.status == 429 else "serverInternal")
        if fault.json:
            data = json.dumps(
                {"type": f"urn:ietf:params:acme:error:{problem}", "detail": "injected fault"}
            ).encode()
            ctype = "application/problem+json"
        else:
            data, ctype = b"<html>502 Bad Gateway</html>", "text/html"
        headers = [("Content-Type", ctype), *fault.headers]
        if fault.retry_after is not None:
            headers.append(("Retry-After", fault.retry_after))
        self._send(fault.status, headers, data, method)

    def _drip(self, status: int, headers: list[tuple[str, str]], data: bytes, every: float) -> None:
        """The whole answer, one byte at a time: no read ever waits long."""
        self.close_connection = True
        try:
            for byte in _drip_bytes(status, headers, data):
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client gave up, as it should

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes, method: str) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)


RENEWAL_INFO = "/renewal-info"


def _jws_payload(body: bytes) -> str:
    """The decoded payload of a flattened JWS request body ("" for anything else)."""
    try:
        encoded = json.loads(body)["payload"]
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, KeyError, TypeError):
        return ""


def _drip_bytes(status: int, headers: list[tuple[str, str]], data: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} OK"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length",
              "transfer-encoding", "connection", "date")]  # fmt: skip
    lines += [f"Content-Length: {len(data)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + data


def _mangle(fault: Fault, data: bytes) -> bytes:
    if fault.kind == "truncate":
        return data[: len(data) // 2]
    if fault.kind == "garbage":
        return b"this is not JSON {"
    if fault.kind == "huge":
        return b"x" * (2 * 1024 * 1024)
    return fault.transform(data) if fault.transform else fault.replacement

"""The poster (agent.transport) against a tiny scripted ACME-ish server on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import josepy as jose
import pytest
from acme import errors as acme_errors
from acme import jws, messages

from agent.acme.client import AcmeClient, account_key_pem_new
from agent.acme.problems import explain
from agent.acme.transport import MAX_RESPONSE_BYTES, Poster, ResponseTooLarge
from agent.model import Challenge

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def jws(self) -> jws.JWS:
        return jws.JWS.json_loads(self.body)


@dataclass
class Server:
    """Routes path -> handler(Seen) -> (status, headers, body); HEAD /nonce hands out nonces."""

    routes: dict[str, Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def nonce(self) -> str:
        with self.lock:
            return jose.encode_b64jose(f"nonce-{next(self.counter)}".encode())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> Server:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_HEAD(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
                with owner.lock:
                    owner.seen.append(seen)
                route = owner.routes.get(self.path)
                status, headers, body = route(seen) if route else (404, {}, b"")
                self.send_response(status)
                self.send_header("Replay-Nonce", owner.nonce())
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.routes.setdefault("/nonce", lambda seen: (200, {}, b""))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posts(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == path]


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server().start()
    yield running
    running.stop()


@pytest.fixture
def key() -> jose.JWK:
    return account_key_pem_new()


def poster_for(server: Server, key: jose.JWK, retries: int = 10) -> Poster:
    poster = Poster(
        key,
        verify=True,
        user_agent="acme-agent/test",
        timeout=5,
        bad_nonce_retries=retries,
        nonce_url=lambda: server.base + "/nonce",
    )
    return poster


def problem(code: str, detail: str, status: int = 400) -> Answer:
    body = json.dumps({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail})
    return status, {"Content-Type": "application/problem+json"}, body.encode()


def ok(document: object, **headers: str) -> Answer:
    return 200, {"Content-Type": "application/json", **headers}, json.dumps(document).encode()


def test_bad_nonce_is_signed_again_with_a_fresh_nonce(server: Server, key: jose.JWK) -> None:
    answers = iter([problem("badNonce", "stale"), problem("badNonce", "stale"), ok({"a": 1})])
    server.routes["/thing"] = lambda seen: next(answers)
    poster = poster_for(server, key)
    poster.account = server.base + "/acct/1"
    payload = messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="a.example")
    assert poster.post(server.base + "/thing", payload).json() == {"a": 1}
    sent = [s.jws() for s in server.posts("/thing")]
    assert len(sent) == 3
    nonces = [s.signature.combined.nonce for s in sent]
    signatures = [s.signature.signature for s in sent]
    assert len(set(nonces)) == 3 and len(set(signatures)) == 3
    for signed in sent:
        assert signed.verify(key.public_key())
        assert signed.signature.combined.kid == server.base + "/acct/1"
        assert signed.signature.combined.url == server.base + "/thing"
        assert json.loads(signed.payload) == {"type": "dns", "value": "a.example"}
    # The nonce of each badNonce answer is the one the next attempt used: one HEAD in all.
    assert [s.method for s in server.seen].count("HEAD") == 1


def test_bad_nonce_retries_are_bounded(server: Server, key: jose.JWK) -> None:
    server.routes["/thing"] = lambda seen: problem("badNonce", "stale")
    with pytest.raises(messages.Error) as caught:
        poster_for(server, key, retries=2).post_as_get(server.base + "/thing")
    assert caught.value.code == "badNonce"
    assert len(server.posts("/thing")) == 3


def test_post_as_get_and_new_account_signing(server: Server, key: jose.JWK) -> None:
    server.routes["/thing"] = lambda seen: ok({})
    poster = poster_for(server, key)
    poster.post_as_get(server.base + "/thing")  # no account yet: jwk
    poster.account = server.base + "/acct/7"
    poster.post(server.base + "/thing", None, by_key=True)  # newAccount: jwk always
    poster.post_as_get(server.base + "/thing")
    first, by_key, with_kid = server.posts("/thing")
    for seen in (first, by_key, with_kid):
        assert seen.headers["Content-Type"] == "application/jose+json"
        assert seen.headers["User-Agent"] == "acme-agent/test"
        assert seen.jws().payload == b""
    assert first.jws().signature.combined.jwk == key.public_key()
    assert by_key.jws().signature.combined.kid is None
    assert with_kid.jws().signature.combined.kid == server.base + "/acct/7"
    assert with_kid.jws().signature.combined.jwk is None


def test_nonces_are_never_reused_across_threads(server: Server, key: jose.JWK) -> None:
    used: list[bytes] = []

    def thing(seen: Seen) -> Answer:
        used.append(seen.jws().signature.combined.nonce)
        return ok({})

    server.routes["/thing"] = thing
    poster = poster_for(server, key)

    def work() -> None:
        for _ in range(10):
            poster.post_as_get(server.base + "/thing")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(used) == 80 and len(set(used)) == 80


def test_oversized_body_is_refused(server: Server, key: jose.JWK) -> None:
    server.routes["/big"] = lambda seen: (200, {}, b"x" * (MAX_RESPONSE_BYTES + 1))
    server.routes["/fits"] = lambda seen: (200, {}, b"x" * MAX_RESPONSE_BYTES)
    poster = poster_for(server, key)
    assert len(poster.post_as_get(server.base + "/fits").body) == MAX_RESPONSE_BYTES
    with pytest.raises(ResponseTooLarge) as caught:
        poster.post_as_get(server.base + "/big")
    error = explain(caught.value, during="downloading the certificate", subject="www")
    assert str(error) == (
        f"www: downloading the certificate: unexpected answer from the CA: the response to "
        f"{server.base}/big was larger than 1048576 bytes"
    )


def test_problem_document_becomes_the_same_ca_error(server: Server, key: jose.JWK) -> None:
    server.routes["/order"] = lambda seen: problem("rejectedIdentifier", "no: bad.example", 403)
    poster = poster_for(server, key)
    with pytest.raises(messages.Error) as caught:
        poster.post(server.base + "/order", None)
    error = explain(caught.value, during="creating the order", subject="www")
    assert str(error) == (
        "www: creating the order: the CA said rejectedIdentifier: no: bad.example -> the CA will "
        "not issue for this name: check the domain is allowed for your account on the CA "
        "(pre-approved or in scope), or remove it from the certificate"
    )
    assert not error.retryable and error.problem_type == "rejectedIdentifier"
    assert poster.last_status == 403


def test_non_problem_error_says_status_and_content_type(server: Server, key: jose.JWK) -> None:
    server.routes["/order"] = lambda seen: (
        502,
        {"Content-Type": "text/html; charset=utf-8", "Retry-After": "7"},
        b"<html>502 Bad Gateway</html>",
    )
    poster = poster_for(server, key)
    with pytest.raises(acme_errors.ClientError) as caught:
        poster.post(server.base + "/order", None)
    error = explain(caught.value, during="creating the order", subject="f")
    assert str(error) == (
        "f: creating the order: unexpected answer from the CA: "
        "HTTP 502 with a non-problem body (text/html)"
    )
    assert poster.last_status == 502 and poster.last_retry_after == "7"


def test_conflict_names_the_existing_resource(server: Server, key: jose.JWK) -> None:
    server.routes["/new-acct"] = lambda seen: (409, {"Location": server.base + "/acct/3"}, b"")
    with pytest.raises(acme_errors.ConflictError) as caught:
        poster_for(server, key).post(server.base + "/new-acct", None, by_key=True)
    assert caught.value.location == server.base + "/acct/3"


def test_challenge_answer_without_up_link_is_fine(server: Server, key: jose.JWK) -> None:
    base = server.base
    directory = {"newNonce": base + "/nonce", "newAccount": base + "/new-acct"}
    challenge = {"type": "http-01", "url": base + "/chall/1", "token": "A" * 43}
    server.routes["/dir"] = lambda seen: ok(directory)
    server.routes["/chall/1"] = lambda seen: ok({**challenge, "status": "processing"})
    client = AcmeClient(base + "/dir", key, account_uri=base + "/acct/1")
    body = messages.ChallengeBody.from_json({**challenge, "status": "pending"})
    client.answer(Challenge("a.example", "A" * 43, "unused", body), "a")
    (answered,) = server.posts("/chall/1")
    assert json.loads(answered.jws().payload) == {}
    assert answered.jws().signature.combined.kid == base + "/acct/1"

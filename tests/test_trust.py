"""Trust boundaries (issue 16): Redis is storage, not authority. Whoever can write to the
fleet's Redis (a test attacker with its own pebble account) can neither have the fleet
answer its challenges, nor plant a certificate, nor stop the renewals with a version or a
lock that makes no sense."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent import keys
from agent.acme.client import AcmeClient, account_key_pem_new
from agent.localca import LocalCA
from tests.conftest import require_binary
from tests.daemon_proc import DaemonProc
from tests.redis_server import RedisServer
from tests.test_cluster import Host, make_host

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_binary("redis-server", "redis-server")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def attacker_redis(server: RedisServer) -> Any:
    """Write access to the fleet's Redis, and nothing else (no key_file)."""
    return redis.Redis.from_url(server.url, password=server.password, decode_responses=True)


def live_issuer(host: Host, name: str = "www") -> str:
    pem = (host.dir / "state" / "live" / name / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).issuer.rfc4514_string()


def test_a_redis_writer_cannot_have_the_fleet_answer_its_challenge(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    """The attacker orders the fleet's domain under its own account and writes its key
    authorization into Redis: the fleet's responder answers with the fleet account's
    thumbprint only, so the CA refuses the attacker's validation."""
    host = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"])
    assert host.renew().returncode == 0  # the fleet has an account (and its thumbprint)
    daemon = DaemonProc(host.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"HTTP-01 responder listening")
        attacker = AcmeClient(pebble.directory_url, account_key_pem_new(),
                              ca_bundle=str(pebble.ca_bundle))  # fmt: skip
        attacker.register(None, (pebble.eab_kid, pebble.eab_hmac_key))
        key = keys.generate_key("ec-p256")
        order = attacker.new_order(keys.make_csr(key, ("www.fleet.example.com",)), "evil")
        (authz,) = [attacker.authorization(url, "evil") for url in order.authorizations]
        assert authz.http01 is not None
        challenge = authz.http01
        attacker_redis(redis_server).set(f"fleet:http01:{challenge.token}",
                                         challenge.key_authorization, ex=600)  # fmt: skip
        attacker.answer(challenge, "evil")
        deadline = time.monotonic() + 20
        while (state := attacker.authorization(authz.url, "evil")).status == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state.status == "invalid", state.error
        assert "key authorization" in state.error.lower() or "expected" in state.error.lower()
    finally:
        assert daemon.stop() == 0


def evil_chain(leaf_pem: bytes) -> tuple[bytes, x509.Certificate]:
    """A certificate by "Evil Root CA" for the fleet's public key and names, valid to 2099."""
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Evil Root CA")])
    now = dt.datetime.now(dt.UTC)

    def build(subject: x509.Name, public: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(name)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(dt.datetime(2099, 1, 1, tzinfo=dt.UTC)))  # fmt: skip

    root = build(name, root_key.public_key()).sign(root_key, hashes.SHA256())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    forged = (
        build(x509.Name([]), leaf.public_key())
        .add_extension(san, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = forged.public_bytes(serialization.Encoding.PEM)
    return pem + root.public_bytes(serialization.Encoding.PEM), forged


def test_a_planted_certificate_is_never_installed_and_a_huge_version_stops_nothing(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    a = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"])
    b = make_host(tmp_path, pebble, redis_server, "b", pebble.http_port, ["www"])
    assert a.renew().returncode == 0
    issuer = live_issuer(a)
    attacker = attacker_redis(redis_server)
    record = attacker.hgetall("fleet:cert:www")
    fullchain, forged = evil_chain(record["fullchain"].encode())
    attacker.hset("fleet:cert:www", mapping={  # the sealed key is kept: "it carries our key"
        "fullchain": fullchain.decode(), "serial": f"{forged.serial_number:x}",
        "not_after": forged.not_valid_after_utc.isoformat(), "version": "999999999999",
    })  # fmt: skip
    for host in (a, b):  # a has the real one; b has none yet and must not take this one
        result = host.renew()
        assert result.returncode == 0, result.stderr
        assert "does not carry a valid MAC" in result.stderr
        assert live_issuer(host) == issuer and "Evil" not in live_issuer(host)
    # b ordered its own (the forged record replaced under its lease); a adopts that one
    assert attacker.hget("fleet:cert:www", "version") != "999999999999"
    result = a.renew("--force")
    assert result.returncode == 0, result.stderr
    assert "Evil" not in (a.dir / "deployed" / "www.pem").read_text()
    check = a.run("check")
    assert check.returncode == 0, check.stdout


def test_a_lock_without_ttl_is_taken_over_after_the_lease(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    host = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"], lease="5s")
    attacker_redis(redis_server).set("fleet:lock:www", "1 evil-host 1 x")  # no TTL
    first = host.renew()
    assert "evil-host is renewing it" in first.stdout
    assert "without a sensible TTL" in first.stderr
    time.sleep(5.5)
    second = host.renew()
    assert second.returncode == 0 and "www: issued" in second.stdout, second.stderr

"""Trust boundaries (issue 16): Redis is storage, not authority. Whoever can write to the
fleet's Redis (a test attacker with its own pebble account) can neither have the fleet
answer its challenges, nor plant a certificate, nor stop the renewals with a version or a
lock that makes no sense."""

from __future__ import annotations

import datetime as dt
import time
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
    authorization into Redis: the fleet's responder answers only for the thumbprints of
    the fleet's accounts, so it does not answer, and the CA refuses the validation."""
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
        # Not answered at all (a token for an account that is not one of the fleet's).
        assert "returned 404" in state.error.lower(), state.error
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


def test_a_forged_lock_is_taken_over_and_a_replayed_one_after_the_lease(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    from tests.test_cluster import cluster_settings

    host = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"], lease="5s")
    attacker = attacker_redis(redis_server)
    attacker.set("fleet:lock:www", "1 evil-host 1 x")  # no TTL, no MAC (or an older
    first = host.renew()  # acme-agent's): honoured for at most the lease, then taken over
    assert (
        "evil-host is renewing it" in first.stdout and "without this cluster's MAC" in first.stderr
    )
    assert "without a sensible TTL" in first.stderr
    time.sleep(5.5)
    first = host.renew()
    assert first.returncode == 0 and "www: issued" in first.stdout, first.stderr
    # An authentic lock value seen earlier, written back without a TTL: it expires in
    # `lease` and is taken over then.
    from agent.fleet.cluster import Lease, RedisCluster

    cluster = RedisCluster(cluster_settings(redis_server, tmp_path, key_prefix="fleet:"))
    lease = cluster.acquire("www")
    assert isinstance(lease, Lease)
    value = lease.value
    lease.release()
    attacker.set("fleet:lock:www", value)
    second = host.renew("--force")
    assert "is renewing it" in second.stdout and "without a sensible TTL" in second.stderr
    time.sleep(5.5)
    third = host.renew("--force")
    assert third.returncode == 0 and "www: issued" in third.stdout, third.stderr
    attacker.set("fleet:fence", "not a number")  # a poisoned fence counter is repaired
    fourth = host.renew("--force")
    assert fourth.returncode == 0 and "www: issued" in fourth.stdout, fourth.stderr


def test_poisoned_values_in_redis_are_refused_not_raised(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    """A non-hex MAC, bytes that are not UTF-8, a changed account URL, a forged
    deactivation note: each is ignored with a line, never an exception, and the renewal
    works."""
    host = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"])
    assert host.renew().returncode == 0
    attacker = attacker_redis(redis_server)
    raw = redis.Redis.from_url(redis_server.url, password=redis_server.password)
    attacker.hset("fleet:cert:www", "mac", "\u00e9" * 64)
    (key,) = attacker.keys("fleet:account:*")
    uri = attacker.hget(key, "uri")
    attacker.hset(key, "uri", "https://127.0.0.1:1/my-account/evil")
    attacker.hset(key, "deactivated", uri)
    raw.set("fleet:lock:api", b"\xff\xfe not utf-8")
    result = host.renew("--force")
    assert result.returncode == 0 and "www: issued" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    account = host.store.load_account(pebble.directory_url)
    assert account is not None and account.uri == uri  # the host kept its own account


# -- the CA's URLs ------------------------------------------------------------------------


def test_a_redirect_of_a_signed_request_is_never_followed(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 307 from newOrder to a clear-text address would deliver the signed request there:
    the agent follows no redirect of a signed request (a listener on that address proves
    nothing reached it)."""
    import socket

    from tests.conftest import through
    from tests.faultproxy import Fault, FaultProxy

    with socket.socket() as trap:
        trap.bind(("127.0.0.2", 0))
        trap.listen()
        trap.settimeout(0.5)
        target = f"http://127.0.0.2:{trap.getsockname()[1]}/order-plz"
        proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
        try:
            proxy.faults = [Fault("status", status=307, path="/order-plz", json=False,
                                  headers=[("Location", target)])]  # fmt: skip
            setup = through(tmp_path, pebble, proxy)
            assert setup.renew() == 1
        finally:
            proxy.stop()
        with pytest.raises(TimeoutError):
            trap.accept()
    err = capsys.readouterr().err
    assert "signed requests are never redirected" in err and target in err


def test_an_http_endpoint_in_the_directory_is_refused(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tests.conftest import through
    from tests.faultproxy import Fault, FaultProxy

    def clear_text(body: bytes) -> bytes:
        directory = json.loads(body)
        directory["newOrder"] = "http://acme.invalid/new-order"
        return json.dumps(directory).encode()

    proxy = FaultProxy(tmp_path / "proxy", pebble.directory_url, pebble.ca_bundle).start()
    try:
        proxy.faults = [Fault("replace", path="/dir", method="GET", transform=clear_text)]
        setup = through(tmp_path, pebble, proxy)
        assert setup.renew() == 1
    finally:
        proxy.stop()
    err = capsys.readouterr().err
    assert "the CA names http://acme.invalid/new-order: only https:// URLs are used" in err


# -- local files ---------------------------------------------------------------------------


def test_a_planted_agent_package_in_the_working_directory_never_runs(
    tmp_path: Path, pebble: LocalCA
) -> None:
    """The daemon started from a directory holding an ``agent/`` package (as the console
    script or systemd start it, the daemon itself does not import from there): its renewal
    worker must not import it either."""
    from tests.conftest import cert_table, write_config

    planted = tmp_path / "cwd"
    (planted / "agent" / "cli").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    for init in ("agent/__init__.py", "agent/cli/__init__.py"):
        (planted / init).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (planted / "agent" / "cli" / "worker.py").write_text(f"open({str(marker)!r}, 'w')\n")
    setup = write_config(tmp_path, pebble, cert_table("p", "p.example.com"))
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log", cwd=planted, python_flags=("-P",))
    try:
        daemon.wait_for(r"p: installed serial", timeout=30)
    finally:
        assert daemon.stop() == 0
    assert not marker.exists()


def test_patterns_do_not_accept_a_trailing_newline(tmp_path: Path) -> None:
    from agent.config import load
    from agent.errors import ConfigError
    from agent.model import TOKEN_RE

    assert TOKEN_RE.match("A" * 43) and not TOKEN_RE.match("A" * 43 + "\n")
    path = tmp_path / "agent.toml"  # (a domain is normalised: stripped and lower-cased)
    path.write_text('[acme]\ndirectory = "https://ca/dir"\n[[certificate]]\n'
                    'name = "www\\n"\ndomains = ["www.example.com"]\n')  # fmt: skip
    with pytest.raises(ConfigError, match="name"):
        load(path)


NOBODY = 65534


@pytest.mark.parametrize("how", ["group-writable", "foreign owner", "symlink to foreign"])
def test_a_configuration_another_user_could_write_is_refused(
    tmp_path: Path, pebble: LocalCA, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from agent.cli.main import main
    from tests.conftest import cert_table, write_config

    setup = write_config(tmp_path, pebble, cert_table("c", "c.example.com"))
    config = setup.config
    if how == "group-writable":  # root:www-data 0664, as a "shared" edit setup leaves it
        os.chown(config, 0, 33)
        config.chmod(0o664)
        said = "is writable by its group (owner root, mode 0664)"
    elif how == "foreign owner":
        os.chown(config, NOBODY, NOBODY)
        said = "is owned by another user (owner nobody"
    else:
        target = tmp_path / "theirs.toml"
        target.write_text(config.read_text())
        os.chown(target, NOBODY, NOBODY)
        config = tmp_path / "link.toml"
        config.symlink_to(target)
        said = f"{target} is owned by another user"
    assert main(["--config", str(config), "renew"]) == 2
    err = capsys.readouterr().err
    assert said in err and "fix with:" in err and "Traceback" not in err
    assert not setup.live("c").exists()


def test_a_drop_in_another_user_wrote_into_an_open_certs_dir_is_that_certificates_fault(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """certs_dir 0777: a drop-in with a [deploy] hook written there by another user would
    run as root. It is refused, that certificate only (the main file's one renews); the
    sticky, root-owned /tmp above is fine."""
    import json
    import os
    import sys

    from agent.cli.main import main
    from tests.conftest import cert_table, write_config

    certs = tmp_path / "certs.d"
    certs.mkdir()
    certs.chmod(0o777)
    ran = tmp_path / "hook-ran"
    hook = json.dumps([sys.executable, "-c", f"open({str(ran)!r}, 'w')"])
    evil = certs / "evil.toml"
    evil.write_text(f'domains = ["evil.example.com"]\n[deploy]\nhook = {hook}\n')
    os.chown(evil, NOBODY, NOBODY)
    setup = write_config(tmp_path, pebble, cert_table("main", "main.example.com"))
    setup.config.write_text(f'certs_dir = "{certs}"\n' + setup.config.read_text())
    assert main(["--config", str(setup.config), "renew"]) == 1
    err = capsys.readouterr().err
    assert f"{certs} is writable by group and others (owner root, mode 0777)" in err
    assert f"chmod go-w {certs}" in err
    assert setup.live("main").exists() and not setup.live("evil").exists() and not ran.exists()
    assert main(["--config", str(setup.config), "validate"]) != 0


ATTACKER = """
import os, sys, time
webroot, secret, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    for path in (os.path.join(webroot, ".well-known"),
                 os.path.join(webroot, ".well-known", "acme-challenge")):
        try:
            os.rename(path, path + f".old-{n}")
            os.symlink(secret, path)
            n += 1
        except OSError:
            pass
    time.sleep(0.0005)
"""


def test_the_webroot_owner_cannot_redirect_the_agents_writes(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The webroot belongs to www-data, who swaps ``.well-known`` (and what is below) for
    links to a root-only folder in a tight loop while the agent renews: nothing is ever
    written there or made readable, and every run ends with a clear outcome."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from agent.cli.main import main
    from tests.conftest import cert_table, write_config

    require_binary("setpriv", "util-linux")
    webroot = Path(tempfile.mkdtemp(prefix="acme-agent-race-", dir="/tmp"))
    secret = Path(tempfile.mkdtemp(prefix="acme-agent-secret-", dir="/tmp"))  # root, 0700
    (secret / "shadow").write_text("root only\n")
    (secret / "shadow").chmod(0o600)
    os.chown(webroot, 33, 33)
    webroot.chmod(0o755)
    attacker = subprocess.Popen(
        ["setpriv", "--reuid=33", "--regid=33", "--clear-groups", sys.executable, "-c",
         ATTACKER, str(webroot), str(secret), "8"],
    )  # fmt: skip
    try:
        http01 = f'mode = "webroot"\nwebroot = "{webroot}"\n'
        setup = write_config(tmp_path, pebble, cert_table("r", "r.example.com"), http01=http01)
        text = setup.config.read_text().replace("issuance_timeout = 30", "issuance_timeout = 2")
        setup.config.write_text(text)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert main(["--config", str(setup.config), "renew", "--force"]) in (0, 1)
    finally:
        attacker.wait(timeout=30)
    try:
        assert sorted(p.name for p in secret.iterdir()) == ["shadow"]
        assert (secret / "shadow").stat().st_mode & 0o777 == 0o600
        assert secret.stat().st_mode & 0o777 == 0o700
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "is a symlink or not a folder; refusing to follow it" in err  # it did swap
    finally:
        shutil.rmtree(webroot, ignore_errors=True)
        shutil.rmtree(secret, ignore_errors=True)


def test_the_file_checked_is_the_file_read_through_symlinked_folders_and_dotdot(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """/etc/acme-agent -> /opt/acme/etc with certs_dir = "../certs.d": the drop-ins read are
    in /opt/acme/certs.d, and those are the ones checked (a textual normalisation checked
    /etc/certs.d, found nothing, and read another user's drop-in)."""
    import os

    from agent.cli.main import main
    from tests.conftest import cert_table, write_config

    real = tmp_path / "opt" / "etc"
    real.mkdir(parents=True)
    (tmp_path / "opt" / "certs.d").mkdir()
    evil = tmp_path / "opt" / "certs.d" / "evil.toml"
    evil.write_text('domains = ["evil.example.com"]\n')
    os.chown(evil, NOBODY, NOBODY)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "acme-agent").symlink_to(real)
    setup = write_config(real, pebble, cert_table("main", "main.example.com"))
    setup.config.write_text('certs_dir = "../certs.d"\n' + setup.config.read_text())
    config = tmp_path / "etc" / "acme-agent" / "agent.toml"
    assert main(["--config", str(config), "renew"]) == 1
    err = capsys.readouterr().err
    assert f"{evil} is owned by another user" in err
    assert not (real / "state" / "live" / "evil").exists()


def test_an_unauthenticated_account_record_is_never_replaced_by_a_new_registration(
    tmp_path: Path, pebble: LocalCA, redis_server: RedisServer
) -> None:
    """A fleet upgrading from a version without MACs: a new host with no account of its own
    must not register another one (single-use EAB) over the fleet's record."""
    a = make_host(tmp_path, pebble, redis_server, "a", pebble.http_port, ["www"])
    assert a.renew().returncode == 0
    attacker = attacker_redis(redis_server)
    (key,) = attacker.keys("fleet:account:*")
    attacker.hdel(key, "mac")  # as an older acme-agent wrote it
    uri = attacker.hget(key, "uri")
    b = make_host(tmp_path, pebble, redis_server, "b", pebble.http_port, ["api"])
    result = b.renew()
    assert result.returncode == 1 and "not registering another" in result.stderr, result.stderr
    assert attacker.hget(key, "uri") == uri and b.store.load_account(pebble.directory_url) is None
    assert a.renew("--force").returncode == 0  # a host that has the account republishes it
    assert b.renew().returncode == 0  # and the new host takes it
    account = b.store.load_account(pebble.directory_url)
    assert account is not None and account.uri == uri


def test_a_root_group_writable_configuration_is_root_s_own(tmp_path: Path, pebble: LocalCA) -> None:
    import os

    from agent.config import load
    from tests.conftest import cert_table, write_config

    setup = write_config(tmp_path, pebble, cert_table("g", "g.example.com"))
    os.chown(setup.config, 0, 0)
    setup.config.chmod(0o660)
    assert load(setup.config).certificates[0].name == "g"

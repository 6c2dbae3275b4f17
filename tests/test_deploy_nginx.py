"""Deploy with a real nginx: HTTP-01 through nginx, safe reload, rollback, hooks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from agent.localca import LocalCA, free_port
from tests.conftest import Setup, require_binary, write_config
from tests.nginx import Nginx, snippet

pytestmark = pytest.mark.integration

HOOK = Path(__file__).parent / "hook_recorder.py"


def deploy_table(ngx: Nginx, extra: str = "") -> str:
    return (
        f'[certificate.deploy]\nfullchain = "{ngx.fullchain}"\nkey = "{ngx.key}"\n'
        f'reload = "nginx"\ntest_command = {json.dumps(ngx.test_command())}\n'
        f"reload_command = {json.dumps(ngx.reload_command())}\n"
        f'verify = "127.0.0.1:{ngx.tls_port}"\nverify_timeout = 10\n{extra}\n'
    )


def cert_with_deploy(ngx: Nginx, name: str = "www", extra: str = "") -> str:
    return (
        f'[[certificate]]\nname = "{name}"\ndomains = ["{name}.example.com", "example.net"]\n'
        + deploy_table(ngx, extra)
    )


def start_nginx(tmp_path: Path, pebble: LocalCA, challenge_snippet: str) -> Nginx:
    """nginx on pebble's HTTP-01 port, with the given variant of the shipped snippet."""
    require_binary("nginx", "nginx-light")
    ngx = Nginx(tmp_path / "nginx", pebble.http_port, challenge_snippet)
    ngx.dir.mkdir()
    return ngx.start()


def proxied_nginx(tmp_path: Path, pebble: LocalCA) -> tuple[Nginx, str]:
    """nginx proxying the challenge path to the agent (variant 1), and the [http01] body."""
    agent_port = free_port()
    ngx = start_nginx(tmp_path, pebble, snippet("proxy", proxy_port=agent_port))
    return ngx, f'mode = "standalone"\nlisten = "127.0.0.1:{agent_port}"\n'


@pytest.fixture
def proxied(tmp_path: Path, pebble: LocalCA) -> Iterator[tuple[Setup, Nginx]]:
    """nginx on pebble's HTTP-01 port proxying the challenge path to the agent (variant 1)."""
    ngx, http01 = proxied_nginx(tmp_path, pebble)
    setup = write_config(tmp_path, pebble, cert_with_deploy(ngx), http01=http01)
    yield setup, ngx
    ngx.stop()


def live_serial(setup: Setup, name: str = "www") -> int:
    cert = x509.load_pem_x509_certificate((setup.live(name) / "cert.pem").read_bytes())
    return cert.serial_number


def test_http01_through_nginx_proxy_then_served_and_chain_verifies(
    proxied: tuple[Setup, Nginx],
) -> None:
    setup, ngx = proxied
    assert setup.renew() == 0
    assert ngx.serial("www.example.com") == live_serial(setup)
    # The served chain verifies against pebble's root.
    root = setup.dir / "pebble-root.pem"
    root.write_bytes(setup.ca.root_pem())
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", ngx.tls_port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="www.example.com") as tls,
    ):
        assert tls.version()


def test_renewal_replaces_served_certificate_same_master(proxied: tuple[Setup, Nginx]) -> None:
    setup, ngx = proxied
    assert setup.renew() == 0
    first, master = live_serial(setup), ngx.master_pid()
    assert setup.renew("--force") == 0
    assert live_serial(setup) != first
    assert ngx.serial("www.example.com") == live_serial(setup)
    assert ngx.master_pid() == master


def test_broken_nginx_config_rolls_back_then_retries_without_new_order(
    proxied: tuple[Setup, Nginx], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, ngx = proxied
    assert setup.renew() == 0
    served = ngx.serial("www.example.com")
    key_before, chain_before = ngx.key.read_bytes(), ngx.fullchain.read_bytes()
    ngx.write_conf(extra="this_is_not_a_directive on;")
    assert setup.renew("--force") == 1
    err = capsys.readouterr()
    assert "config test failed, not reloaded" in err.err
    assert "issued, not deployed" in err.out
    assert (ngx.key.read_bytes(), ngx.fullchain.read_bytes()) == (key_before, chain_before)
    assert ngx.serial("www.example.com") == served
    assert setup.versions("www") == ["0001", "0002"]  # the new one is kept

    ngx.write_conf()  # the operator fixes nginx; the next run deploys the kept certificate
    assert setup.renew() == 0
    assert "www: deployed" in capsys.readouterr().out
    assert setup.versions("www") == ["0001", "0002"]  # no new order
    assert ngx.serial("www.example.com") == live_serial(setup)


def test_webroot_variant(tmp_path: Path, pebble: LocalCA) -> None:
    """As on a Debian host: a webroot root owns (0755, like /var/www/acme), nginx workers
    as www-data, the agent under umask 077 creating .well-known/acme-challenge/ in it."""
    webroot = Path(tempfile.mkdtemp(prefix="acme-agent-webroot-", dir="/tmp"))
    os.chmod(webroot, 0o755)
    ngx = start_nginx(tmp_path, pebble, snippet("webroot", webroot=webroot))
    try:
        http01 = f'mode = "webroot"\nwebroot = "{webroot}"\n'
        setup = write_config(tmp_path, pebble, cert_with_deploy(ngx), http01=http01)
        assert setup.renew() == 0
        assert ngx.serial("www.example.com") == live_serial(setup)
        for level in (webroot / ".well-known", webroot / ".well-known" / "acme-challenge"):
            assert level.stat().st_mode & 0o777 == 0o755
        assert list((webroot / ".well-known" / "acme-challenge").iterdir()) == []  # cleaned up
    finally:
        ngx.stop()
        shutil.rmtree(webroot, ignore_errors=True)


def test_owner_group_mode_and_hooks(tmp_path: Path, pebble: LocalCA) -> None:
    ngx, http01 = proxied_nginx(tmp_path, pebble)
    record = tmp_path / "hooks.jsonl"
    hook = [sys.executable, str(HOOK), str(record)]
    extra = (
        f'owner = "root"\ngroup = "www-data"\nmode = "0640"\nhook = {json.dumps([*hook, "cert"])}\n'
    )
    certs = cert_with_deploy(ngx, extra=extra)
    hooks = f"[hooks]\npre = {json.dumps([*hook, 'pre'])}\npost = {json.dumps([*hook, 'post'])}\n"
    try:
        setup = write_config(tmp_path, pebble, hooks + certs, http01=http01)
        assert setup.renew() == 0
    finally:
        ngx.stop()
    key_stat = ngx.key.stat()
    assert key_stat.st_mode & 0o777 == 0o640
    import grp

    assert key_stat.st_gid == grp.getgrnam("www-data").gr_gid
    assert ngx.fullchain.stat().st_mode & 0o777 == 0o644
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["argv"][-1] for c in calls] == ["pre", "cert", "post"]
    cert_env = calls[1]["env"]
    assert cert_env["ACME_AGENT_CERT_NAME"] == "www"
    assert cert_env["ACME_AGENT_DOMAINS"] == "www.example.com example.net"
    assert cert_env["ACME_AGENT_FULLCHAIN"] == str(ngx.fullchain)
    assert cert_env["ACME_AGENT_KEY"] == str(ngx.key)
    assert calls[2]["env"]["ACME_AGENT_RENEWED"] == "www"
    assert calls[2]["env"]["ACME_AGENT_FAILED"] == ""
    dumped = record.read_text()
    assert pebble.eab_hmac_key not in dumped
    assert "PRIVATE KEY" not in dumped


def test_hook_timeout_is_reported_and_certificate_kept(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "fullchain.pem"
    certs = (
        '[[certificate]]\nname = "h"\ndomains = ["h.example.com"]\n'
        f'[certificate.deploy]\nfullchain = "{target}"\nhook = ["sleep", "5"]\ntimeout = 0.5\n'
    )
    setup = write_config(tmp_path, pebble, certs)
    assert setup.renew() == 1
    assert "timed out after" in capsys.readouterr().err
    assert target.read_bytes() == (setup.live("h") / "fullchain.pem").read_bytes()
    assert setup.renew() == 0  # deployed already: the hook is not a reason to reissue
    assert setup.versions("h") == ["0001"]


def test_one_reload_for_several_certificates(tmp_path: Path, pebble: LocalCA) -> None:
    ngx, http01 = proxied_nginx(tmp_path, pebble)
    counter = tmp_path / "reloads.jsonl"
    wrapped = [sys.executable, str(HOOK), str(counter), *ngx.reload_command()]
    certs = ""
    for name in ("a", "b", "c"):
        out = tmp_path / name
        certs += (
            f'[[certificate]]\nname = "{name}"\ndomains = ["{name}.example.com"]\n'
            f'[certificate.deploy]\nfullchain = "{out}/fc.pem"\nkey = "{out}/key.pem"\n'
            f'reload = "nginx"\ntest_command = {json.dumps(ngx.test_command())}\n'
            f"reload_command = {json.dumps(wrapped)}\n"
        )
    try:
        setup = write_config(tmp_path, pebble, certs, http01=http01)
        assert setup.renew() == 0
    finally:
        ngx.stop()
    assert len(counter.read_text().splitlines()) == 1


def test_hook_recorder_exists() -> None:
    assert os.access(HOOK, os.R_OK)

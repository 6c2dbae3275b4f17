"""ARI (RFC 9773) and profiles against acme2certifier, an ACME server that offers both.

acme2certifier validates HTTP-01 on port 80 and resolves names through DNS on port 53, so
the agent's responder listens on 127.0.0.1:80 and pebble-challtestsrv on 127.0.0.1:53.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509

from agent.acme.ari import ari_cert_id
from agent.store.ari import load_state
from agent.store.certs import Store
from tests.conftest import IN_CI, Setup, cert_table, require_binary, write_config

pytestmark = pytest.mark.integration


def _require_a2c_environment() -> None:
    require_binary("pebble-challtestsrv", "pebble")
    problems = []
    try:
        import acme2certifier  # noqa: F401
    except ImportError:
        problems.append("acme2certifier is not installed (pip install '.[test]')")
    if os.geteuid() != 0:
        problems.append("needs root (ports 80 and 53 on 127.0.0.1)")
    for port, kind in ((80, socket.SOCK_STREAM), (53, socket.SOCK_DGRAM)):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                problems.append(f"127.0.0.1:{port} is in use")
    if problems:
        if IN_CI:
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems) + " (under CI=true this is a failure)")


@pytest.fixture
def a2c(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """acme2certifier with [Renewalinfo] options from the test's ``renewal`` marker."""
    _require_a2c_environment()
    from tests.a2c import A2C

    marker = request.node.get_closest_marker("renewal")
    options = marker.kwargs if marker else {}
    server = A2C(tmp_path / "a2c", renewal={k: str(v) for k, v in options.items()}).start()
    yield server
    server.stop()


def setup_for(tmp_path: Path, server: Any, certs: str) -> Setup:
    ca = SimpleNamespace(
        eab_kid=server.eab_kid,
        eab_hmac_key=server.eab_hmac_key,
        directory_url=server.directory_url,
        ca_bundle=server.ca_bundle,
        http_port=80,
    )
    return write_config(tmp_path, ca, certs, acme_extra='email = "ops@example.com"\n')  # type: ignore[arg-type]


def live_cert(setup: Setup, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((setup.live(name) / "cert.pem").read_bytes())


def ari_requests(server: Any) -> int:
    return server.log_text().count("127.0.0.1 /acme/renewal-info/")  # one access line each


@pytest.mark.renewal(renewalthreshold_pctg=85, retry_after_timeout=2)
def test_future_window_respected_and_retry_after_paces_checks(
    tmp_path: Path, a2c: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # renew_before = 0.99: by lifetime alone the certificate would be due at once.
    certs = cert_table("w", "w.example.com") + "renew_before = 0.99\n"
    setup = setup_for(tmp_path, a2c, certs)
    assert setup.renew() == 0
    assert setup.renew() == 0
    out = capsys.readouterr().out
    assert "w: unchanged" in out and "ARI" in out
    assert setup.versions("w") == ["0001"]
    state = load_state(Store(setup.state), "w")
    assert state is not None and state.supported and state.start is not None
    cert = live_cert(setup, "w")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs((state.start - cert.not_valid_before_utc) - lifetime * 0.85).total_seconds() < 5
    # Retry-After: 2 -> no new ARI request before 2 s, one after.
    asked = ari_requests(a2c)
    assert setup.renew() == 0
    assert ari_requests(a2c) == asked
    time.sleep(2.2)
    assert setup.renew() == 0
    assert ari_requests(a2c) == asked + 1


@pytest.mark.renewal(renewalthreshold_pctg=0, renewal_window_duration=1)
def test_window_in_past_renews_now_and_sends_replaces(
    tmp_path: Path, a2c: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = setup_for(tmp_path, a2c, cert_table("p", "p.example.com"))
    assert setup.renew() == 0
    old = live_cert(setup, "p")
    # Issued an hour ago, as far as the agent knows (it orders no certificate again within
    # min(lifetime / 4, 10 min) of the last one unless forced: the guard against loops).
    facts_path = setup.live("p") / "facts.json"
    facts = json.loads(facts_path.read_text())
    facts["installed"] = "2000-01-01T00:00:00+00:00"
    facts_path.write_text(json.dumps(facts))
    time.sleep(1.5)  # the suggested window [issuance, issuance + 1 s] is now in the past
    assert setup.renew() == 0
    assert "ARI window in the past" in capsys.readouterr().err
    assert setup.versions("p") == ["0001", "0002"]
    assert live_cert(setup, "p").serial_number != old.serial_number
    assert json.dumps(ari_cert_id(old))[1:-1] in a2c.log_text()  # "replaces": "<id>"


def test_shortlived_profile_yields_short_certificate(tmp_path: Path, a2c: Any) -> None:
    certs = cert_table("s", "s.example.com") + 'profile = "shortlived"\n'
    certs += cert_table("c", "c.example.com") + 'profile = "classic"\n'
    setup = setup_for(tmp_path, a2c, certs)
    assert setup.renew() == 0
    short, classic = live_cert(setup, "s"), live_cert(setup, "c")
    assert (short.not_valid_after_utc - short.not_valid_before_utc).days <= 6
    assert (classic.not_valid_after_utc - classic.not_valid_before_utc).days >= 89


def test_unknown_profile_is_a_clear_error(
    tmp_path: Path, a2c: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = setup_for(tmp_path, a2c, cert_table("u", "u.example.com") + 'profile = "tiny"\n')
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "certificate[0].profile: the CA does not offer profile 'tiny'" in err
    assert "classic, shortlived" in err


def test_renewal_after_re_registration_sends_no_foreign_replaces(tmp_path: Path, a2c: Any) -> None:
    """The certificate in service belongs to the deactivated account: the renewal under the
    new one does not name it in ``replaces`` (RFC 9773 servers SHOULD refuse that); one
    under the same account does. The fault proxy in front of acme2certifier reads the
    orders."""
    from agent.cli.main import main
    from tests.faultproxy import FaultProxy

    proxy = FaultProxy(tmp_path / "proxy", a2c.directory_url, a2c.ca_bundle).start()
    try:
        ca = SimpleNamespace(eab_kid=a2c.eab_kid, eab_hmac_key=a2c.eab_hmac_key,
                             directory_url=proxy.directory_url,
                             ca_bundle=proxy.ca_bundle)  # fmt: skip
        setup = setup_for(tmp_path, ca, cert_table("r", "r.example.com"))
        assert setup.renew() == 0
        first = live_cert(setup, "r")
        assert setup.renew("--force") == 0  # same account, ARI answered: replaces
        second = live_cert(setup, "r")
        assert main(["--config", str(setup.config), "account", "deactivate", "--yes"]) == 0
        assert setup.renew("--force") == 0  # a new account: no replaces
        orders = [json.loads(r.payload) for r in proxy.posted("/acme/neworders")]
    finally:
        proxy.stop()
    assert [o.get("replaces") for o in orders] == [None, ari_cert_id(first), None]
    assert second.serial_number != first.serial_number
    assert setup.versions("r") == ["0001", "0002", "0003"]


def test_renewal_after_import_certbot(tmp_path: Path, a2c: Any) -> None:
    from agent.cli.main import main
    from tests.certbot_run import certbot_certonly

    letsencrypt = certbot_certonly(tmp_path, a2c.directory_url, a2c.ca_bundle, 80,
                                   (a2c.eab_kid, a2c.eab_hmac_key), "cb", "cb.example.com",
                                   email="ops@example.com")  # fmt: skip
    certs_dir = tmp_path / "certs.d"
    certs_dir.mkdir()
    setup = setup_for(tmp_path, a2c, "")
    setup.config.write_text(f'certs_dir = "{certs_dir}"\n' + setup.config.read_text())
    assert main(["--config", str(setup.config), "import-certbot", str(letsencrypt)]) == 0
    assert setup.renew("--force") == 0
    assert setup.versions("cb") == ["0001", "0002"]


def test_ari_and_the_account_belong_to_the_ca_that_issued_it(
    tmp_path: Path, a2c: Any, pebble: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several CAs: pebble ("default", no renewalInfo) refuses the name, acme2certifier (a
    fallback that offers ARI) issues it. The renewal information is asked of
    acme2certifier, the CA that issued the certificate in service, never of pebble."""
    from tests.conftest import BLOCKED

    eab = tmp_path / "a2c-eab.key"
    eab.write_text(a2c.eab_hmac_key)
    eab.chmod(0o600)
    table = (
        f'[ca.a2c]\ndirectory = "{a2c.directory_url}"\nca_bundle = "{a2c.ca_bundle}"\n'
        f'eab_kid = "{a2c.eab_kid}"\neab_hmac_key_file = "{eab}"\nemail = "ops@example.com"\n'
    )
    certs = cert_table("f", BLOCKED) + 'ca = ["default", "a2c"]\n'
    setup = write_config(tmp_path, pebble, certs, http01='mode = "standalone"\n'
                         'listen = "127.0.0.1:80"\n', acme_extra=table)  # fmt: skip
    assert setup.renew() == 0
    assert "trying [ca.a2c]" in capsys.readouterr().err
    state = load_state(Store(setup.state), "f")
    assert state is not None and state.supported  # pebble has no renewalInfo: from a2c
    asked = ari_requests(a2c)
    assert asked >= 1
    assert (
        not (setup.state / "ari" / "_no-ari.json").exists()
        or pebble.directory_url not in (setup.state / "ari" / "_no-ari.json").read_text()
    )

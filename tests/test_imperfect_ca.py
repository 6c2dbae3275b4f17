"""Imperfect CAs (issue 17): servers that deviate from RFC 8555 and RFC 9773 in small ways,
modelled by the fault proxy in front of a real pebble (which has no renewalInfo: the proxy
adds one, as a server that speaks RFC 9773 would)."""

from __future__ import annotations

import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from agent.acme.ari import ari_cert_id
from agent.cli.main import main
from agent.localca import LocalCA
from tests.certbot_run import certbot_certonly
from tests.conftest import Setup, cert_table, through
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def new_orders(proxy: FaultProxy) -> list[dict[str, object]]:
    return [json.loads(r.payload) for r in proxy.posted("/order-plz")]


def live_cert(setup: Setup, name: str = "f") -> x509.Certificate:
    return x509.load_pem_x509_certificate((setup.live(name) / "cert.pem").read_bytes())


def edit_json(change: object) -> object:
    def transform(body: bytes) -> bytes:
        data = json.loads(body)
        change(data)  # type: ignore[operator]
        return json.dumps(data).encode()

    return transform


# -- challenges -------------------------------------------------------------------------


def test_a_challenge_answer_without_up_link_is_fine(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    proxy.faults = [Fault("strip_link", path="/chalZ/", method="POST")]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    assert [r for r in proxy.records if r.action == "strip_link"]


def test_every_challenge_is_answered_and_all_failures_reported_together(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two of three names fail validation: both are named in one message, and the third
    name's challenge was answered all the same (the CA keeps it valid for the next order)."""

    def wrong_token(data: dict[str, object]) -> None:
        identifier = data.get("identifier")
        if isinstance(identifier, dict) and str(identifier.get("value", "")).startswith("bad"):
            for challenge in data["challenges"]:  # type: ignore[attr-defined]
                token = challenge["token"]
                # the first character: the last one carries padding bits, and a change
                # there may decode to the same token
                challenge["token"] = ("A" if token[0] != "A" else "B") + token[1:]

    proxy.faults = [Fault("replace", path="/authZ/", transform=edit_json(wrong_token))]
    certs = cert_table("m", "bad1.example.com", "good.example.com", "bad2.example.com")
    setup = through(tmp_path, pebble, proxy, certs)
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "m: validation failed for 2 of 3 names: bad" in err
    assert "bad1.example.com (invalid)" in err and "bad2.example.com (invalid)" in err
    assert "good.example.com" not in err.split("validation failed")[1]
    assert len(proxy.posted("/chalZ/")) == 3  # every pending challenge answered


# -- replaces (RFC 9773) ----------------------------------------------------------------


def test_replaces_is_sent_when_the_ca_answered_ari_for_a_certificate_of_this_account(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    proxy.ari = "window"
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    first = live_cert(setup)
    assert setup.renew("--force") == 0
    orders = new_orders(proxy)
    assert "replaces" not in orders[0] and orders[1]["replaces"] == ari_cert_id(first)


def test_replaces_is_sent_for_a_certificate_of_an_older_version(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    """facts.json from before the ordering account was recorded: it is taken for the
    account in use (a refusal would be retried without replaces anyway)."""
    proxy.ari = "window"
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    first = live_cert(setup)
    facts_path = setup.live("f") / "facts.json"
    facts = json.loads(facts_path.read_text())
    del facts["account"]
    facts_path.write_text(json.dumps(facts))
    assert setup.renew("--force") == 0
    assert new_orders(proxy)[1]["replaces"] == ari_cert_id(first)


@pytest.mark.parametrize(
    ("status", "problem"),
    [(409, "alreadyReplaced"), (400, "malformed"), (403, "unauthorized"), (404, "malformed")],
)
def test_a_refused_replaces_is_dropped_for_the_order_and_for_a_day(
    tmp_path: Path,
    pebble: LocalCA,
    proxy: FaultProxy,
    status: int,
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that cannot use ``replaces`` refuses the whole order: the same order goes
    again without it (certbot's renewals work there), and the CA is remembered for a day."""
    proxy.ari = "window"
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    proxy.faults = [Fault("status", path="/order-plz", payload='"replaces"', status=status,
                          problem=problem)]  # fmt: skip
    assert setup.renew("--force") == 0
    orders = new_orders(proxy)
    assert len(orders) == 3 and "replaces" in orders[1] and "replaces" not in orders[2]
    assert "refused the order with replaces" in caplog.text
    assert setup.renew("--force") == 0  # remembered: no refused order first
    assert len(new_orders(proxy)) == 4 and "replaces" not in new_orders(proxy)[3]
    assert setup.versions("f") == ["0001", "0002", "0003"]


def test_renewalinfo_404_means_no_replaces(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    """A server whose renewalInfo does not understand RFC 9773 certIDs (404): no ARI, and
    therefore no ``replaces`` it would refuse."""
    proxy.ari = "404"
    proxy.faults = [Fault("status", path="/order-plz", payload='"replaces"', status=400,
                          problem="malformed")]  # fmt: skip
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    assert setup.renew("--force") == 0
    assert [r for r in proxy.records if r.action == "ari"]  # it was asked
    assert all("replaces" not in order for order in new_orders(proxy))


def test_no_replaces_after_re_registration(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    """After ``account deactivate`` the next run registers anew; the certificate in service
    belongs to the old account, which RFC 9773 servers refuse in ``replaces``."""
    proxy.ari = "window"
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    assert cli(setup, "account", "deactivate", "--yes") == 0
    proxy.faults = [Fault("status", path="/order-plz", payload='"replaces"', status=403,
                          problem="unauthorized")]  # fmt: skip
    assert setup.renew("--force") == 0
    assert all("replaces" not in order for order in new_orders(proxy))
    assert not [r for r in proxy.records if r.action == "status"]


def test_no_replaces_for_a_certificate_imported_from_certbot(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    proxy.ari = "window"
    letsencrypt = certbot_certonly(tmp_path, proxy.directory_url, proxy.ca_bundle,
                                   pebble.http_port, (pebble.eab_kid, pebble.eab_hmac_key),
                                   "cb", "cb.example.com")  # fmt: skip
    certs_dir = tmp_path / "certs.d"
    certs_dir.mkdir()
    setup = through(tmp_path, pebble, proxy, certs="")
    setup.config.write_text(f'certs_dir = "{certs_dir}"\n' + setup.config.read_text())
    assert cli(setup, "import-certbot", str(letsencrypt)) == 0
    proxy.faults = [Fault("status", path="/order-plz", payload='"replaces"', status=403,
                          problem="unauthorized")]  # fmt: skip
    before = len(new_orders(proxy))
    assert setup.renew("--force", "--cert", "cb") == 0
    orders = new_orders(proxy)[before:]
    assert len(orders) == 1 and "replaces" not in orders[0]


# -- orders -----------------------------------------------------------------------------


def test_an_order_for_other_names_is_not_finalized(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    def other_names(data: dict[str, object]) -> None:
        data["identifiers"] = [{"type": "dns", "value": "old.example.com"}]

    proxy.faults = [Fault("replace", path="/order-plz", transform=edit_json(other_names))]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "is not the one requested (names not requested: old.example.com; requested " in err
    assert "names missing: f.example.com); not finalizing it" in err
    assert proxy.posted("/finalize-order/") == [] and not setup.live("f").exists()


def test_a_timed_out_order_is_resumed_not_ordered_again(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """A slow CA (ACM: "several minutes") keeps the order processing past issuance_timeout;
    the next run polls that order and downloads the certificate: one newOrder in all, so
    one charge."""

    def processing(data: dict[str, object]) -> None:
        if data.get("status") == "valid":
            data["status"] = "processing"
            data.pop("certificate", None)

    slow_until = time.monotonic() + 6
    proxy.faults = [
        Fault("replace", path=path, transform=edit_json(processing), until=slow_until)
        for path in ("/my-order/", "/finalize-order/")
    ]
    setup = through(tmp_path, pebble, proxy, extra="")
    setup.config.write_text(setup.config.read_text().replace("issuance_timeout = 30",
                                                             "issuance_timeout = 2"))  # fmt: skip
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "is still processing after 2 s" in err and "the next run resumes this order" in err
    pending = setup.state / "orders" / "f.json"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600  # it holds the new key
    time.sleep(max(0.0, slow_until - time.monotonic()))
    assert setup.renew() == 0
    assert "resuming the order" in capsys.readouterr().err
    assert len(proxy.posted("/order-plz")) == 1
    assert setup.versions("f") == ["0001"] and not pending.exists()


@pytest.mark.parametrize(
    "damage",
    ["garbage", "bad key", "csr of another key", "order gone", "finished long ago",
     "placed long ago", "foreign origin"],
)  # fmt: skip
def test_an_unusable_pending_order_gives_way_to_a_new_one(
    tmp_path: Path,
    pebble: LocalCA,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    """A kept order is resumed only when it can still give a newer certificate: anything
    else is set aside or forgotten, and a new order is placed in the same run."""
    from agent import keys
    from agent.model import PendingOrder
    from agent.store.certs import Store
    from agent.store.orders import save_pending

    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0  # an account, whose URL a pending order must carry
    first = live_cert(setup)
    orders = setup.state / "orders"
    account = Store(setup.state).load_account(proxy.directory_url)
    assert account is not None
    key = keys.generate_key("ec-p256")
    url = proxy.base + "/my-order/no-such-order"
    placed = datetime.now(UTC)
    if damage == "finished long ago":  # the order of the certificate in service
        key = keys.load_key_pem((setup.live("f") / "privkey.pem").read_bytes())
        url = proxy.base + proxy.posted("/my-order/")[0].path
    elif damage == "placed long ago":
        placed -= timedelta(days=2)
    elif damage == "foreign origin":
        url = "https://127.0.0.2:1/my-order/1"
    csr = keys.make_csr(key, ("f.example.com",))
    if damage == "csr of another key":
        csr = keys.make_csr(keys.generate_key("ec-p256"), ("f.example.com",))
    pending = PendingOrder("f", proxy.directory_url, account.uri, url, ("f.example.com",),
                           "ec-p256", keys.key_to_pem(key), csr, placed)  # fmt: skip
    save_pending(Store(setup.state), pending)
    if damage == "garbage":
        (orders / "f.json").write_bytes(b"\x00\xff not json")
    elif damage == "bad key":
        data = json.loads((orders / "f.json").read_text())
        (orders / "f.json").write_text(json.dumps({**data, "key_pem": "-----BEGIN junk"}))
    assert setup.renew("--force") == 0
    said = {
        "order gone": "an earlier run placed is gone",
        "finished long ago": "holds no newer certificate; placing a new one",
        "placed long ago": "was placed more than 1 day ago",
        "foreign origin": "is not on the CA's origin",
    }
    if damage in said:
        assert said[damage] in caplog.text
    else:
        assert "not a pending order; moved to f.json.corrupt-" in caplog.text
        assert list(orders.glob("f.json.corrupt-*"))
    assert not (orders / "f.json").exists() and setup.versions("f") == ["0001", "0002"]
    assert live_cert(setup).serial_number != first.serial_number


# -- read-only commands ------------------------------------------------------------------


def test_account_show_on_an_empty_state_asks_the_ca_nothing(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    setup = through(tmp_path, pebble, proxy)
    assert cli(setup, "account", "show") == 1
    assert "no ACME account for" in caplog.text and "'acme-agent register'" in caplog.text
    assert proxy.records == []  # no newAccount: single-use EAB credentials stay unspent

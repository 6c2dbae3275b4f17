"""CA and network faults through a fault-injecting proxy in front of a real pebble."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from agent.localca import LocalCA, free_port
from tests.certs import make_chain
from tests.conftest import through
from tests.daemon_proc import DaemonProc
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration


def faulted(proxy: FaultProxy, kind: str) -> list[float]:
    return [r.at for r in proxy.records if r.action == kind]


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", share=0.2, status=503),
        Fault("status", share=0.2, status=500, json=False),
        Fault("status", share=0.2, status=502, json=False, retry_after="0"),
        Fault("reset", share=0.2),
    ],
    ids=["503", "500-html", "502-retry-after", "reset"],
)
def test_transient_faults_still_succeed(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, fault: Fault
) -> None:
    proxy.faults = [fault]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    assert setup.renew("--force") == 0
    assert faulted(proxy, fault.kind), "the fault was never injected"


def test_retry_after_is_honoured(tmp_path: Path, pebble: LocalCA, proxy: FaultProxy) -> None:
    proxy.faults = [Fault("status", status=429, retry_after="2", path="/order-plz", remaining=1)]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    orders = [r.at for r in proxy.records if "/order-plz" in r.path]
    assert len(orders) == 2
    assert orders[1] - orders[0] >= 2.0


def test_long_rate_limit_stops_at_once_and_says_so(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [Fault("status", status=429, retry_after="3600", path="/order-plz")]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "rateLimited" in err and "3600 s: Retry-After" in err
    assert len([r for r in proxy.records if "/order-plz" in r.path]) == 1  # no hammering


def test_persistent_5xx_is_bounded_with_clear_message(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [Fault("status", status=502, json=False, path="/order-plz")]
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "f: creating the order: unexpected answer from the CA: HTTP 502" in err
    assert len([r for r in proxy.records if "/order-plz" in r.path]) == 6  # 1 + 5 retries


def test_stalled_ca_times_out_and_retries(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy
) -> None:
    proxy.faults = [Fault("stall", stall=4, path="/order-plz", remaining=1)]
    setup = through(tmp_path, pebble, proxy, extra="request_timeout = 1\n")
    assert setup.renew() == 0
    assert faulted(proxy, "stall")


def test_dripping_ca_is_cut_off_at_the_total_deadline(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """One byte every 2 s never trips a read timeout; request_timeout is the whole answer,
    and issuance_timeout the whole issuance, its retries included."""
    setup = through(tmp_path, pebble, proxy, extra="request_timeout = 3\n")
    setup.config.write_text(
        setup.config.read_text().replace("issuance_timeout = 30", "issuance_timeout = 8")
    )
    proxy.faults = [Fault("drip", stall=2, path="/order-plz")]
    started = time.monotonic()
    assert setup.renew() == 1
    took = time.monotonic() - started
    assert took < 8 + 3 + 4, took  # issuance_timeout + request_timeout + a few seconds
    err = capsys.readouterr().err
    assert "f: creating the order: the CA did not answer in time" in err


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault("truncate", path="/certZ/"), "truncated or malformed certificate chain"),
        (Fault("garbage", path="/certZ/"), "no PEM certificate"),
        (Fault("huge", path="/dir"), "larger than 1048576 bytes"),
        (Fault("garbage", path="/order-plz"), "not valid JSON"),
        (
            Fault(
                "replace",
                path="/certZ/",
                replacement=make_chain(("f.example.com",))[1].fullchain_pem,
            ),
            "certificate for another key; not used",
        ),
    ],
    ids=["truncated-chain", "non-pem-chain", "oversized", "non-json", "another-key"],
)
def test_broken_responses_never_go_live(
    tmp_path: Path,
    pebble: LocalCA,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    message: str,
) -> None:
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    before = digest(setup.live("f"))
    proxy.faults = [fault]
    assert setup.renew("--force") == 1
    assert message in capsys.readouterr().err
    assert digest(setup.live("f")) == before


def test_ca_unreachable_leaves_certificate_untouched(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = through(tmp_path, pebble, proxy)
    assert setup.renew() == 0
    before = digest(setup.live("f"))
    text = setup.config.read_text().replace(str(proxy.port), str(free_port()))
    setup.config.write_text(text)
    assert setup.renew("--force") == 1
    assert "connection refused" in capsys.readouterr().err
    assert digest(setup.live("f")) == before


def test_token_with_path_characters_is_refused(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import re

    def evil(body: bytes) -> bytes:
        data = json.loads(body)
        for challenge in data.get("challenges", []):
            challenge["token"] = "../../../../etc/cron.d/evil"
        return json.dumps(data).encode()

    proxy.faults = [Fault("replace", path="/authZ/", transform=evil)]
    webroot = tmp_path / "webroot"
    setup = through(tmp_path, pebble, proxy)
    text = re.sub(r"\[http01\][^\[]*", f'[http01]\nmode = "webroot"\nwebroot = "{webroot}"\n\n',
                  setup.config.read_text())  # fmt: skip
    setup.config.write_text(text)
    assert setup.renew() == 1
    err = capsys.readouterr().err
    assert "the CA sent a malformed response" in err and "refusing it" in err
    assert not (tmp_path / "etc").exists() and not Path("/etc/cron.d/evil").exists()


@pytest.mark.parametrize(
    ("retry_after", "faults"),
    # junk is ignored (so f retries at once, 1 + 5 times); the others end f's attempt
    [("99999999999999", 1), ("\u00b2", 6), ("Fri, 31 Dec 9999 23:59:59 GMT", 1)],
    ids=["huge", "junk", "year-9999"],
)
def test_absurd_retry_after_never_stops_the_daemon(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, retry_after: str, faults: int
) -> None:
    """A 429 with a Retry-After the daemon cannot use as it is: logged, bounded, and a
    certificate added afterwards is still obtained (it used to kill the batcher)."""
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "f.toml").write_text('domains = ["f.example.com"]\n')
    setup = through(tmp_path, pebble, proxy)
    text = setup.config.read_text().split("[[certificate]]")[0]
    setup.config.write_text(f'certs_dir = "{certs}"\n' + text)
    proxy.faults = [Fault("status", status=429, retry_after=retry_after, path="/order-plz",
                          remaining=faults)]  # fmt: skip
    daemon = DaemonProc(setup.config, tmp_path / "daemon.log")
    try:
        daemon.wait_for(r"f: attempt 1 failed; retrying in", timeout=30)
        (certs / "g.toml").write_text('domains = ["g.example.com"]\n')
        daemon.wait_for(r"g: installed serial", timeout=20)
    finally:
        assert daemon.stop() == 0
    text = daemon.text()
    assert "Traceback" not in text and "Retry-After" in text

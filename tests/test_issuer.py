"""The issuance flow against a hand-written fake of our protocol seam (no CA, no sleeping)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from cryptography import x509

from agent import keys
from agent.acme.client import Authorization
from agent.acme.issuer import Issuer, Poller
from agent.acme.orders import OrderState
from agent.errors import CAError, IssuanceError
from agent.http01.solvers import NoSolver
from agent.model import Challenge, OrderRequest
from agent.policy.retry_after import retry_after_seconds
from tests.certs import sign_for

CERT = OrderRequest("www", ("example.com",), "ec-p256")


@dataclass
class FakeClient:
    """Plays a CA: authorizations start as given, become valid once answered."""

    authz_status: str = "pending"
    order_statuses: list[str] = field(default_factory=lambda: ["ready", "processing", "valid"])
    retry_after: str | None = None
    calls: list[str] = field(default_factory=list)
    answered: bool = False
    csr: bytes = b""
    profile: str | None = None
    replaces: str | None = None
    offered: dict[str, str] | None = None

    def profiles(self) -> dict[str, str] | None:
        return self.offered

    def _order(self, status: str) -> OrderState:
        cert_url = "https://ca/cert/1" if status == "valid" else None
        return OrderState(
            "https://ca/order/1",
            status,
            ("https://ca/authz/1",),
            "https://ca/finalize/1",
            cert_url,
            "",
            self.retry_after,
        )

    def new_order(
        self, csr_pem: bytes, subject: str, profile: str | None = None, replaces: str | None = None
    ) -> OrderState:
        self.csr = csr_pem
        self.profile, self.replaces = profile, replaces
        self.calls.append("new_order")
        return self._order("pending")

    def authorization(self, url: str, subject: str) -> Authorization:
        self.calls.append("authz")
        status = "valid" if self.answered else self.authz_status
        chall = Challenge("example.com", "A" * 43, "A" * 43 + ".thumb", None)  # type: ignore[arg-type]
        return Authorization(url, "example.com", status, chall)

    def answer(self, challenge: Challenge, subject: str) -> None:
        self.calls.append("answer")
        self.answered = True

    def order(self, url: str, subject: str) -> OrderState:
        self.calls.append("order")
        return self._order(self.order_statuses.pop(0) if self.order_statuses else "processing")

    def finalize(self, order: OrderState, csr_pem: bytes, subject: str) -> OrderState:
        self.calls.append("finalize")
        return self._order("processing")

    def download(self, url: str, subject: str) -> bytes:
        self.calls.append("download")
        csr = x509.load_pem_x509_csr(self.csr)
        return sign_for(csr.public_key(), CERT.domains).fullchain_pem


class RecordingSolver:
    def __init__(self) -> None:
        self.presented: list[str] = []
        self.cleaned = 0

    def present(self, challenges: Sequence[Challenge]) -> None:
        self.presented += [c.token for c in challenges]

    def cleanup(self) -> None:
        self.cleaned += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def issuer_for(client: FakeClient, solver: object, timeout: float = 300) -> tuple[Issuer, Clock]:
    clock = Clock()
    issuer = Issuer(client, solver, timeout, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    return issuer, clock


def test_pending_authorization_is_answered_and_solver_cleaned() -> None:
    client, solver = FakeClient(), RecordingSolver()
    issuer, clock = issuer_for(client, solver)
    issued = issuer.obtain(CERT)
    assert solver.presented == ["A" * 43] and solver.cleaned == 1
    assert client.calls.count("answer") == 1 and "finalize" in client.calls
    assert keys.dns_names(issued.chain.cert) == {"example.com"}
    assert sum(clock.sleeps) < 0.2  # tight polling, no one-second sleeps


def test_valid_authorization_needs_no_solver() -> None:
    client = FakeClient(authz_status="valid")
    issuer, _ = issuer_for(client, NoSolver())  # NoSolver would raise if asked
    issuer.obtain(CERT)
    assert "answer" not in client.calls


def test_mode_none_with_pending_authorization_says_what_to_do() -> None:
    issuer, _ = issuer_for(FakeClient(), NoSolver())
    with pytest.raises(IssuanceError, match='pre-approve the domain on the CA.*"standalone"'):
        issuer.obtain(CERT)


def test_invalid_authorization_names_domain() -> None:
    issuer, _ = issuer_for(FakeClient(authz_status="invalid"), RecordingSolver())
    with pytest.raises(IssuanceError, match=r"validation failed: example.com \(invalid\)"):
        issuer.obtain(CERT)


def test_retry_after_is_honoured() -> None:
    client = FakeClient(retry_after="3")
    issuer, clock = issuer_for(client, RecordingSolver())
    issuer.obtain(CERT)
    assert 3.0 in clock.sleeps


def test_processing_forever_times_out_with_order_url() -> None:
    client = FakeClient(order_statuses=["ready"] + ["processing"] * 10_000)
    issuer, clock = issuer_for(client, RecordingSolver(), timeout=120)
    with pytest.raises(CAError, match=r"order https://ca/order/1 is still processing after 120 s"):
        issuer.obtain(CERT)
    assert clock.now == pytest.approx(120)
    assert client.calls.count("order") < 100  # growing intervals, no hammering


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("7", 0) == 7
    assert retry_after_seconds(None, 0) is None
    assert retry_after_seconds("soon", 0) is None
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60


def test_poller_never_sleeps_past_deadline() -> None:
    clock = Clock()
    poller = Poller(5.0, clock, clock.sleep, wall=lambda: 0.0)
    poller.wait("3600")
    assert clock.now == 5.0


def test_fake_order_state_helper() -> None:
    state = FakeClient()._order("valid")
    assert replace(state, status="x").certificate == "https://ca/cert/1"


def test_profile_checked_against_directory_and_sent() -> None:
    cert = replace(CERT, profile="shortlived")
    issuer, _ = issuer_for(FakeClient(offered={"classic": "", "shortlived": ""}), RecordingSolver())
    issuer.obtain(cert, replaces="aki.serial")
    client = issuer.client
    assert isinstance(client, FakeClient)
    assert (client.profile, client.replaces) == ("shortlived", "aki.serial")
    issuer, _ = issuer_for(FakeClient(offered={"classic": ""}), RecordingSolver())
    with pytest.raises(
        IssuanceError, match="does not offer profile 'shortlived' .offered: classic"
    ):
        issuer.obtain(cert)

"""Renewal policy: pure functions tested with fixed clocks."""

from datetime import UTC, datetime, timedelta

import pytest

from agent.policy import CertFacts, due_reason, renewal_time

T0 = datetime(2027, 3, 1, tzinfo=UTC)
DOMAINS = ("example.com", "www.example.com")


def facts(days: float, key_type: str = "ec-p256") -> CertFacts:
    return CertFacts(frozenset(DOMAINS), key_type, T0, T0 + timedelta(days=days))


@pytest.mark.parametrize(
    ("lifetime", "renew_after"),
    [(90, 60), (100, 100 * 2 / 3), (47, 47 * 2 / 3), (6, 3), (10, 5), (10.5, 7)],
)
def test_renewal_time_by_lifetime(lifetime: float, renew_after: float) -> None:
    start, end = T0, T0 + timedelta(days=lifetime)
    assert renewal_time(start, end) == T0 + timedelta(days=renew_after)


def test_not_due_just_before_and_due_at_renewal_time() -> None:
    current = facts(90)
    when = renewal_time(current.not_before, current.not_after)
    assert due_reason(DOMAINS, "ec-p256", current, when - timedelta(seconds=1)) is None
    assert due_reason(DOMAINS, "ec-p256", current, when) is not None


def test_missing_changed_forced_expired() -> None:
    assert due_reason(DOMAINS, "ec-p256", None, T0) == "no certificate yet"
    assert "domains" in (due_reason(("example.com",), "ec-p256", facts(90), T0) or "")
    assert "key type" in (due_reason(DOMAINS, "rsa-2048", facts(90), T0) or "")
    assert due_reason(DOMAINS, "ec-p256", facts(90), T0, force=True) == "renewal forced"
    assert "expired" in (due_reason(DOMAINS, "ec-p256", facts(6), T0 + timedelta(days=7)) or "")


def test_domain_order_does_not_matter() -> None:
    assert due_reason(tuple(reversed(DOMAINS)), "ec-p256", facts(90), T0) is None


def test_clock_before_not_before_is_not_due() -> None:
    assert due_reason(DOMAINS, "ec-p256", facts(90), T0 - timedelta(days=1)) is None

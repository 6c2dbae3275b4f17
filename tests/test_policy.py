"""Renewal policy: pure functions tested with fixed clocks."""

from datetime import UTC, datetime, timedelta

import pytest

from agent.model import CertFacts
from agent.policy.renewal import due_reason, renewal_time

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


# -- ARI, renew_before, jitter, backoff ----------------------------------------------------
import logging  # noqa: E402

from agent.model import AriWindow  # noqa: E402
from agent.policy.backoff import backoff  # noqa: E402
from agent.policy.durations import parse_duration  # noqa: E402
from agent.policy.renewal import (  # noqa: E402
    failure_log_level,
    lifetime_renewal_time,
    next_renewal,
    stable_fraction,
)


@pytest.mark.parametrize("lifetime", [6, 47, 90, 100])
def test_jitter_only_moves_earlier_and_a_little(lifetime: int) -> None:
    current = facts(lifetime)
    base = renewal_time(current.not_before, current.not_after)
    for rand in (0.0, 0.5, 0.999):
        when, why = next_renewal(current, rand=rand)
        assert base - timedelta(hours=1) <= when <= base
        assert why == "lifetime ratio"


def test_renew_before_duration_and_fraction() -> None:
    current = facts(90)
    end = current.not_after
    assert lifetime_renewal_time(T0, end, timedelta(days=10)) == end - timedelta(days=10)
    assert lifetime_renewal_time(T0, end, 0.5) == T0 + timedelta(days=45)
    # A renew_before longer than the lifetime means renew as soon as issued.
    assert lifetime_renewal_time(T0, end, timedelta(days=200)) == T0
    when, why = next_renewal(current, renew_before=timedelta(days=10))
    assert when == end - timedelta(days=10) and why == "renew_before"


def test_ari_window_in_future_is_respected() -> None:
    current = facts(90)
    window = AriWindow(T0 + timedelta(days=70), T0 + timedelta(days=72))
    when, why = next_renewal(current, ari=window, rand=0.5)
    assert when == T0 + timedelta(days=71) and "ARI" in why
    assert due_reason(DOMAINS, "ec-p256", current, T0 + timedelta(days=65), ari=window) is None
    # ARI overrides the lifetime ratio (60 days here) in both directions.
    assert due_reason(DOMAINS, "ec-p256", current, T0 + timedelta(days=61), ari=window) is None


def test_ari_window_in_past_means_now() -> None:
    current = facts(90)
    window = AriWindow(T0 + timedelta(days=1), T0 + timedelta(days=2))
    reason = due_reason(DOMAINS, "ec-p256", current, T0 + timedelta(days=3), ari=window)
    assert reason is not None and "ARI window in the past" in reason


def test_ari_window_open_now_due_once_moment_reached() -> None:
    current = facts(90)
    window = AriWindow(T0 + timedelta(days=10), T0 + timedelta(days=20))
    inside = T0 + timedelta(days=15)
    assert due_reason(DOMAINS, "ec-p256", current, inside, ari=window, rand=0.4) is not None
    assert due_reason(DOMAINS, "ec-p256", current, inside, ari=window, rand=0.6) is None


def test_backoff_grows_caps_and_respects_time_left() -> None:
    far = timedelta(days=60)
    delays = [backoff(n, far, 0.5) for n in range(1, 12)]
    assert delays[0] == timedelta(minutes=1)
    assert delays == sorted(delays)
    assert delays[-1] == timedelta(hours=4)
    assert backoff(1, far, 0.0) == timedelta(seconds=45)
    assert backoff(1, far, 0.999) < timedelta(seconds=76)
    # Six-day certificate with 2 hours left: never wait more than a quarter of that.
    assert backoff(10, timedelta(hours=2), 0.5) == timedelta(minutes=30)
    # Nothing known about the lifetime (no certificate yet): the plain exponential.
    assert backoff(10, timedelta(hours=-1), 0.5) == timedelta(hours=4)
    # Expired, or under 1 % of the lifetime left: the most urgent, so at most 5 minutes
    # (it used to say "retrying in 4h16m (-4s left)").
    lifetime = timedelta(days=90)
    assert backoff(10, timedelta(seconds=-4), 0.5, lifetime) == timedelta(minutes=5)
    assert backoff(10, timedelta(hours=20), 0.5, lifetime) == timedelta(minutes=5)
    assert backoff(10, timedelta(days=2), 0.5, lifetime) == timedelta(hours=4)
    assert backoff(1, timedelta(seconds=-4), 0.5, lifetime) == timedelta(minutes=1)
    # Minutes before expiry: still every few minutes, not a share of what is left.
    assert backoff(5, timedelta(minutes=20), 0.5, lifetime) == timedelta(minutes=5)
    assert backoff(1, timedelta(seconds=1), 0.5) == timedelta(seconds=5)


def test_failure_log_level_rises_towards_expiry() -> None:
    current = facts(90)
    assert failure_log_level(current, T0 + timedelta(days=50)) == logging.WARNING
    assert failure_log_level(current, T0 + timedelta(days=70)) == logging.ERROR
    assert failure_log_level(current, T0 + timedelta(days=85)) == logging.CRITICAL
    assert failure_log_level(current, T0 + timedelta(days=95)) == logging.CRITICAL
    assert failure_log_level(None, T0) == logging.ERROR


def test_parse_duration() -> None:
    assert parse_duration("10d") == timedelta(days=10)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("30m") == timedelta(minutes=30)
    for bad in ("", "10", "d", "10x", "-1d", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_stable_fraction_is_stable_and_spread() -> None:
    assert stable_fraction("host", "www") == stable_fraction("host", "www")
    values = {round(stable_fraction("host", str(i)), 1) for i in range(100)}
    assert len(values) >= 8
    assert all(0 <= stable_fraction(str(i)) < 1 for i in range(100))

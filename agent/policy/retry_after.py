"""Retry-After (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date, as seconds to wait,
parsed in this one place and bounded: 0 (now) to MAX_RETRY_AFTER. A value that is junk
(``²``, ``soon``) counts as absent; one past the bound (``99999999999999``, a date in the
year 9999) counts as the bound; :func:`retry_after_problem` says which, for the log."""

from __future__ import annotations

import email.utils
from datetime import datetime, timedelta

# The longest wait a CA can impose through one Retry-After: a day. Longer values are
# treated as a day (the certificate's remaining lifetime may cap it further).
MAX_RETRY_AFTER = 86400.0
# ARI: when the CA gives no Retry-After, check again after this long (RFC 9773 suggests hours).
DEFAULT_ARI_RECHECK = timedelta(hours=6)
# Bounds on the CA's Retry-After for ARI checks: not more often than this, not rarer than that.
MIN_ARI_RECHECK = timedelta(seconds=1)
MAX_ARI_RECHECK = timedelta(days=1)


def http_date(value: str | None) -> datetime | None:
    """An HTTP-date (RFC 9110 section 5.6.7: ``Date``, ``Retry-After``) as an aware
    datetime, or None when there is none or it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip()) if value else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return when if when is not None and when.tzinfo is not None else None


def _parse(value: str, now: float) -> float | None:
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True too
        return float(text) if len(text) <= 15 else float("inf")
    when = http_date(text)
    return when.timestamp() - now if when is not None else None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait per a Retry-After header (delta-seconds or HTTP-date), or None when
    there is none or it is junk; always within 0 .. MAX_RETRY_AFTER. ``now`` is the wall
    clock (Unix time) a date is measured from."""
    if not value:
        return None
    seconds = _parse(value, now)
    if seconds is None:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def retry_after_problem(value: str | None, now: float) -> str | None:
    """Why ``value`` was not taken as it is (for a warning naming the CA), or None."""
    if not value:
        return None
    seconds = _parse(value, now)
    if seconds is None:
        return f"Retry-After {value[:40]!r} is neither seconds nor an HTTP-date; ignored"
    if seconds > MAX_RETRY_AFTER:
        return f"Retry-After {value[:40]!r} is more than a day; waiting a day"
    return None


def ari_recheck_time(retry_after: str | None, now: datetime) -> datetime:
    """When to ask the CA for renewal information again, per its Retry-After (bounded)."""
    seconds = retry_after_seconds(retry_after, now.timestamp())
    delay = timedelta(seconds=seconds) if seconds is not None else DEFAULT_ARI_RECHECK
    return now + min(max(delay, MIN_ARI_RECHECK), MAX_ARI_RECHECK)

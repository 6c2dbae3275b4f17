"""Retry-After (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date, as seconds to wait."""

from __future__ import annotations

import email.utils
from datetime import datetime, timedelta

# ARI: when the CA gives no Retry-After, check again after this long (RFC 9773 suggests hours).
DEFAULT_ARI_RECHECK = timedelta(hours=6)
# Bounds on the CA's Retry-After for ARI checks: not more often than this, not rarer than that.
MIN_ARI_RECHECK = timedelta(seconds=1)
MAX_ARI_RECHECK = timedelta(days=1)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait per a Retry-After header (delta-seconds or HTTP-date), or None.
    ``now`` is the wall clock (Unix time) the date is measured from."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def ari_recheck_time(retry_after: str | None, now: datetime) -> datetime:
    """When to ask the CA for renewal information again, per its Retry-After (bounded)."""
    seconds = retry_after_seconds(retry_after, now.timestamp())
    delay = timedelta(seconds=seconds) if seconds is not None else DEFAULT_ARI_RECHECK
    return now + min(max(delay, MIN_ARI_RECHECK), MAX_ARI_RECHECK)

"""The thresholds of `check` (Nagios/Icinga plugin): pure functions of each
certificate's status and ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..model import CertStatus
from .durations import parse_duration

OK, WARNING, CRITICAL = 0, 1, 2
# Default CRITICAL threshold: less than this share of the lifetime left.
CRITICAL_SHARE = 0.10


def human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(int(seconds), 86400)
    if days:
        return f"{sign}{days}d{rest // 3600}h"
    return f"{sign}{rest // 3600}h{rest % 3600 // 60}m"


Threshold = timedelta | float  # time left, or share of the lifetime left


def parse_threshold(text: str) -> Threshold:
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text)
    if not 0 < value < 1:
        raise ValueError(text)
    return value


def _below(status: CertStatus, threshold: Threshold) -> bool:
    assert status.seconds_left is not None and status.lifetime_seconds
    if isinstance(threshold, timedelta):
        return status.seconds_left < threshold.total_seconds()
    return status.seconds_left < threshold * status.lifetime_seconds


def evaluate(
    statuses: list[CertStatus],
    now: datetime,
    warn: Threshold | None = None,
    crit: Threshold | None = None,
) -> tuple[int, str]:
    """Nagios-style: (0 OK | 1 WARNING | 2 CRITICAL, one line naming what is at fault)."""
    critical, warning = [], []
    for s in statuses:
        if s.seconds_left is None:
            critical.append(f"{s.name} has no certificate")
        elif s.seconds_left <= 0:
            critical.append(f"{s.name} expired")
        elif _below(s, crit if crit is not None else CRITICAL_SHARE):
            critical.append(f"{s.name} expires in {human(s.seconds_left)}")
        elif warn is not None and _below(s, warn):
            warning.append(f"{s.name} expires in {human(s.seconds_left)}")
        elif warn is None and s.next_renewal and datetime.fromisoformat(s.next_renewal) <= now:
            warning.append(f"{s.name} is past its renewal time")
        elif s.last_error:
            warning.append(f"{s.name} last renewal failed")
        elif s.deployed is False:
            warning.append(f"{s.name} is issued but not deployed")
    if critical:
        return CRITICAL, "CRITICAL: " + "; ".join(critical + warning)
    if warning:
        return WARNING, "WARNING: " + "; ".join(warning)
    soonest = min((s.seconds_left for s in statuses if s.seconds_left), default=None)
    return OK, f"OK: {len(statuses)} certificates, soonest expiry in {human(soonest)}"

"""The thresholds of `check` (Nagios/Icinga plugin): pure functions of each
certificate's status and ``now``."""

from __future__ import annotations

from collections.abc import Sequence
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


# A reason quoted in a WARNING/CRITICAL line is cut to this many characters.
MAX_REASON = 160


def _reason(text: str, name: str) -> str:
    text = text.removeprefix(f"{name}: ")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def evaluate(
    statuses: list[CertStatus],
    now: datetime,
    warn: Threshold | None = None,
    crit: Threshold | None = None,
    file_errors: Sequence[str] = (),
    clock_skew: float | None = None,
) -> tuple[int, str]:
    """Nagios-style: (0 OK | 1 WARNING | 2 CRITICAL, one line naming what is at fault and
    why: the CA's or the configuration's own words where there are some). ``file_errors``:
    files of certs_dir in error that are no certificate's (e.g. a second file for a name).
    A certificate no longer configured (``configured`` False) is only mentioned: nothing
    of ours depends on it, and `acme-agent delete` removes it."""
    orphans = [s.name for s in statuses if not s.configured]
    statuses = [s for s in statuses if s.configured]
    code, summary = _evaluate(statuses, now, warn, crit, file_errors, clock_skew)
    if orphans:
        gone = ", ".join(orphans)
        summary += f"; not configured any more (acme-agent delete --cert NAME): {gone}"
    return code, summary


def _evaluate(
    statuses: list[CertStatus],
    now: datetime,
    warn: Threshold | None,
    crit: Threshold | None,
    file_errors: Sequence[str],
    clock_skew: float | None,
) -> tuple[int, str]:
    critical: list[str] = []
    if clock_skew is not None:
        side = "ahead of" if clock_skew > 0 else "behind"
        critical.append(f"this host's clock is {human(abs(clock_skew))} {side} the CA's: fix it "
                        "(NTP); renewals are held back meanwhile")  # fmt: skip
    warning = [f"configuration file in error: {_reason(m, '')}" for m in file_errors]
    for s in statuses:
        failed = f" (last attempt failed: {_reason(s.last_error, s.name)})" if s.last_error else ""
        if s.config_error and s.seconds_left is None:
            critical.append(f"{s.name} has no certificate: {_reason(s.config_error, s.name)}")
        elif s.seconds_left is None:
            critical.append(f"{s.name} has no certificate{failed}")
        elif s.seconds_left <= 0:
            critical.append(f"{s.name} expired{failed}")
        elif s.revoked:
            critical.append(f"{s.name}: the certificate in service was revoked{failed}")
        elif s.account_error:
            critical.append(f"{s.name} cannot be renewed: {_reason(s.last_error, s.name)}")
        elif s.damaged:
            critical.append(f"{s.name}: the certificate in service is damaged ({s.damaged}); "
                            "the next renew repairs it from the archive")  # fmt: skip
        elif _below(s, crit if crit is not None else CRITICAL_SHARE):
            critical.append(f"{s.name} expires in {human(s.seconds_left)}{failed}")
        elif s.config_error:
            warning.append(f"{s.name} is not renewed: {_reason(s.config_error, s.name)}")
        elif warn is not None and _below(s, warn):
            warning.append(f"{s.name} expires in {human(s.seconds_left)}{failed}")
        elif warn is None and s.next_renewal and datetime.fromisoformat(s.next_renewal) <= now:
            warning.append(f"{s.name} is past its renewal time{failed}")
        elif s.last_error:
            warning.append(f"{s.name} last renewal failed: {_reason(s.last_error, s.name)}")
        elif s.deployed is False:
            warning.append(f"{s.name} is issued but not deployed")
    if critical:
        return CRITICAL, "CRITICAL: " + "; ".join(critical + warning)
    if warning:
        return WARNING, "WARNING: " + "; ".join(warning)
    soonest = min((s.seconds_left for s in statuses if s.seconds_left), default=None)
    return OK, f"OK: {len(statuses)} certificates, soonest expiry in {human(soonest)}"


def _seconds(status: CertStatus, threshold: Threshold) -> float:
    assert status.lifetime_seconds is not None
    if isinstance(threshold, timedelta):
        return threshold.total_seconds()
    return threshold * status.lifetime_seconds


def perfdata(
    statuses: list[CertStatus], warn: Threshold | None = None, crit: Threshold | None = None
) -> str:
    """Performance data, one ``name=<seconds left>s;<warn>:;<crit>:;0;<lifetime>`` per
    certificate in service (Nagios ranges: alert below the value). Without ``warn`` the
    WARNING threshold is the time left at the certificate's next renewal."""
    items = []
    for s in statuses:
        if not s.configured or s.seconds_left is None or not s.lifetime_seconds:
            continue
        if s.not_after is None:
            continue
        if warn is not None:
            warn_s = _seconds(s, warn)
        elif s.next_renewal is not None:
            warn_s = datetime.fromisoformat(s.not_after) - datetime.fromisoformat(s.next_renewal)
            warn_s = warn_s.total_seconds()
        else:
            warn_s = 0.0
        crit_s = _seconds(s, crit if crit is not None else CRITICAL_SHARE)
        items.append(
            f"{s.name}={int(s.seconds_left)}s;{int(warn_s)}:;{int(crit_s)}:;0;"
            f"{int(s.lifetime_seconds)}"
        )
    return " ".join(items)

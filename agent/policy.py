"""When is a certificate due? Pure functions of the certificate's facts and ``now``.

Nothing here reads the clock, the disk or the network; tests pass fixed times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Renew when this share of the lifetime is left (lego and certmagic use the same ratios):
# a third for ordinary certificates, half for short-lived ones, whose renewal must have
# room for a failed attempt or two before expiry.
RENEW_RATIO = 1 / 3
SHORT_LIVED_RATIO = 1 / 2
SHORT_LIVED = timedelta(days=10)


@dataclass(frozen=True)
class CertFacts:
    """What policy needs to know about a certificate in service."""

    domains: frozenset[str]
    key_type: str
    not_before: datetime
    not_after: datetime


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """The moment from which renewal is due, by lifetime ratio."""
    lifetime = not_after - not_before
    ratio = SHORT_LIVED_RATIO if lifetime <= SHORT_LIVED else RENEW_RATIO
    return not_after - lifetime * ratio


def due_reason(
    wanted_domains: tuple[str, ...],
    wanted_key_type: str,
    current: CertFacts | None,
    now: datetime,
    *,
    force: bool = False,
) -> str | None:
    """Why this certificate must be (re)issued now, or None when it is fine."""
    if current is None:
        return "no certificate yet"
    if frozenset(wanted_domains) != current.domains:
        return "the configured domains changed"
    if wanted_key_type != current.key_type:
        return "the configured key type changed"
    if force:
        return "renewal forced"
    if now >= current.not_after:
        return "the certificate has expired"
    if now >= renewal_time(current.not_before, current.not_after):
        return "renewal is due (lifetime ratio)"
    return None

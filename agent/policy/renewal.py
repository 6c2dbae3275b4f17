"""When is a certificate due? Pure functions of the certificate's facts, the CA's renewal
information (ARI, RFC 9773) and ``now``.

Nothing here reads the clock, the disk, the network or a random source: tests pass fixed
times, and callers pass ``rand`` (a number in [0, 1)) for jitter.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from ..model import AriState, AriWindow, CertFacts

# Renew when this share of the lifetime is left (lego and certmagic use the same ratios):
# a third for ordinary certificates, half for short-lived ones, whose renewal must have
# room for a failed attempt or two before expiry.
RENEW_RATIO = 1 / 3
SHORT_LIVED_RATIO = 1 / 2
SHORT_LIVED = timedelta(days=10)
# Jitter: renew up to this share of the lifetime early (at most MAX_JITTER), so a fleet
# does not renew in the same second.
JITTER_RATIO = 0.01
MAX_JITTER = timedelta(hours=1)


# No certificate is ordered again sooner than this after the last one (or a quarter of its
# lifetime, when shorter), unless forced.
MIN_ORDER_INTERVAL = timedelta(minutes=10)

# renew_before: a duration before expiry, or a fraction of the lifetime left.
RenewBefore = timedelta | float


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed for these inputs (e.g. host, certificate name, serial):
    jitter that differs between hosts and certificates but not between runs."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def lifetime_renewal_time(
    not_before: datetime, not_after: datetime, renew_before: RenewBefore | None = None
) -> datetime:
    """The moment from which renewal is due, by lifetime ratio or ``renew_before``."""
    lifetime = not_after - not_before
    if isinstance(renew_before, timedelta):
        return max(not_before, not_after - renew_before)
    if renew_before is not None:
        return not_after - lifetime * renew_before
    ratio = SHORT_LIVED_RATIO if lifetime <= SHORT_LIVED else RENEW_RATIO
    return not_after - lifetime * ratio


# Kept for readers of the first version of this module.
def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    return lifetime_renewal_time(not_before, not_after)


def next_renewal(
    facts: CertFacts,
    *,
    renew_before: RenewBefore | None = None,
    ari: AriWindow | None = None,
    rand: float = 0.0,
) -> tuple[datetime, str]:
    """When to renew and why. ``rand`` in [0, 1) picks the moment inside the ARI window,
    or the jitter before the lifetime-based time."""
    if ari is not None:
        moment = ari.start + (ari.end - ari.start) * rand
        return moment, "inside the CA's suggested renewal window (ARI)"
    fitting, note = fit_renew_before(renew_before, facts.lifetime)
    base = lifetime_renewal_time(facts.not_before, facts.not_after, fitting)
    jitter = min(facts.lifetime * JITTER_RATIO, MAX_JITTER) * rand
    why = "renew_before" if fitting is not None else "lifetime ratio"
    return max(facts.not_before, base - jitter), why + (f"; {note}" if note else "")


def fit_renew_before(
    renew_before: RenewBefore | None, lifetime: timedelta
) -> tuple[RenewBefore | None, str | None]:
    """``renew_before`` when it fits the certificate's lifetime; else None (the lifetime
    ratio applies) and why: a duration as long as the lifetime would make every new
    certificate due the moment it is issued (``renew_before = "10d"`` meeting Let's
    Encrypt's 6-day certificates ordered again and again)."""
    if isinstance(renew_before, timedelta) and renew_before >= lifetime:
        return None, (f"renew_before {_short(renew_before)} does not fit the "
                      f"{_short(lifetime)} lifetime, so the lifetime ratio is used")  # fmt: skip
    return renew_before, None


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{round(seconds / size)}{unit}"
    return f"{seconds}s"


def min_order_interval(lifetime: timedelta) -> timedelta:
    """The least time between two new orders of one certificate (``--force`` aside): a
    quarter of its lifetime, at most MIN_ORDER_INTERVAL. The last line of defence against
    an order loop (a clock far ahead, a policy that makes every new certificate due)."""
    return min(lifetime / 4, MIN_ORDER_INTERVAL)


def due_reason(
    wanted_domains: tuple[str, ...],
    wanted_key_type: str,
    current: CertFacts | None,
    now: datetime,
    *,
    force: bool = False,
    renew_before: RenewBefore | None = None,
    ari: AriWindow | None = None,
    rand: float = 0.0,
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
    if ari is not None and ari.end <= now:
        return "the CA asks for renewal now (ARI window in the past)"
    when, why = next_renewal(current, renew_before=renew_before, ari=ari, rand=rand)
    if now >= when:
        return f"renewal is due ({why})"
    return None


def failure_log_level(facts: CertFacts | None, now: datetime) -> int:
    """Louder as expiry approaches: WARNING while a third of the lifetime is left, ERROR
    below that, CRITICAL under 10 % or once expired (or when there is no certificate)."""
    if facts is None:
        return logging.ERROR
    left = (facts.not_after - now) / facts.lifetime if facts.lifetime else 0
    if left < 0.10:
        return logging.CRITICAL
    if left < RENEW_RATIO:
        return logging.ERROR
    return logging.WARNING


def needs_ari_refresh(state: AriState | None, serial: str, now: datetime) -> bool:
    """Must the CA be asked again about ``serial`` (nothing known, another serial, or the
    time it gave has come)?"""
    return state is None or state.serial != serial or now >= state.next_check

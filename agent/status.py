"""`status` and `check`: what every certificate looks like now, from disk only (no request
to the CA). The thresholds of `check` are pure functions of the facts and ``now``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from .attempts import load_attempt
from .config import Config
from .renewer import Renewer

OK, WARNING, CRITICAL = 0, 1, 2
# Default CRITICAL threshold: less than this share of the lifetime left.
CRITICAL_SHARE = 0.10


@dataclass(frozen=True)
class CertStatus:
    name: str
    domains: list[str]
    key_type: str | None
    issuer: str | None
    serial: str | None
    not_before: str | None
    not_after: str | None
    seconds_left: float | None
    lifetime_seconds: float | None
    next_renewal: str | None
    next_renewal_reason: str
    last_attempt: str | None
    last_result: str | None
    last_error: str | None
    deployed: bool | None  # None: no deploy table

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def gather(
    config: Config, now: datetime | None = None, names: set[str] | None = None
) -> list[CertStatus]:
    now = now or datetime.now(UTC)
    renewer = Renewer(config, clock=lambda: now)
    certs = [c for c in config.certificates if names is None or c.name in names]
    return [_one(renewer, cert, now) for cert in certs]


def _one(renewer: Renewer, cert: object, now: datetime) -> CertStatus:
    from .config import CertificateConfig

    assert isinstance(cert, CertificateConfig)
    store = renewer.store
    current = store.record(cert.name)
    attempt = load_attempt(store, cert.name)
    plan = renewer.plan(cert, current, offline=True)
    deployed = None
    if cert.deploy is not None:
        folder = store.live_folder(cert.name)
        deployed = folder is not None and store.deployed_version(cert.name) == folder.name
    if current is None:
        return CertStatus(
            cert.name, list(cert.domains), None, None, None, None, None, None, None,
            now.isoformat(), plan.reason or "", attempt.at if attempt else None,
            attempt.result if attempt else None,
            attempt.detail if attempt and attempt.failed else None, deployed,
        )  # fmt: skip
    c = current
    return CertStatus(
        name=cert.name,
        domains=sorted(current.domains),
        key_type=current.key_type,
        issuer=c.issuer,
        serial=c.serial,
        not_before=c.not_before.isoformat(),
        not_after=c.not_after.isoformat(),
        seconds_left=(c.not_after - now).total_seconds(),
        lifetime_seconds=(c.not_after - c.not_before).total_seconds(),
        next_renewal=(plan.next_time or now).isoformat(),
        next_renewal_reason=plan.reason or plan.why,
        last_attempt=attempt.at if attempt else None,
        last_result=attempt.result if attempt else None,
        last_error=attempt.detail if attempt and attempt.failed else None,
        deployed=deployed,
    )


def human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(int(seconds), 86400)
    if days:
        return f"{sign}{days}d{rest // 3600}h"
    return f"{sign}{rest // 3600}h{rest % 3600 // 60}m"


def table(statuses: list[CertStatus]) -> str:
    head = ("NAME", "DOMAINS", "KEY", "ISSUER", "NOT AFTER", "LEFT", "NEXT RENEWAL (WHY)", "LAST")
    rows = [head]
    for s in statuses:
        last = "-" if s.last_result is None else s.last_result
        if s.last_error:
            last += f": {s.last_error}"
        if s.deployed is False:
            last += " (issued, not deployed)"
        rows.append((
            s.name, ",".join(s.domains), s.key_type or "-",
            _short_issuer(s.issuer), (s.not_after or "-")[:16].replace("T", " "),
            human(s.seconds_left),
            f"{(s.next_renewal or '-')[:16].replace('T', ' ')} ({s.next_renewal_reason})",
            last,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in rows]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _short_issuer(issuer: str | None) -> str:
    if not issuer:
        return "-"
    for part in issuer.split(","):
        if part.startswith("CN="):
            return part[3:]
    return issuer


def to_json(statuses: list[CertStatus]) -> str:
    return json.dumps({"certificates": [s.to_json() for s in statuses]}, indent=2)


# -- check ---------------------------------------------------------------------------------
Threshold = timedelta | float  # time left, or share of the lifetime left


def parse_threshold(text: str) -> Threshold:
    from .policy import parse_duration

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

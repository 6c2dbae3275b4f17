"""`status` and `check`: what every certificate looks like now, from disk only (no request
to the CA). The thresholds of `check` are in :mod:`agent.policy.check`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ..config.types import CertificateConfig, Config
from ..model import CertStatus
from ..policy.check import human
from ..store.attempts import load_attempt
from ..store.certs import Store
from .plan import Planner


def gather(
    config: Config, now: datetime | None = None, names: set[str] | None = None
) -> list[CertStatus]:
    when = now or datetime.now(UTC)
    planner = Planner(Store(config.state_dir), config.acme.directory, lambda: when)
    certs = [c for c in config.certificates if names is None or c.name in names]
    return [_one(planner, cert, when) for cert in certs]


def _one(planner: Planner, cert: CertificateConfig, now: datetime) -> CertStatus:
    store = planner.store
    current = store.record(cert.name)
    attempt = load_attempt(store, cert.name)
    plan = planner.plan(cert, current, offline=True)
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

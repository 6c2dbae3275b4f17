"""`status` and `check`: what every certificate looks like now, from disk only (no request
to the CA). The thresholds of `check` are in :mod:`agent.policy.check`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from ..config.types import CertificateConfig, Config
from ..model import CertRecord, CertStatus
from ..policy.check import human
from ..store.attempts import load_attempt
from ..store.certs import Store
from ..store.integrity import inspect
from ..store.removal import stored_names
from .issuing import issued_by, issuing_ca
from .plan import Planner


def gather(
    config: Config, now: datetime | None = None, names: set[str] | None = None,
    orphans: bool = False,
) -> list[CertStatus]:  # fmt: skip
    """Every configured certificate, and every file of certs_dir in error (by the name
    it defines), as the state on disk has them at ``now``; with ``orphans``, then every
    certificate state_dir holds that the configuration does not name (``configured``
    False: not renewed, not alerted on, no metrics; `acme-agent delete` removes it)."""
    when = now or datetime.now(UTC)
    planner = Planner(Store(config.state_dir), config.cas, lambda: when)
    certs = [c for c in config.certificates if names is None or c.name in names]
    statuses = [_one(planner, cert, when) for cert in certs]
    for problem in config.problems:
        if config.certificate(problem.name) is None and (names is None or problem.name in names):
            statuses.append(_broken(planner.store, problem.name, problem.message, when))
    if orphans:
        statuses += orphaned(planner.store, config, when)
    return statuses


def delete_hint(name: str) -> str:
    return f"acme-agent delete --cert {name}"


def orphaned(store: Store, config: Config, now: datetime) -> list[CertStatus]:
    """Certificates in state_dir that the configuration no longer names, by name."""
    known = {c.name for c in config.certificates} | {p.name for p in config.problems}
    statuses = []
    for name in sorted(stored_names(store) - known):
        current = store.record(name)
        domains = sorted(current.domains) if current else []
        status = _status(store, name, domains, current, now, None, "not configured", None)
        statuses.append(replace(status, next_renewal=None, damaged=None, configured=False))
    return statuses


# error types of a failed attempt that need new account credentials: check says CRITICAL.
ACCOUNT_ERRORS = frozenset({"AccountError", "externalAccountRequired", "accountDoesNotExist"})


def _one(planner: Planner, cert: CertificateConfig, now: datetime) -> CertStatus:
    store = planner.store
    current = store.record(cert.name)
    plan = planner.plan(cert, current, offline=True)
    deployed = None
    if cert.deploy is not None:
        folder = store.live_folder(cert.name)
        deployed = folder is not None and store.deployed_version(cert.name) == folder.name
    when = (plan.next_time or now).isoformat()
    status = _status(store, cert.name, list(cert.domains), current, now, when,
                     plan.reason or plan.why, deployed, plan.why == "revoked")  # fmt: skip
    if current is None:
        return status
    issuer = issuing_ca(planner.cas, store, cert, current)  # what ARI and revoke use too
    return replace(status, ca=issuer.name) if issuer is not None else status


def _broken(store: Store, name: str, message: str, now: datetime) -> CertStatus:
    """A certificate whose file is in error: what is in service, and that it is not renewed."""
    current = store.record(name)
    domains = sorted(current.domains) if current else []
    status = _status(store, name, domains, current, now, None, "configuration error", None)
    return replace(status, config_error=message, next_renewal=None)


def _status(
    store: Store, name: str, domains: list[str], current: CertRecord | None, now: datetime,
    next_renewal: str | None, why: str, deployed: bool | None, revoked: bool = False,
) -> CertStatus:  # fmt: skip
    attempt = load_attempt(store, name)
    damaged = inspect(store, name)
    last = {
        "last_attempt": attempt.at if attempt else None,
        "last_result": attempt.result if attempt else None,
        "last_error": attempt.detail if attempt and attempt.failed else None,
        "account_error": bool(attempt and attempt.failed and attempt.error_type in ACCOUNT_ERRORS),
    }
    if current is None:
        empty = dict.fromkeys(("key_type", "issuer", "serial", "not_before", "not_after"))
        return CertStatus(
            name, domains, **empty, seconds_left=None, lifetime_seconds=None,
            next_renewal=next_renewal or now.isoformat(), next_renewal_reason=why, **last,
            deployed=deployed, damaged=damaged,
        )  # fmt: skip
    c = current
    return CertStatus(
        name=name,
        domains=sorted(c.domains),
        key_type=c.key_type,
        issuer=c.issuer,
        serial=c.serial,
        not_before=c.not_before.isoformat(),
        not_after=c.not_after.isoformat(),
        seconds_left=(c.not_after - now).total_seconds(),
        lifetime_seconds=(c.not_after - c.not_before).total_seconds(),
        next_renewal=next_renewal,
        next_renewal_reason=why,
        **last,
        deployed=deployed,
        revoked=revoked,
        damaged=damaged,
        ca=issued_by(c),
    )


def table(statuses: list[CertStatus]) -> str:
    head = ("NAME", "DOMAINS", "KEY", "CA", "ISSUER", "NOT AFTER", "LEFT", "NEXT RENEWAL (WHY)",
            "LAST")  # fmt: skip
    rows = [head]
    for s in statuses:
        last = "-" if s.last_result is None else s.last_result
        if s.last_error:
            last += f": {s.last_error}"
        if s.config_error:
            last = f"not renewed: configuration error: {s.config_error}"
        if s.deployed is False:
            last += " (issued, not deployed)"
        if s.damaged:
            last = f"DAMAGED: {s.damaged} (the next renew repairs it)"
        if not s.configured:
            last = f"not in the configuration any more: {delete_hint(s.name)} removes it"
        rows.append((
            s.name, ",".join(s.domains), s.key_type or "-", s.ca or "-",
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

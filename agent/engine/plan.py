"""Is a certificate due now, and if not, when? One :class:`Planner` answers for every front
end: the daemon (to schedule), `status`/`check` (to show), and the renewer (before and,
under the certificate's lock, again). It reads the store and the CA's renewal information
already known; fetching that information from the CA is the caller's business (the
renewer passes ``refresh``), so planning never loads the protocol stack by itself.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from ..config.types import AcmeConfig, CertificateConfig
from ..model import AriState, CertFacts, CertRecord, Outcome, Plan, Status, facts
from ..policy import renewal
from ..policy.durations import span
from ..policy.retry_after import http_date
from ..store import ari
from ..store.attempts import revoked_serial
from ..store.certs import Store
from ..store.skew import SKEW_LIMIT, clear_skew, save_skew
from .issuing import issuing_ca

# Jitter differs between hosts (and certificates) but is stable across runs.
HOST = socket.gethostname()
log = logging.getLogger(__name__)
_WARNED: set[tuple[str, datetime]] = set()  # (name, not_after): a warning once per process

# (certificate, record in service, now) -> fresh renewal information, or None (unknown).
AriRefresh = Callable[[CertificateConfig, CertRecord, datetime], AriState | None]


class Planner:
    def __init__(
        self,
        store: Store,
        cas: Mapping[str, AcmeConfig],
        clock: Callable[[], datetime],
        refresh: AriRefresh | None = None,
    ) -> None:
        self.store = store
        self.cas = cas  # the issuing CA's directory: whether it is known to offer no ARI
        self.clock = clock
        self.refresh = refresh

    def directory(self, cert: CertificateConfig, current: CertRecord) -> str:
        """The directory of the CA that issued ``current`` (its renewal information; ""
        when not known: nothing is asked of any CA)."""
        ca = issuing_ca(self.cas, self.store, cert, current)
        return ca.directory if ca is not None else ""

    def plan(
        self,
        cert: CertificateConfig,
        current: CertRecord | None,
        *,
        force: bool = False,
        offline: bool = False,
    ) -> Plan:
        """Is ``cert`` due now (and why), and if not, when? Uses ARI when the CA offers it
        (``offline``, or no ``refresh``: only what is stored, no request to the CA)."""
        now = self.clock()
        ari_state = None
        if current is not None and not force:
            ari_state = self._ari_state(cert, current, now, offline or self.refresh is None)
        window = ari_state.window() if ari_state else None
        serial = current.serial if current else ""
        rand = renewal.stable_fraction(HOST, cert.name, serial)
        if current is not None and revoked_serial(self.store, cert.name) == serial:
            return Plan("the certificate in service was revoked", None, "revoked", ari_state)
        current_facts = facts(current)
        reason = renewal.due_reason(
            cert.domains, cert.key_type, current_facts, now, force=force,
            renew_before=cert.renew_before, ari=window, rand=rand,
        )  # fmt: skip
        if reason is not None or current_facts is None:
            return Plan(reason, None, reason or "", ari_state)
        when, why = renewal.next_renewal(
            current_facts, renew_before=cert.renew_before, ari=window, rand=rand
        )
        self._warn_unfit(cert, current_facts)
        return Plan(None, when, why, ari_state)

    def _warn_unfit(self, cert: CertificateConfig, current: CertFacts) -> None:
        _, note = renewal.fit_renew_before(cert.renew_before, current.lifetime)
        key = (cert.name, current.not_after)
        if note is not None and key not in _WARNED:
            _WARNED.add(key)
            log.warning("%s: %s (%s)", cert.name, note, cert.field("renew_before"),
                        extra={"cert": cert.name})  # fmt: skip

    def _ari_state(
        self, cert: CertificateConfig, current: CertRecord, now: datetime, offline: bool
    ) -> AriState | None:
        state = ari.load_state(self.store, cert.name)
        if offline:
            return state if state is not None and state.serial == current.serial else None
        if not renewal.needs_ari_refresh(state, current.serial, now):
            return state
        no_ari_until = ari.ca_without_ari(self.store, self.directory(cert, current), now)
        if no_ari_until is not None:  # known: this CA has no renewalInfo; no request
            return AriState(current.serial, False, no_ari_until)
        assert self.refresh is not None
        fresh = self.refresh(cert, current, now)
        if fresh is not None:
            return fresh
        state = ari.load_state(self.store, cert.name)  # as the refresh left it (postponed)
        return state if state is not None and state.serial == current.serial else None

    def needs_ari_request(self, cert: CertificateConfig, current: CertRecord) -> bool:
        """Would planning ``cert`` online ask the CA for renewal information?"""
        now = self.clock()
        return renewal.needs_ari_refresh(
            ari.load_state(self.store, cert.name), current.serial, now
        ) and (ari.ca_without_ari(self.store, self.directory(cert, current), now) is None)

    def unchanged(
        self, cert: CertificateConfig, current: CertRecord | None, plan: Plan
    ) -> Outcome | None:
        """The outcome when ``plan`` says ``cert`` is not due (None when it is)."""
        if plan.reason is not None or current is None or plan.next_time is None:
            return None
        detail = f"not due; next renewal {plan.next_time:%Y-%m-%d %H:%M} UTC ({plan.why})"
        live = self.store.live_dir(cert.name)
        recheck = min(plan.next_time, plan.ari.next_check) if plan.ari is not None else None
        return Outcome(
            cert.name, Status.UNCHANGED, detail, live, current.not_after, plan.next_time,
            recheck=recheck,
        )  # fmt: skip

    def unchanged_now(self, cert: CertificateConfig, current: CertRecord | None) -> Outcome | None:
        """The "unchanged" outcome when ``cert`` (``current`` in service) is not due now."""
        return self.unchanged(cert, current, self.plan(cert, current))

    def held_back(
        self, cert: CertificateConfig, current: CertRecord | None, plan: Plan
    ) -> Outcome | None:
        """A failure instead of an order when ``cert`` is due again too soon after its last
        issuance (see :func:`renewal.min_order_interval`); None when it may be ordered.
        Missing, changed and revoked certificates are never held back, nor forced ones
        (the caller does not ask)."""
        if current is None or plan.reason is None or plan.why == "revoked":
            return None
        if "changed" in plan.reason:
            return None
        last = current.installed  # set by this host's own orders only
        spacing = renewal.min_order_interval(current.not_after - current.not_before)
        now = self.clock()
        if last is None or last > now or now >= current.not_after:
            return None  # unknown, from a clock that was ahead, or expired: never held
        if now - last >= spacing:
            return None
        wait = last + spacing - now
        detail = (
            f"due again {_span(now - last)} after the last issuance ({plan.reason}); no new "
            f"order for {_span(wait)} (at most one per {_span(spacing)}): check renew_before "
            "and this host's clock, or order now with renew --force"
        )
        return _held(cert, detail, wait)

    def held_for_clock(self, cert: CertificateConfig, measured: float | None) -> Outcome | None:
        """While this host's clock was found off from the CA's: ``measured`` is the skew
        just measured again (None: the CA gave no Date). Within SKEW_LIMIT it is cleared
        and orders go on; else nothing is ordered (--force aside)."""
        if measured is None:
            return None  # cannot tell (no Date): the spacing of orders still applies
        if abs(measured) < SKEW_LIMIT.total_seconds():
            clear_skew(self.store)
            log.info("this host's clock agrees with the CA's again; orders go on")
            return None
        side = "ahead of" if measured >= 0 else "behind"
        off = f"{_span(timedelta(seconds=abs(measured)))} {side}"
        return _held(cert, f"this host's clock is {off} the CA's: every certificate would be due "
                     "the moment it is issued; fix the clock (NTP), or order anyway with "
                     "renew --force", timedelta(minutes=5))  # fmt: skip


def _held(cert: CertificateConfig, detail: str, wait: timedelta) -> Outcome:
    log.warning("%s: %s", cert.name, detail, extra={"cert": cert.name, "error_type": "too-soon"})
    return Outcome(cert.name, Status.FAILED, detail, retry_after=wait.total_seconds(),
                   error_type="too-soon")  # fmt: skip


def _span(delta: timedelta) -> str:
    """:func:`span`, past an hour to the nearest minute (a skew measured as 199d23h59m59s
    says 200d0h); never negative."""
    seconds = max(0.0, delta.total_seconds())
    if seconds >= 3600:
        seconds = round(seconds / 60) * 60
    return span(timedelta(seconds=seconds))


def check_clock(
    store: Store, planner: Planner, cert: CertificateConfig, ca_date: str | None, now: datetime
) -> None:
    """After an issuance: is the new certificate already due by our clock? Then compare
    our clock with the CA's (its last ``Date``): beyond SKEW_LIMIT it is said (log,
    ``clock-skew.json`` for check and the metric); the spacing of orders
    (:meth:`Planner.held_back`) keeps it from becoming a loop meanwhile."""
    current = store.record(cert.name)
    plan = planner.plan(cert, current, offline=True)
    theirs = http_date(ca_date)
    if plan.reason is None or theirs is None:
        if plan.reason is None:
            clear_skew(store)
        return
    skew = (now - theirs).total_seconds()
    if abs(skew) < SKEW_LIMIT.total_seconds():
        return  # the clock is right: renew_before (or the CA's window) does not fit
    side = "ahead of" if skew > 0 else "behind"
    log.error("%s: this host's clock is %s %s the CA's (its Date: %s): the certificate it "
              "just issued is already due by this clock; fix the clock (NTP). Meanwhile at "
              "most one order per certificate every few minutes", cert.name,
              _span(timedelta(seconds=abs(skew))), side, ca_date,
              extra={"cert": cert.name, "error_type": "clock-skew"})  # fmt: skip
    save_skew(store, skew, now)

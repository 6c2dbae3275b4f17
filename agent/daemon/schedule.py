"""When each certificate is next looked at: its next renewal time (lifetime ratio,
``renew_before`` or the CA's ARI window; now when missing or due), or the next ARI check
when that comes first, or its retry time after a failure.

The times sit in a heap, and one APScheduler job is armed for the earliest. When it
fires, every certificate due by then is handed to ``on_due`` and the job is armed again.
(One job, not one per certificate: APScheduler's add_job costs ~0.15 ms, 1.5 s of
start-up for 10,000 certificates.) A failed attempt is retried with backoff and jitter,
never later than the certificate's remaining life allows, louder as expiry approaches,
and never given up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from ..config.types import CertificateConfig
from ..engine.plan import Planner
from ..errors import AgentError
from ..model import CertRecord, facts
from ..policy.backoff import BACKOFF_SHARE_OF_TIME_LEFT, backoff
from ..policy.durations import span
from ..policy.renewal import failure_log_level
from ..policy.retry_after import MAX_RETRY_AFTER
from ..store import ari, integrity

log = logging.getLogger(__name__)

# Jobs only hand a certificate to the next batch; one scheduler thread is plenty.
SCHEDULER_THREADS = 1


@dataclass
class CertState:
    failures: int = 0
    next_run: datetime | None = None
    last_error: str = ""
    not_before: datetime | None = None  # the CA's Retry-After, which even SIGHUP honours


class Schedule:
    def __init__(self, planner: Planner, on_due: Callable[[str], None]) -> None:
        self.planner = planner
        self.on_due = on_due
        self.states: dict[str, CertState] = {}
        # (time, name) of every scheduled renewal; entries that no longer match
        # states[name].next_run are stale and skipped.
        self._heap: list[tuple[datetime, str]] = []
        self._heap_lock = threading.Lock()
        self._armed: set[datetime] = set()  # times of the scheduler jobs not yet run
        self._job_ids = itertools.count(1)
        self._bulk = False  # schedule_all: arm the job once, at the end
        self._ari_asked: dict[str, str] = {}
        self._suspected: dict[str, str] = {}  # name -> the damage a worker was sent for
        self._plan_log_level = logging.INFO
        self.evaluated = time.monotonic()  # when the schedule was last looked at
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(SCHEDULER_THREADS)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)

    def forget(self, name: str) -> None:
        self.states.pop(name, None)  # its heap entry is now stale

    # -- the heap and the job ---------------------------------------------------------
    def schedule(self, name: str, when: datetime) -> None:
        self.states.setdefault(name, CertState()).next_run = when
        with self._heap_lock:
            heapq.heappush(self._heap, (when, name))
            if len(self._heap) > 4 * len(self.states) + 64:  # drop stale entries
                self._heap = [(s.next_run, n) for n, s in self.states.items() if s.next_run]
                heapq.heapify(self._heap)
            if not self._bulk:
                self._arm(when)

    def _arm(self, when: datetime) -> None:
        """A scheduler job at ``when`` unless one runs no later (under _heap_lock). Jobs
        are never replaced or removed (APScheduler removes a date job after it ran, which
        races with replacing it); a job with nothing due does nothing. However late it
        runs (a suspended host), it runs: nothing is ever skipped."""
        if any(armed <= when for armed in self._armed):
            return
        self._armed.add(when)
        job_id = f"due-{next(self._job_ids)}"
        trigger = DateTrigger(run_date=when)
        self.scheduler.add_job(self._fire, trigger, args=[when], id=job_id, misfire_grace_time=None)

    def _fire(self, armed: datetime) -> None:
        """The job: every certificate due by now goes to ``on_due``; arm for the next."""
        with self._heap_lock:
            self._armed.discard(armed)
        self.evaluate(datetime.now(UTC))

    def evaluate(self, now: datetime) -> int:
        """Hand every certificate due by ``now`` (the wall clock) to ``on_due`` and arm the
        job for the next; how many were due. Called by the job and by the daemon's tick,
        so that a clock that jumps forward (a resumed VM, an NTP step) renews what became
        due at once, whatever the job's own wait says; a clock that jumps back renews
        nothing early (nothing is due by it)."""
        due = []
        with self._heap_lock:
            while self._heap and self._heap[0][0] <= now:
                when, name = heapq.heappop(self._heap)
                state = self.states.get(name)
                if state is not None and state.next_run == when:
                    due.append(name)
            if self._heap:
                self._arm(self._heap[0][0])
        for name in due:
            self.on_due(name)
        self.evaluated = time.monotonic()
        return len(due)

    def retry_failed_now(self) -> int:
        """SIGHUP: every certificate whose last attempt failed is tried again now (once; a
        new failure continues its backoff)."""
        failed = [(name, state) for name, state in self.states.items() if state.failures]
        now = datetime.now(UTC)
        for name, state in failed:
            self.schedule(name, max(now, state.not_before or now))
        return len(failed)

    # -- decisions --------------------------------------------------------------------
    def schedule_all(self, certs: Iterable[CertificateConfig]) -> None:
        """At start: every certificate's plan at DEBUG (10,000 INFO lines help nobody), then
        one summary line."""
        self._plan_log_level = logging.DEBUG
        self._bulk = True
        try:
            for cert in certs:
                self.schedule_next(cert)
        finally:
            self._plan_log_level = logging.INFO
            with self._heap_lock:
                self._bulk = False
                if self._heap:
                    self._arm(self._heap[0][0])
        upcoming = self.upcoming()
        if upcoming:
            when, name = min(upcoming)
            log.info("%d certificates scheduled; next: %s at %s", len(upcoming), name,
                     when.isoformat())  # fmt: skip

    def upcoming(self) -> list[tuple[datetime, str]]:
        return [(s.next_run, n) for n, s in self.states.items() if s.next_run is not None]

    def schedule_next(self, cert: CertificateConfig) -> None:
        """At the certificate's next renewal time (now when missing or due), or at the next
        ARI check when that comes first. The daemon's one planning point."""
        now = datetime.now(UTC)
        record = self.planner.store.record(cert.name)
        try:
            plan = self.planner.plan(cert, record, offline=True)
        except AgentError as err:
            log.error("%s: cannot plan renewal: %s", cert.name, err)
            self.schedule_retry(cert, str(err))
            return
        when = plan.next_time or now
        damage = integrity.suspect(self.planner.store, cert.name)
        if damage in (None, integrity.LEGACY):  # nothing to compare yet is no damage
            self._suspected.pop(cert.name, None)
            damage = None
        elif self._suspected.get(cert.name) != damage:
            self._suspected[cert.name] = damage  # once per damage: no loop if it stays
            log.warning("%s: %s; a worker checks and repairs it now", cert.name, damage)
            when = now
        else:
            damage = None  # said and sent to a worker already
        if damage is not None:
            pass
        elif plan.ari is not None and plan.ari.supported and plan.ari.next_check < when:
            when = plan.ari.next_check  # a worker run refreshes the CA's renewal information
        elif record is not None and plan.ari is None and self._ari_unknown(cert, record, now):
            when = now
        self.schedule(cert.name, max(when, now))
        if plan.next_time is not None:
            log.log(self._plan_log_level, "%s: next renewal %s (%s)", cert.name,
                    plan.next_time.isoformat(), plan.why)  # fmt: skip

    def _ari_unknown(self, cert: CertificateConfig, record: CertRecord, now: datetime) -> bool:
        """No renewal information stored for this serial (the plan found none): a worker
        run fetches it, unless the CA that issued it is known to have none (or is not
        known). Only once per serial, so that a CA without an answer does not keep us busy."""
        directory = self.planner.directory(cert, record)
        if not directory or ari.ca_without_ari(self.planner.store, directory, now):
            return False
        asked = self._ari_asked.get(record.name)
        self._ari_asked[record.name] = record.serial
        return asked != record.serial

    def schedule_retry(
        self, cert: CertificateConfig, error: str, retry_after: float | None = None
    ) -> None:
        state = self.states.setdefault(cert.name, CertState())
        state.failures += 1
        state.last_error = error
        now = datetime.now(UTC)
        current = facts(self.planner.store.record(cert.name))
        time_left = current.not_after - now if current else timedelta(0)
        delay = backoff(state.failures, time_left, random.random(),
                        current.lifetime if current else None)  # fmt: skip
        if retry_after is not None:  # not before the CA's Retry-After (bounded at parse) ...
            asked = timedelta(seconds=min(retry_after, MAX_RETRY_AFTER))
            if time_left > timedelta(0):  # ... unless the certificate cannot wait that long
                asked = min(asked, time_left * BACKOFF_SHARE_OF_TIME_LEFT)
            delay = max(delay, asked)
            state.not_before = now + asked
        level = failure_log_level(current, now)
        if current is None:
            left = "no certificate in service yet"
        elif time_left <= timedelta(0):
            left = f"the certificate in service expired {span(-time_left)} ago"
        else:
            left = f"{span(time_left)} left on the certificate in service"
        log.log(level, "%s: attempt %d failed; retrying in %s (%s)", cert.name, state.failures,
                span(delay), left)  # fmt: skip
        self.schedule(cert.name, now + delay)

    def succeeded(self, cert: CertificateConfig) -> None:
        state = self.states.setdefault(cert.name, CertState())
        state.failures, state.not_before = 0, None
        self.schedule_next(cert)

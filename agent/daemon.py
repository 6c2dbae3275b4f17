"""``acme-agent run``: renew on schedule, reload configuration on change, speak to systemd.

- Each certificate has a next renewal time (lifetime ratio, ``renew_before`` or the CA's
  ARI window; now when missing or due); they sit in a heap, and one APScheduler job is
  armed for the earliest. When it fires, every certificate due by then joins the next
  batch and the job is armed again. (One job, not one per certificate: APScheduler's
  add_job costs ~0.15 ms, 1.5 s of start-up for 10,000 certificates.)
- A failed attempt is retried with exponential backoff and jitter, never later than the
  certificate's remaining life allows, louder as expiry approaches, and never given up.
- The main config file and ``certs_dir`` are watched (watchdog, debounced); SIGHUP does the
  same. An invalid edit is logged with file and field and the previous config stays.
- Signal handlers only set flags; the main thread acts on them. SIGTERM/SIGINT: stop taking
  work, let file swaps finish, exit within SHUTDOWN_GRACE seconds.
No ACME code here: due certificates are gathered into batches and each batch runs as a
child ``acme-agent renew --cert ...`` process, so the resident daemon never loads the
protocol stack (about 20 MiB) and an issuance that crashes cannot take the daemon down.
"""

from __future__ import annotations

import contextlib
import faulthandler
import heapq
import itertools
import logging
import os
import random
import select
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from . import policy, sdnotify
from .attempts import load_attempt
from .config import CertificateConfig, Config, load
from .errors import EXIT_USAGE, AgentError, ConfigError
from .renewer import Renewer, facts
from .worker import ChildRenewal, _outcome_of

log = logging.getLogger(__name__)

# Jobs only put a certificate into the next batch; one scheduler thread is plenty.
SCHEDULER_THREADS = 1
# Coalesce bursts of file events (editors write several times) into one reload.
RELOAD_DEBOUNCE = 0.5
# SIGTERM: in-flight work gets this long; swaps are atomic, so stopping later is safe too.
SHUTDOWN_GRACE = 8.0
# watchdog event types that mean a file changed.
CHANGE_EVENTS = ("created", "modified", "moved", "deleted", "closed")
# Due certificates arriving within this window share one child process.
BATCH_WINDOW = 0.2


@dataclass
class CertState:
    failures: int = 0
    next_run: datetime | None = None
    last_error: str = ""


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.states: dict[str, CertState] = {}
        self.wake = Waker()
        self.stop_requested = False
        self.reload_requested = False
        self._responder: Any = None
        self._observer: Any = None
        self._debounce: threading.Timer | None = None
        self._due: set[str] = set()
        # (time, name) of every scheduled renewal; entries that no longer match
        # states[name].next_run are stale and skipped.
        self._heap: list[tuple[datetime, str]] = []
        self._heap_lock = threading.Lock()
        self._armed: set[datetime] = set()  # times of the scheduler jobs not yet run
        self._job_ids = itertools.count(1)
        self._bulk = False  # schedule_all: arm the job once, at the end
        self._batch_lock = threading.Lock()
        self._batch_ready = threading.Event()
        self._ari_asked: dict[str, str] = {}
        self._plan_log_level = logging.INFO
        self._child = ChildRenewal(config_path, config.state_dir)
        self._cluster_stop: threading.Event | None = None
        self.metrics: Any = None
        if config.metrics is not None:
            from .metrics import Metrics

            self.metrics = Metrics()
        self.renewer = self._make_renewer(config)
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(SCHEDULER_THREADS)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
            },
        )

    # -- set-up -------------------------------------------------------------------------
    def _make_renewer(self, config: Config) -> Renewer:
        """The renewer the daemon plans with (offline: state on disk only). In standalone
        mode one HTTP-01 responder stays up; the child processes hand it their tokens
        through ``state_dir/http01``."""
        if self._responder is not None:
            self._responder.close()
            self._responder = None
        renewer = Renewer(config, metrics=self.metrics)
        if config.http01.mode == "standalone":
            from .http01 import Responder

            tokens_dir = renewer.store.private_dir("http01")
            # In a cluster it also answers the tokens other hosts published in Redis.
            fallback = renewer.cluster.lookup_token if renewer.cluster is not None else None
            http01 = config.http01
            responder = Responder(http01.listen_host, http01.listen_port, tokens_dir, fallback)
            try:
                responder.start()
                self._responder = responder
                log.info("HTTP-01 responder listening on %s:%s", responder.host, responder.port)
            except AgentError as err:
                log.error("%s; the renewals will bind it while a challenge is pending", err)
        return renewer

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop_requested = True
            self.wake.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload_requested = True
            self.wake.set()

        # SIGUSR1 writes every thread's stack to stderr (the journal): for a daemon that
        # seems stuck.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _watch(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        daemon = self
        watched_file = self.config_path.resolve()

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # Changes only: watchdog also reports files opened and closed for reading,
                # which our own reload does (a loop if we reacted to them).
                if event.event_type not in CHANGE_EVENTS:
                    return
                paths = {Path(str(event.src_path)), Path(str(getattr(event, "dest_path", "")))}
                if any(daemon._is_config_path(p, watched_file) for p in paths):
                    daemon._request_reload_debounced()

        observer = Observer()
        observer.schedule(Handler(), str(watched_file.parent), recursive=False)
        certs_dir = self.config.certs_dir
        if certs_dir is not None and certs_dir.resolve() != watched_file.parent:
            observer.schedule(Handler(), str(certs_dir.resolve()), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _is_config_path(self, path: Path, config_file: Path) -> bool:
        if path == config_file:
            return True
        certs_dir = self.config.certs_dir
        return (
            certs_dir is not None and path.parent == certs_dir.resolve() and path.suffix == ".toml"
        )

    def _request_reload_debounced(self) -> None:
        if self._debounce is not None:
            self._debounce.cancel()

        def fire() -> None:
            self.reload_requested = True
            self.wake.set()

        self._debounce = threading.Timer(RELOAD_DEBOUNCE, fire)
        self._debounce.daemon = True
        self._debounce.start()

    # -- scheduling ---------------------------------------------------------------------
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
        from apscheduler.triggers.date import DateTrigger

        if any(armed <= when for armed in self._armed):
            return
        self._armed.add(when)
        job_id = f"due-{next(self._job_ids)}"
        trigger = DateTrigger(run_date=when)
        self.scheduler.add_job(self._fire, trigger, args=[when], id=job_id, misfire_grace_time=None)

    def _fire(self, armed: datetime) -> None:
        """The job: every certificate due by now joins the next batch; arm for the next."""
        now = datetime.now(UTC)
        due = []
        with self._heap_lock:
            self._armed.discard(armed)
            while self._heap and self._heap[0][0] <= now:
                when, name = heapq.heappop(self._heap)
                state = self.states.get(name)
                if state is not None and state.next_run == when:
                    due.append(name)
            if self._heap:
                self._arm(self._heap[0][0])
        for name in due:
            self._job(name)

    def schedule_all(self) -> None:
        """At start: every certificate's plan at DEBUG (10,000 INFO lines help nobody), then
        one summary line."""
        self._plan_log_level = logging.DEBUG
        self._bulk = True
        try:
            for cert in self.config.certificates:
                self.schedule_next(cert)
        finally:
            self._plan_log_level = logging.INFO
            with self._heap_lock:
                self._bulk = False
                if self._heap:
                    self._arm(self._heap[0][0])
        upcoming = [(s.next_run, n) for n, s in self.states.items() if s.next_run is not None]
        if upcoming:
            when, name = min(upcoming)
            log.info("%d certificates scheduled; next: %s at %s", len(upcoming), name,
                     when.isoformat())  # fmt: skip

    def schedule_next(self, cert: CertificateConfig) -> None:
        """At the certificate's next renewal time (now when missing or due), or at the next
        ARI check when that comes first."""
        now = datetime.now(UTC)
        record = self.renewer.store.record(cert.name)
        try:
            plan = self.renewer.plan(cert, record, offline=True)
        except AgentError as err:
            log.error("%s: cannot plan renewal: %s", cert.name, err)
            self._schedule_retry(cert, str(err))
            return
        when = plan.next_time or now
        if plan.ari is not None and plan.ari.supported and plan.ari.next_check < when:
            when = plan.ari.next_check  # a child run refreshes the CA's renewal information
        elif record is not None and plan.ari is None and self._ari_unknown(record, now):
            when = now
        self.schedule(cert.name, max(when, now))
        if plan.next_time is not None:
            log.log(self._plan_log_level, "%s: next renewal %s (%s)", cert.name,
                    plan.next_time.isoformat(), plan.why)  # fmt: skip

    def _ari_unknown(self, record: Any, now: datetime) -> bool:
        """No renewal information stored for this serial (the plan found none): a child
        run fetches it, unless the CA is known to have none. Only once per serial, so that
        a CA without an answer does not keep us busy."""
        from . import ari

        if ari.ca_without_ari(self.renewer.store, self.config.acme.directory, now):
            return False
        asked = self._ari_asked.get(record.name)
        self._ari_asked[record.name] = record.serial
        return asked != record.serial

    def _schedule_retry(
        self, cert: CertificateConfig, error: str, retry_after: float | None = None
    ) -> None:
        state = self.states.setdefault(cert.name, CertState())
        state.failures += 1
        state.last_error = error
        now = datetime.now(UTC)
        current = facts(self.renewer.store.record(cert.name))
        time_left = current.not_after - now if current else timedelta(0)
        delay = policy.backoff(state.failures, time_left, random.random())
        if retry_after is not None:  # never before the CA's Retry-After
            delay = max(delay, timedelta(seconds=retry_after))
        level = policy.failure_log_level(current, now)
        log.log(level, "%s: attempt %d failed; retrying in %s (%s left on the certificate "
                "in service)", cert.name, state.failures, _human(delay),
                _human(time_left) if current else "no certificate")  # fmt: skip
        self.schedule(cert.name, now + delay)

    def _job(self, name: str) -> None:
        """A certificate is due: it joins the next batch (jobs only enqueue)."""
        with self._batch_lock:
            self._due.add(name)
        self._batch_ready.set()

    def _batcher(self) -> None:
        """Gather due certificates for BATCH_WINDOW, then renew them in one child process."""
        while not self.stop_requested:
            self._batch_ready.wait()
            if self.stop_requested:
                return
            time.sleep(BATCH_WINDOW)
            with self._batch_lock:
                names, self._due = sorted(self._due), set()
                self._batch_ready.clear()
            names = [n for n in names if self.config.certificate(n) is not None]
            if names:
                self._run_batch(names)
                self.wake.set()  # refresh STATUS

    def _run_batch(self, names: list[str]) -> None:
        started = datetime.now(UTC)
        code = self._child.run(names)
        if self.metrics is not None:
            self.metrics.read_samples(self._child.samples_path)
        for name in names:
            cert = self.config.certificate(name)  # the config may have changed meanwhile
            if cert is None:
                continue
            attempt = load_attempt(self.renewer.store, name)
            fresh = attempt is not None and datetime.fromisoformat(attempt.at) >= started
            if code == EXIT_USAGE and not fresh:
                self._schedule_retry(cert, f"the renewal run exited with {code}; see the log")
            elif fresh and attempt is not None and attempt.result == "waiting":
                # Another host holds the lease: its result arrives by pub/sub; look again
                # when its lease would have run out (it may have died).
                delay = timedelta(seconds=max(1.0, attempt.retry_after or 30.0))
                self.schedule(name, datetime.now(UTC) + delay)
            elif fresh and attempt is not None and attempt.failed:
                if self.metrics is not None:
                    self.metrics.observe_outcome(_outcome_of(name, attempt))
                self._schedule_retry(cert, attempt.detail, attempt.retry_after)
            else:
                if fresh and attempt is not None and self.metrics is not None:
                    self.metrics.observe_outcome(_outcome_of(name, attempt))
                self.states.setdefault(name, CertState()).failures = 0
                self.schedule_next(cert)
        self._refresh_metrics(set(names))

    def _refresh_metrics(self, names: set[str] | None = None) -> None:
        if self.metrics is None:
            return
        from .status import gather

        try:
            self.metrics.refresh(gather(self.config, names=names))
        except AgentError as err:
            log.warning("metrics not refreshed: %s", err)

    # -- cluster ----------------------------------------------------------------------
    def _start_cluster(self) -> None:
        """In a cluster: renew a certificate here as soon as another host publishes a new
        version (pub/sub), and compare all versions at (re)connection and every
        ``check_interval`` in case a message was missed."""
        if self._cluster_stop is not None:
            self._cluster_stop.set()
            self._cluster_stop = None
        cluster, settings = self.renewer.cluster, self.config.cluster
        if cluster is None or settings is None:
            return
        stop = self._cluster_stop = threading.Event()

        def on_event(name: str) -> None:
            if self.config.certificate(name) is not None:
                log.debug("%s: a new version was published in the cluster", name)
                self._job(name)

        def check_periodically() -> None:
            while not stop.wait(settings.check_interval):
                self._check_cluster()

        def on_connect() -> None:
            self._cluster_up(True)
            self._check_cluster()

        listen_args = (on_event, on_connect, stop, lambda: self._cluster_up(False))
        threading.Thread(target=cluster.listen, args=listen_args, name="cluster-events",
                         daemon=True).start()  # fmt: skip
        threading.Thread(target=check_periodically, name="cluster-check", daemon=True).start()

    def _cluster_up(self, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.cluster_connected.set(1 if up else 0)

    def _check_cluster(self) -> None:
        """Queue every certificate whose version in Redis differs from the one here."""
        cluster = self.renewer.cluster
        if cluster is None:
            return
        names = [c.name for c in self.config.certificates]
        try:
            shared = cluster.serials(names)
        except AgentError as err:
            log.warning("cluster check skipped: %s", err)
            return
        store = self.renewer.store
        for name, serial in shared.items():
            record = store.record(name)
            if serial is not None and (record is None or record.serial != serial):
                self._job(name)

    # -- reload -------------------------------------------------------------------------
    def reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1")
        try:
            new = load(self.config_path)
        except ConfigError as err:
            log.error("configuration not reloaded: %s; the previous configuration stays in force",
                      err)  # fmt: skip
            sdnotify.notify("READY=1")
            return
        old = self.config
        self.config = new
        if (new.acme, new.http01, new.state_dir, new.cluster) != (
            old.acme,
            old.http01,
            old.state_dir,
            old.cluster,
        ):
            self.renewer = self._make_renewer(new)
            if new.cluster != old.cluster:
                self._start_cluster()
        else:
            self.renewer.config = new
        old_certs = {c.name: c for c in old.certificates}
        for name in old_certs.keys() - {c.name for c in new.certificates}:
            log.info("%s: removed from the configuration; unscheduled (its files stay)", name)
            self.states.pop(name, None)  # its heap entry is now stale
        for cert in new.certificates:
            before = old_certs.get(cert.name)
            if before != cert:
                log.info("%s: %s", cert.name, "added" if before is None else "changed")
                self.schedule_next(cert)
        if new.certs_dir != old.certs_dir and self._observer is not None:
            self._observer.stop()
            self._watch()
        log.info("configuration reloaded: %d certificates", len(new.certificates))
        sdnotify.notify("READY=1", self.status_line())

    # -- main loop ----------------------------------------------------------------------
    def status_line(self) -> str:
        upcoming = [(s.next_run, n) for n, s in self.states.items() if s.next_run is not None]
        failing = sum(1 for s in self.states.values() if s.failures)
        if not upcoming:
            return f"STATUS={len(self.config.certificates)} certificates, nothing scheduled"
        when, name = min(upcoming)
        text = (
            f"{len(self.config.certificates)} certificates; "
            f"next: {name} at {when:%Y-%m-%d %H:%M:%S} UTC"
        )
        return f"STATUS={text}" + (f"; {failing} failing" if failing else "")

    def run(self) -> int:
        self._install_signals()
        if self.metrics is not None and self.config.metrics is not None:
            settings = self.config.metrics
            self.metrics.serve(settings.listen_host, settings.listen_port)
            log.info("metrics on http://%s:%d/metrics", settings.listen_host, settings.listen_port)
        self.scheduler.start()
        threading.Thread(target=self._batcher, name="batcher", daemon=True).start()
        self.schedule_all()
        self._start_cluster()
        self._refresh_metrics()
        self._watch()
        sdnotify.notify("READY=1", self.status_line())
        log.info("acme-agent running with %d certificates (pid %d)",
                 len(self.config.certificates), os.getpid())  # fmt: skip
        interval = sdnotify.watchdog_interval()
        while not self.stop_requested:
            self.wake.wait(timeout=interval)
            if self.stop_requested:
                break
            if self.reload_requested:
                self.reload()
            sdnotify.notify("WATCHDOG=1", self.status_line())
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping")
        sdnotify.notify("STOPPING=1")
        self.scheduler.shutdown(wait=False)
        if self._cluster_stop is not None:
            self._cluster_stop.set()
        if self._observer is not None:
            self._observer.stop()
        self._batch_ready.set()  # let the batcher see the stop
        # A renewal in flight gets SIGTERM and SHUTDOWN_GRACE seconds; every write it makes
        # is atomic, so whatever it leaves, the next start picks up from a consistent state.
        self._child.stop(SHUTDOWN_GRACE)
        if self._responder is not None:
            self._responder.close()
        return 0


class Waker:
    """Wakes the main loop from threads and from signal handlers. A pipe, not a
    threading.Event: Event.set() takes a lock that the interrupted main thread may be
    holding inside Event.wait(), and a signal handler calling it can deadlock."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already full: a wake is pending anyway
            os.write(self._write, b"x")

    def wait(self, timeout: float | None = None) -> None:
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{sign}{seconds // 60}m{seconds % 60}s"
    return f"{sign}{seconds}s"


def run_daemon(config_path: Path) -> int:
    config = load(config_path)  # a bad config at start is exit 2, like every command
    return Daemon(config_path, config).run()

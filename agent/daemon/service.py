"""``acme-agent run``: renew on schedule, reload configuration on change, speak to systemd.

- The schedule (:mod:`.schedule`) hands each due certificate to the batcher; due
  certificates arriving within BATCH_WINDOW share one worker process (:mod:`.worker`),
  which gets the configuration in force and reports one outcome per certificate.
- The main config file and ``certs_dir`` are watched (:mod:`.watch`); SIGHUP does the same.
  An invalid edit is logged with file and field and the previous config stays.
- Signal handlers only set flags; the main thread acts on them. SIGTERM/SIGINT: stop taking
  work, let file swaps finish, exit within SHUTDOWN_GRACE seconds.
- In a fleet, new versions published by other hosts are picked up (:mod:`.fleet`).
No ACME code here: the resident daemon never loads the protocol stack (about 20 MiB).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from ..config.loader import load
from ..config.types import Config
from ..engine.issuing import issuing_name
from ..engine.plan import Planner
from ..errors import AgentError, ConfigError
from ..http01.responder import remove_handed_over_tokens
from ..model import Outcome, Status
from ..store.attempts import load_attempt
from ..store.certs import Store
from ..store.skew import load_skew
from . import sdnotify
from .reload import keep_previous_definitions
from .schedule import Schedule
from .threads import supervised
from .waker import Waker
from .watch import ConfigWatch
from .worker import Worker, WorkerStartError

log = logging.getLogger(__name__)

# SIGTERM: in-flight work gets this long; swaps are atomic, so stopping later is safe too.
SHUTDOWN_GRACE = 8.0
# Due certificates arriving within this window share one worker process.
BATCH_WINDOW = 0.2
# The main loop looks at the schedule against the wall clock at least this often, so a
# clock that jumps forward renews what became due within this long (whatever the
# scheduler's own wait says), and the watchdog is fed only while that keeps happening.
TICK = 60.0


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.store = Store(config.state_dir)
        self.wake = Waker()
        self.stop_requested = False
        self.reload_requested = False
        self.retry_requested = False  # SIGHUP: also retry what failed, now
        self.fatal: str | None = None  # a thread of ours died: exit, and systemd restarts us
        self._batcher_thread: threading.Thread | None = None
        self._responder: Any = None
        self._watch: ConfigWatch | None = None
        self._fingerprint: tuple[object, ...] = ()
        self._fleet: Any = None
        self._cluster: Any = None
        self._due: set[str] = set()
        self._batch_lock = threading.Lock()
        self._batch_ready = threading.Event()
        self._worker = Worker()
        self.metrics: Any = None
        if config.metrics is not None:
            from ..engine.metrics import Metrics

            self.metrics = Metrics(fleet=config.cluster is not None)
        self.schedule = Schedule(self._planner(config), self._job)
        self._start_responder(config)

    # -- set-up -------------------------------------------------------------------------
    def _planner(self, config: Config) -> Planner:
        """The daemon plans offline (state on disk only): the worker asks the CA."""
        return Planner(self.store, config.cas, lambda: datetime.now(UTC))

    def _start_responder(self, config: Config) -> None:
        """In standalone mode one HTTP-01 responder stays up; the workers hand it their
        tokens through ``state_dir/http01``."""
        if self._responder is not None:
            self._responder.close()
            self._responder = None
        self._cluster = None
        if config.cluster is not None:
            from ..fleet.cluster import RedisCluster

            self._cluster = RedisCluster(config.cluster)
        if config.http01.mode != "standalone":
            return
        from ..http01.responder import Responder

        tokens_dir = self.store.private_dir("http01")
        # In a cluster it also answers the tokens other hosts published in Redis.
        cluster = self._cluster
        fallback = cluster.answerer_for(config.cas, self.store) if cluster is not None else None
        http01 = config.http01
        responder = Responder(http01.listen_host, http01.listen_port, tokens_dir, fallback)
        try:
            responder.start()
            self._responder = responder
            log.info("HTTP-01 responder listening on %s:%s", responder.host, responder.port)
        except AgentError as err:
            log.error("%s; the renewals will bind it while a challenge is pending", err)

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop_requested = True
            self.wake.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload_requested = True
            self.retry_requested = True
            self.wake.set()

        # SIGUSR1 writes every thread's stack to stderr (the journal): for a daemon that
        # seems stuck.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _start_watch(self) -> None:
        def request_reload(what: str) -> None:
            log.info("configuration changed: %s", what)
            self.reload_requested = True
            self.wake.set()

        self._watch = ConfigWatch(self.config_path, self.config.certs_dir, request_reload)
        self._watch.start()
        self._fingerprint = self._watch.fingerprint()

    def _check_fingerprint(self) -> None:
        """The safety net under the watch (the tick): a change it missed is noticed here."""
        if self._watch is None:
            return
        now = self._watch.fingerprint()
        if now != self._fingerprint:
            self._fingerprint = now
            log.info("configuration changed (noticed by the periodic check); reloading")
            self._watch.restart()
            self.reload_requested = True

    def _start_fleet(self) -> None:
        if self._fleet is not None:
            self._fleet.stop()
            self._fleet = None
        if self._cluster is None or self.config.cluster is None:
            return
        from .fleet import FleetWatch

        self._fleet = FleetWatch(
            self._cluster, self.config.cluster, self.store,
            lambda: [c.name for c in self.config.certificates],
            lambda name: self.config.certificate(name) is not None,
            self._job, self._cluster_up,
        )  # fmt: skip
        self._fleet.start()

    def _cluster_up(self, up: bool) -> None:
        if self.metrics is not None and self.metrics.cluster_connected is not None:
            self.metrics.cluster_connected.set(1 if up else 0)

    # -- batches ------------------------------------------------------------------------
    def _job(self, name: str) -> None:
        """A certificate is due: it joins the next batch (jobs only enqueue)."""
        with self._batch_lock:
            self._due.add(name)
        self._batch_ready.set()

    def _died(self, why: str) -> None:
        """A thread of ours died (it said why, with its traceback): stop, exit 1."""
        self.fatal = why
        self.stop_requested = True
        self.wake.set()

    def _batcher(self) -> None:
        """Gather due certificates for BATCH_WINDOW, then renew them in one worker."""
        while not self.stop_requested:
            self._batch_ready.wait()
            if self.stop_requested:
                return
            time.sleep(BATCH_WINDOW)
            with self._batch_lock:
                names, self._due = sorted(self._due), set()
                self._batch_ready.clear()
            names = [n for n in names if self.config.certificate(n) is not None]
            if not names:
                continue
            try:
                self._run_batch(names)
            except WorkerStartError as err:
                log.critical("%s; exiting so that the agent is restarted", err)
                self.fatal = str(err)
                self.stop_requested = True
            self.wake.set()  # refresh STATUS

    def _run_batch(self, names: list[str]) -> None:
        result = self._worker.run(self.config, names, self._after, self.metrics is not None)
        if self.metrics is not None:
            self.metrics.observe_samples(result.durations)
        for name in names:
            cert = self.config.certificate(name)  # the config may have changed meanwhile
            if cert is not None and name not in result.reported:
                # The worker died (or refused the whole run) before reporting it.
                error = f"the renewal worker exited with {result.exit_code}; see the log"
                self.schedule.schedule_retry(cert, error)
        self._refresh_metrics([n for n in names if self.config.certificate(n) is not None])

    def _after(self, outcome: Outcome) -> None:
        """One certificate's outcome from the worker: when to look at it next."""
        cert = self.config.certificate(outcome.name)  # the config may have changed meanwhile
        if cert is None:
            return
        if self.metrics is not None:
            self.metrics.observe_outcome(outcome)
        if outcome.status == Status.WAITING:
            # Another host holds the lease: its result arrives by pub/sub; look again
            # when its lease would have run out (it may have died).
            delay = timedelta(seconds=max(1.0, outcome.retry_after or 30.0))
            self.schedule.schedule(cert.name, datetime.now(UTC) + delay)
        elif outcome.failed:
            self.schedule.schedule_retry(cert, outcome.detail, outcome.retry_after)
        else:  # planned again here, offline: the daemon's own decision point
            self.schedule.succeeded(cert)

    def _refresh_metrics(self, names: list[str] | None = None) -> None:
        """Gauges from the records on disk and the schedule (no planning here)."""
        if self.metrics is None:
            return
        for name in names if names is not None else [c.name for c in self.config.certificates]:
            state, record = self.schedule.states.get(name), self.store.record(name)
            attempt = load_attempt(self.store, name)
            self.metrics.refresh_one(
                name, record, state.next_run if state else None,
                None if attempt is None or attempt.result == "revoked" else not attempt.failed,
                issuing_name(self.config.cas, self.store, self.config.certificate(name), record),
            )  # fmt: skip
        self.metrics.clock_skew.set(load_skew(self.store) or 0)
        self.metrics.last_run.set(time.time())

    # -- reload -------------------------------------------------------------------------
    def reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1")
        if self._watch is not None:
            self._fingerprint = self._watch.fingerprint()  # what this reload reads
        try:
            new = load(self.config_path)
        except Exception as err:  # whatever it is, the daemon carries on with what it has
            if not isinstance(err, ConfigError):
                log.debug("loading the configuration failed", exc_info=True)
                err = ConfigError(f"{self.config_path}: internal error ({type(err).__name__}: "
                                  f"{err}); please report it with the output of -vv")  # fmt: skip
            log.error("configuration not reloaded: %s; the previous configuration stays in force",
                      err)  # fmt: skip
            sdnotify.notify("READY=1", self.status_line())
            return
        old = self.config
        new = keep_previous_definitions(old, new)
        self.config = new
        self._report_problems()
        if (dict(new.cas), new.http01, new.state_dir, new.cluster) != (
            dict(old.cas), old.http01, old.state_dir, old.cluster,
        ):  # fmt: skip
            self.store = Store(new.state_dir)
            self.schedule.planner = self._planner(new)
            self._start_responder(new)
            if new.cluster != old.cluster:
                self._start_fleet()
        old_certs = {c.name: c for c in old.certificates}
        for name in old_certs.keys() - {c.name for c in new.certificates}:
            log.info("%s: removed from the configuration; unscheduled (its files stay)", name)
            self.schedule.forget(name)
        for cert in new.certificates:
            before = old_certs.get(cert.name)
            if before != cert:
                log.info("%s: %s", cert.name, "added" if before is None else "changed")
                self.schedule.schedule_next(cert)
        if new.certs_dir != old.certs_dir and self._watch is not None:
            previous = self._watch
            self._start_watch()  # the new watch first, then the old one stopped
            previous.stop()
        log.info("configuration reloaded: %d certificates", len(new.certificates))
        sdnotify.notify("READY=1", self.status_line())

    # -- main loop ----------------------------------------------------------------------
    def status_line(self) -> str:
        upcoming = self.schedule.upcoming()
        failing = sum(1 for s in self.schedule.states.values() if s.failures)
        errors = len(self.config.problems)
        notes = (f"; {failing} failing" if failing else "") + (
            f"; {errors} with configuration errors (acme-agent validate)" if errors else ""
        )
        if not upcoming:
            return f"STATUS={len(self.config.certificates)} certificates, nothing scheduled{notes}"
        when, name = min(upcoming)
        text = (
            f"{len(self.config.certificates)} certificates; "
            f"next: {name} at {when:%Y-%m-%d %H:%M:%S} UTC"
        )
        return f"STATUS={text}{notes}"

    def _report_problems(self) -> None:
        """Each file of certs_dir in error, once per (re)load; the others carry on."""
        for problem in self.config.problems:
            if self.config.certificate(problem.name) is None:
                fields = {"cert": problem.name, "error_type": "config"}
                log.error("%s; %s is not renewed until the file is fixed", problem.message,
                          problem.name, extra=fields)  # fmt: skip
        if self.metrics is not None:
            self.metrics.config_errors.set(len(self.config.problems))
            self.metrics.retain_configured(self.config)  # none of a name that is gone

    def run(self) -> int:
        self._install_signals()
        self._report_problems()
        if self.metrics is not None and self.config.metrics is not None:
            settings = self.config.metrics
            self.metrics.serve(settings.listen_host, settings.listen_port)
            log.info("metrics on http://%s:%d/metrics", settings.listen_host, settings.listen_port)
        remove_handed_over_tokens(self.store.root / "http01")  # left by a killed worker
        self.schedule.start()
        self._batcher_thread = supervised("batcher", self._batcher, self._died)
        self.schedule.schedule_all(self.config.certificates)
        self._start_fleet()
        self._refresh_metrics()
        self._start_watch()
        sdnotify.notify("READY=1", self.status_line())
        log.info("acme-agent running with %d certificates (pid %d)",
                 len(self.config.certificates), os.getpid())  # fmt: skip
        interval = min(sdnotify.watchdog_interval() or TICK, TICK)
        while not self.stop_requested:
            self.wake.wait(timeout=interval)
            if self.stop_requested:
                break
            if self.reload_requested:
                self.reload()
            if self.retry_requested:
                self.retry_requested = False
                if count := self.schedule.retry_failed_now():
                    log.info("SIGHUP: retrying %d failed certificate(s) now", count)
            self._check_fingerprint()
            if self.reload_requested:
                self.reload()
            self.schedule.evaluate(datetime.now(UTC))
            if (problem := self._unhealthy()) is not None:
                log.critical("%s; exiting so that the agent is restarted", problem)
                self.fatal = problem
                break
            sdnotify.notify("WATCHDOG=1", self.status_line())
        code = self.shutdown()
        return 1 if self.fatal is not None else code

    def _unhealthy(self) -> str | None:
        """Why the daemon is no longer doing its work (None: it is): the watchdog is fed
        only while the batcher and the watch are alive and the schedule is looked at."""
        if self.fatal is not None:
            return self.fatal
        if self._batcher_thread is not None and not self._batcher_thread.is_alive():
            return "the batcher thread is gone"
        if self._watch is not None and not self._watch.alive():
            return "the configuration watch is gone"
        if time.monotonic() - self.schedule.evaluated > 3 * TICK:
            return f"the schedule was not looked at for {3 * TICK:.0f} s"
        return None

    def shutdown(self) -> int:
        log.info("stopping")
        sdnotify.notify("STOPPING=1")
        self.schedule.shutdown()
        if self._fleet is not None:
            self._fleet.stop()
        if self._watch is not None:
            self._watch.stop()
        self._batch_ready.set()  # let the batcher see the stop
        # A renewal in flight gets SIGTERM and SHUTDOWN_GRACE seconds; every write it makes
        # is atomic, so whatever it leaves, the next start picks up from a consistent state.
        self._worker.stop(SHUTDOWN_GRACE)
        if self._responder is not None:
            self._responder.close()
        remove_handed_over_tokens(self.store.root / "http01")  # left by a killed worker
        return 0


def run_daemon(config_path: Path) -> int:
    config = load(config_path)  # a bad config at start is exit 2, like every command
    return Daemon(config_path, config).run()

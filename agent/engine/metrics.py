"""Prometheus metrics (prometheus_client): served by the daemon, or written by `renew` as a
node_exporter textfile. Names and labels are documented in the README and used by
config/prometheus/alerts.yml and config/grafana/acme-agent.json."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from ..errors import ConfigError
from ..model import Status
from ..store.files import write_file_atomic
from .issuing import issued_by

if TYPE_CHECKING:
    from ..config.types import Config
    from ..model import CertRecord, CertStatus, Outcome

# Per-certificate gauges: its name, and the name of the CA that issued the certificate in
# service ("default" is [acme]; "" while none is, or not known).
CERT_LABELS = ("name", "ca")
# ACME requests take milliseconds against a local CA, seconds against a busy one.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, *, fleet: bool = False) -> None:
        """``fleet``: this host is one of a ``[cluster]`` (only then is the Redis connection
        gauge exported, so that its alert cannot fire on hosts without one)."""
        self.registry = CollectorRegistry()
        self.samples: list[tuple[str, float]] = []
        r = self.registry
        self.expiry = Gauge(
            "acme_agent_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate in service (Unix time)", CERT_LABELS, registry=r,
        )  # fmt: skip
        self.next_renewal = Gauge(
            "acme_agent_certificate_next_renewal_timestamp_seconds",
            "When the agent will renew the certificate (Unix time)", CERT_LABELS, registry=r,
        )  # fmt: skip
        self.lifetime = Gauge(
            "acme_agent_certificate_lifetime_seconds",
            "notAfter - notBefore of the certificate in service", CERT_LABELS, registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "acme_agent_certificate_last_renewal_success",
            "1 if the last renewal attempt succeeded, 0 if it failed", CERT_LABELS, registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "acme_agent_renewal_attempts_total", "Renewal attempts", ["name"], registry=r
        )
        self.failures = Counter(
            "acme_agent_renewal_failures_total", "Failed renewal attempts by reason",
            ["name", "reason"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "acme_agent_ca_fallbacks_total", "Renewals for which this CA failed and the "
            "next CA of the certificate's list was tried (label ca: the CA that failed)",
            ["name", "ca"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "acme_agent_acme_request_duration_seconds",
            "Duration of ACME protocol steps (including retries)", ["step"],
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.config_errors = Gauge(
            "acme_agent_config_errors",
            "Files of certs_dir in error: their certificates are not renewed", registry=r,
        )  # fmt: skip
        self.cluster_connected: Gauge | None = None
        if fleet:
            self.cluster_connected = Gauge(
                "acme_agent_cluster_connected",
                "Fleet mode: 1 while Redis is reachable, 0 while not (what is in service is kept)",
                registry=r,
            )  # fmt: skip
        self.clock_skew = Gauge(
            "acme_agent_clock_skew_seconds",
            "How far this host's clock is ahead of the CA's (behind: negative), when a new "
            "certificate was due at once by it (0: fine)", registry=r,
        )  # fmt: skip
        self.last_run = Gauge(
            "acme_agent_last_run_timestamp_seconds",
            "When the agent last checked its certificates (Unix time)", registry=r,
        )  # fmt: skip
        self._per_cert = (self.expiry, self.next_renewal, self.lifetime, self.last_success)
        self._ca: dict[str, str] = {}  # name -> its "ca" label (one series per certificate)

    def _labels(self, name: str, ca: str | None = None) -> tuple[str, str]:
        """(name, ca) for a certificate's gauges; ``ca`` None: as known. When the issuing
        CA changes (a fallback), the series under the old label are removed, so each
        certificate has one series per gauge (an alert never fires on a stale one)."""
        known = self._ca.get(name)
        label = (known or "") if ca is None else ca
        if known is not None and known != label:
            for gauge in self._per_cert:
                with contextlib.suppress(KeyError):  # not set yet under that label
                    gauge.remove(name, known)
        self._ca[name] = label
        return name, label

    def observe_request(self, step: str, seconds: float) -> None:
        self.request_duration.labels(step).observe(seconds)
        self.samples.append((step, seconds))

    def observe_samples(self, samples: Iterable[tuple[str, float]]) -> None:
        """Request durations measured by the daemon's worker (sent back over its pipe)."""
        for step, seconds in samples:
            self.request_duration.labels(str(step)).observe(float(seconds))

    def observe_outcome(self, outcome: Outcome) -> None:
        if outcome.status in (Status.UNCHANGED, Status.WAITING):  # nothing was attempted
            return
        self.attempts.labels(outcome.name).inc()
        for failed in outcome.fell_back.split():
            self.fallbacks.labels(outcome.name, failed).inc()
        labels = self._labels(outcome.name, outcome.ca or None)
        self.last_success.labels(*labels).set(0 if outcome.failed else 1)
        if outcome.failed:
            self.failures.labels(outcome.name, outcome.error_type or "unknown").inc()

    def refresh(self, statuses: Iterable[CertStatus]) -> None:
        """Gauges from the state on disk (after a `renew` run, for the textfile)."""
        for s in statuses:
            labels = self._labels(s.name, s.ca or "")
            if s.not_after is not None and s.lifetime_seconds is not None:
                self.expiry.labels(*labels).set(datetime.fromisoformat(s.not_after).timestamp())
                self.lifetime.labels(*labels).set(s.lifetime_seconds)
            if s.next_renewal is not None:
                when = datetime.fromisoformat(s.next_renewal).timestamp()
                self.next_renewal.labels(*labels).set(when)
            if s.last_result is not None and s.last_result != "revoked":
                self.last_success.labels(*labels).set(0 if s.last_error else 1)
        self.last_run.set(time.time())

    def refresh_one(
        self, name: str, record: CertRecord | None, next_run: datetime | None, ok: bool | None,
        ca: str | None = None,
    ) -> None:  # fmt: skip
        """One certificate's gauges from its record and the daemon's schedule (``ok``: the
        last attempt succeeded; None: nothing attempted yet)."""
        if ca is None and record is not None:  # ``ca``: the issuing CA, when the caller knows
            ca = issued_by(record)
        labels = self._labels(name, ca)
        if record is not None:
            self.expiry.labels(*labels).set(record.not_after.timestamp())
            span = (record.not_after - record.not_before).total_seconds()
            self.lifetime.labels(*labels).set(span)
        if next_run is not None:
            self.next_renewal.labels(*labels).set(next_run.timestamp())
        if ok is not None:
            self.last_success.labels(*labels).set(1 if ok else 0)

    def retain_configured(self, config: Config) -> None:
        """Series only for the certificates configured and those whose file of certs_dir
        is in error (a certificate left in state_dir, an orphan, has none)."""
        self.retain({c.name for c in config.certificates} | {p.name for p in config.problems})

    def retain(self, names: Collection[str]) -> None:
        """Drop every series of a certificate not in ``names`` (removed from the
        configuration, or deleted): a name that is gone has no series."""
        per_certificate = (
            *((gauge, CERT_LABELS) for gauge in self._per_cert),
            (self.attempts, ("name",)), (self.failures, ("name", "reason")),
            (self.fallbacks, ("name", "ca")),
        )  # fmt: skip
        for metric, labels in per_certificate:
            gone = {
                tuple(sample.labels[label] for label in labels)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("name") not in names and "name" in sample.labels
            }
            for values in gone:
                with contextlib.suppress(KeyError):  # removed meanwhile
                    metric.remove(*values)
        for name in set(self._ca) - set(names):
            del self._ca[name]

    def write_textfile(self, path: Path) -> None:
        """node_exporter's textfile collector reads *.prom (as its own user, e.g.
        ``prometheus``): written atomically, mode 0644 whatever the umask."""
        write_file_atomic(path, generate_latest(self.registry), 0o644)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics; the daemon is alive while this answers, so last_run is now."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise ConfigError(
                f"[metrics] listen: cannot listen on {host}:{port} ({err.strerror})"
            ) from None
        self.last_run.set_function(time.time)

"""The daemon's side of its worker: each batch of renewals runs in a child process
(``python -m agent.cli.worker``), so the resident daemon never loads the protocol stack
and an issuance that crashes cannot take the daemon down.

The protocol, over the child's pipes:

- stdin, one JSON document: ``{"config": PATH, "files": {PATH: TOML, ...}, "names": [...],
  "verbose": N, "durations": BOOL}``: the configuration in force (as the daemon loaded
  it; the worker never reads the configuration from disk), the certificates to renew, and
  whether the daemon wants the request durations (only with ``[metrics]``: 2,000
  issuances make some 16,000 samples);
- stdout, one JSON object per line: ``{"outcome": {...}}`` once for each certificate, as
  soon as it is final (at once, or after deployment for one with a deploy table), then
  ``{"durations": [[step, seconds], ...]}`` for the request metrics, when asked for;
  ``{"working": true}`` every few seconds while it works (a worker silent for longer than
  :func:`silence_limit` is taken for hung).

Each outcome is handed on as it arrives: the daemon holds no list of a batch's results
(10,000 of them would stay in its memory).

Logs go to stderr (the journal). A certificate without an outcome line (the worker died)
is a failure like any other.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ..config.types import DEFAULT_CA, Config
from ..deploy.commands import kill_group
from ..errors import AgentError
from ..model import Outcome

log = logging.getLogger(__name__)

WORKER_MODULE = "agent.cli.worker"


@dataclass
class WorkerResult:
    exit_code: int
    reported: set[str] = field(default_factory=set)  # names with an outcome
    durations: list[tuple[str, float]] = field(default_factory=list)


def request(config: Config, names: Sequence[str], verbose: int, durations: bool) -> bytes:
    """What the worker reads on stdin."""
    data = {"config": str(config.path), "files": dict(config.sources), "names": list(names),
            "verbose": verbose, "durations": durations}  # fmt: skip
    return json.dumps(data).encode()


def read_results(
    stream: Iterable[bytes], result: WorkerResult, on_outcome: Callable[[Outcome], None]
) -> None:
    """Hand each outcome on as it arrives; a line that is not ours is logged."""
    for raw in stream:
        try:
            message: dict[str, Any] = json.loads(raw)
            outcome = Outcome.from_json(message["outcome"]) if "outcome" in message else None
            if "durations" in message:
                result.durations += [(str(s), float(t)) for s, t in message["durations"]]
        except (ValueError, TypeError, KeyError) as err:
            log.warning("renewal worker: unreadable line ignored (%s)", err)
            continue
        if outcome is None:
            continue
        try:
            on_outcome(outcome)
        except Exception:  # a bug of ours: said once, and the certificate is retried
            log.exception("%s: internal error handling the worker's outcome", outcome.name)
            continue
        result.reported.add(outcome.name)


class WorkerStartError(AgentError):
    """The worker cannot be started (the interpreter or the virtualenv was replaced under
    the running daemon, e.g. by a package upgrade)."""


# The daemon kills a worker that has reported nothing for longer than an order can take
# (issuance_timeout, plus every retry of one request), plus deployment and hooks, plus this.
SILENCE_MARGIN = 10.0
# One protocol step sends a request this many times at most (1 + the transient retries).
TRANSIENT_ATTEMPTS = 6


def silence_limit(config: Config) -> float:
    """Seconds without an outcome after which a worker is taken for hung (e.g. stopped, or
    stuck on a CA that never answers) and its process group is killed."""
    deploys = [c.deploy for c in config.certificates if c.deploy is not None]
    deploy = max((d.timeout * 2 + d.verify_timeout for d in deploys), default=0.0)
    hooks = config.hooks.timeout if (config.hooks.pre or config.hooks.post) else 0.0
    # A certificate may be tried at each of its CAs in turn (fallback): the longest chain.
    chains = {c.ca for c in config.certificates} or {(DEFAULT_CA,)}
    order = max(
        sum(ca.issuance_timeout + TRANSIENT_ATTEMPTS * ca.request_timeout
            for ca in (config.cas[name] for name in chain if name in config.cas))
        for chain in chains
    )  # fmt: skip
    return order + deploy + 2 * hooks + SILENCE_MARGIN


class Worker:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def run(
        self,
        config: Config,
        names: list[str],
        on_outcome: Callable[[Outcome], None],
        durations: bool = False,
    ) -> WorkerResult:
        """Renew ``names`` (those due; the worker decides again) with ``config``; hand each
        outcome to ``on_outcome`` as it arrives (``durations``: collect request timings).
        A worker silent for longer than :func:`silence_limit` is killed, process group and
        all; the certificates it did not report are then failures like any other."""
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the daemon speaks to systemd
        verbose = 1 if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else 0
        log.debug("renewing %s in a worker process", ", ".join(names))
        with self._lock:
            if self._stopping:
                return WorkerResult(0)
            try:
                # -P: nothing is imported from the working directory (a planted agent/
                # package there would run as root at the first renewal).
                proc = self._proc = subprocess.Popen(
                    [sys.executable, "-P", "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, env=env, start_new_session=True,
                )  # fmt: skip
            except OSError as err:
                raise WorkerStartError(
                    f"cannot start the renewal worker ({sys.executable}: {err.strerror}): the "
                    "agent's installation changed under the running daemon"
                ) from None
        assert proc.stdin is not None and proc.stdout is not None
        result = WorkerResult(0)
        try:
            with proc.stdin:
                proc.stdin.write(request(config, names, verbose, durations))
        except BrokenPipeError:
            pass  # it died before reading: no outcome, reported as a failure below
        limit = silence_limit(config)
        with proc.stdout:
            lines = LinesUntilSilent(proc.stdout, limit)
            read_results(lines, result, on_outcome)
        if lines.silent:
            log.error("the renewal worker reported nothing for %.0f s; killed it (and its "
                      "processes)", limit)  # fmt: skip
            kill_group(proc)
        result.exit_code = proc.wait()
        with self._lock:
            self._proc = None
        return result

    def stop(self, grace: float) -> None:
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(proc)


class LinesUntilSilent:
    """The lines of ``stream``, until EOF or until none arrives for ``limit`` seconds."""

    def __init__(self, stream: IO[bytes], limit: float) -> None:
        self.fd, self.limit = stream.fileno(), limit
        self.silent = False

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        while True:
            ready, _, _ = select.select([self.fd], [], [], self.limit)
            if not ready:
                self.silent = True
                return
            chunk = os.read(self.fd, 65536)
            if not chunk:
                if pending:
                    yield pending
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line for line in lines if line)

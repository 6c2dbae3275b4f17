"""The worker's side of the daemon's pipe (see :mod:`agent.daemon.worker` for the
protocol): read the configuration in force and the names on stdin, renew them, write one
JSON line per outcome and the request durations on stdout. Run as
``python -m agent.cli.worker`` by the daemon; not a command for people."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..config import load
from ..engine.metrics import Metrics
from ..engine.renewer import Renewer
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AgentError
from ..model import Outcome, Status
from .logfmt import setup_logging
from .quick import exit_now

log = logging.getLogger("acme-agent")


_EMIT = threading.Lock()  # up to max_concurrent_orders threads report outcomes


def emit(message: dict[str, Any]) -> None:
    """One line of the protocol, whole."""
    line = json.dumps(message) + "\n"
    with _EMIT:
        sys.stdout.write(line)
        sys.stdout.flush()


def work(request: dict[str, Any]) -> int:
    config = load(Path(request["config"]), files=request["files"])
    if config.log_format != "text":
        setup_logging(int(request.get("verbose", 0)), False, config.log_format)
    # Request durations, handed to the daemon for its histogram (when it has [metrics]).
    metrics = Metrics() if request.get("durations") else None

    held: set[str] = set()  # outcomes that deployment may still change: sent after it

    def report(outcome: Outcome) -> None:
        cert = config.certificate(outcome.name)
        if cert is not None and cert.deploy is not None and not outcome.failed:
            held.add(outcome.name)
        else:
            emit({"outcome": outcome.to_json()})

    renewer = Renewer(config, metrics=metrics, on_outcome=report)
    names = [str(n) for n in request["names"]]
    known = [n for n in names if config.certificate(n) is not None]
    for name in names:  # never the whole batch for one name the daemon knows and we do not
        if config.certificate(name) is None:
            detail = f"{name}: not in the configuration handed to the worker; will retry"
            report(Outcome(name, Status.FAILED, detail, error_type="config"))
    outcomes: list[Outcome] = []
    beating = threading.Event()
    threading.Thread(target=_heartbeat, args=[beating], name="heartbeat", daemon=True).start()
    try:
        if known:
            outcomes = renewer.run(renewer.select(known))
        for outcome in outcomes:
            if outcome.name in held:
                emit({"outcome": outcome.to_json()})
    finally:
        beating.set()
        if metrics is not None:
            emit({"durations": metrics.samples})
    failed = len(known) < len(names) or any(o.failed for o in outcomes)
    return EXIT_FAILED if failed else EXIT_OK


# While it works (orders, deployments, hooks), the worker says so this often: the daemon
# takes a worker that stays silent for much longer for hung (stopped, or worse).
HEARTBEAT = 5.0


def _heartbeat(done: threading.Event) -> None:
    while not done.wait(HEARTBEAT):
        emit({"working": True})


def _stop(signum: int, frame: object) -> None:
    """SIGTERM from the daemon: unwind (tokens removed, leases released, locks dropped)."""
    raise KeyboardInterrupt


def main() -> int:
    os.umask(0o077)  # nothing we create is for other users unless we chmod it so
    signal.signal(signal.SIGTERM, _stop)
    try:
        request = json.loads(sys.stdin.buffer.read())
    except ValueError as err:
        setup_logging(0, False)
        log.error("renewal worker: unreadable request on stdin (%s)", err)
        return EXIT_USAGE
    setup_logging(int(request.get("verbose", 0)), False)
    try:
        return work(request)
    except AgentError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    exit_now(main())

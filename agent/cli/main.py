"""Command line: parse arguments, build objects, report. No certificate logic here."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..config import Config, load, resolve_config_path
from ..defaults import CONFIG_ENV, DEFAULT_CONFIG_PATH
from ..errors import EXIT_FAILED, EXIT_OK, AgentError, ConfigError, StoreError, UsageError
from ..model import Outcome, Status
from . import renew_cache
from .logfmt import setup_logging
from .ops import add_operator_commands, run_operator_command

log = logging.getLogger("acme-agent")


DESCRIPTION = """\
An ACME (RFC 8555) certificate agent: registers with your CA (with External Account
Binding when the CA asks for it), obtains certificates over HTTP-01 and keeps them renewed.
Certificates land in <state_dir>/live/<name>/{cert,chain,fullchain,privkey}.pem."""

EPILOG = f"""\
configuration: --config PATH, else ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH}
exit codes: 0 all fine, 1 some certificate failed, 2 bad usage or configuration"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acme-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: protocol debugging)"
    )
    loudness.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line (journald, ELK); "
        "also the config key log_format",
    )
    parser.add_argument("--version", action="version", version=f"acme-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    renew = commands.add_parser(
        "renew",
        help="obtain missing certificates and renew those that are due",
        description="Obtain missing certificates and renew those that are due (less than a "
        "third of their lifetime left, half for certificates of 10 days or less). Certificates "
        "whose domains or key type changed in the configuration are reissued.",
    )
    renew.add_argument("--force", action="store_true", help="renew even if not due")
    renew.add_argument(
        "--dry-run",
        action="store_true",
        help="run the whole protocol against each CA's staging_directory (Let's Encrypt's "
        "staging for its production directory) for every selected certificate, then discard "
        "the result: no live files, deploys, hooks. Refused (exit 2, before any request) "
        "for a CA without staging_directory, unless --allow-production",
    )
    renew.add_argument(
        "--allow-production",
        action="store_true",
        help="with --dry-run: a CA without staging_directory gets the dry run for real "
        "(real certificates, discarded; at some CAs a charge per domain)",
    )
    renew.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="write Prometheus metrics for node_exporter's textfile collector (atomically); "
        "also [metrics] textfile",
    )
    renew.add_argument(
        "--cert",
        metavar="NAME",
        action="append",
        default=[],
        help="only this certificate (repeatable)",
    )

    register = commands.add_parser(
        "register",
        help="create or find the ACME account and print its URL",
        description="Create the ACME account (using EAB credentials if configured) or find the "
        "stored one, and print its URL. EAB credentials are used only once. One CA: --ca NAME "
        '("default" is [acme], the default).',
    )
    register.add_argument(
        "--ca", metavar="NAME", default="default", help="at this CA (default: [acme])"
    )

    commands.add_parser(
        "run",
        help="run as a daemon: renew on schedule, reload configuration on change",
        description="Run in the foreground as a daemon (for systemd: Type=notify). Obtains "
        "missing certificates at start, renews each at its time (lifetime ratio, renew_before "
        "or the CA's ARI window), retries failures with backoff, watches the config file and "
        "certs_dir (SIGHUP reloads too), and stops cleanly on SIGTERM.",
    )

    add_operator_commands(commands)

    demo = commands.add_parser(
        "demo",
        help="run the whole job against a local pebble CA on loopback",
        description="Start a local pebble ACME CA on 127.0.0.1 (EAB required), write a "
        "configuration for it, obtain a certificate and show it. Needs the Debian package "
        "'pebble'. Touches only loopback and DIR.",
    )
    demo.add_argument(
        "--dir", default="acme-agent-demo", help="working directory (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet, args.log_format or "text")
    os.umask(0o077)  # nothing we create is for other users unless we chmod it so
    try:
        return run_command(args)
    except AgentError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def run_command(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.dir)
    path = resolve_config_path(args.config)
    if args.command == "validate":
        from .validate import cmd_validate

        return cmd_validate(path)
    if args.command == "check":
        from .ops import check_unknown

        try:
            config = load(path)
        except ConfigError as err:  # a monitoring plugin says UNKNOWN, in one line
            return check_unknown(path, str(err))
        return run_operator_command(config, args)
    if args.command == "run":
        from ..daemon.service import run_daemon

        return run_daemon(path)
    config = load(path)
    if args.log_format is None and config.log_format != "text":
        setup_logging(args.verbose, args.quiet, config.log_format)
    if args.command == "register":
        return cmd_register(config, args.ca)
    if args.command == "renew":
        if args.dry_run and args.force:
            raise UsageError("--dry-run already renews every selected certificate; drop --force")
        if args.allow_production and not args.dry_run:
            raise UsageError("--allow-production goes with --dry-run only")
        return cmd_renew(config, args.cert, args.force, args.dry_run, args.metrics_textfile,
                         args.allow_production)  # fmt: skip
    return run_operator_command(config, args)


def cmd_register(config: Config, ca_name: str = "default") -> int:
    from ..engine.accountops import ca_named
    from ..engine.accounts import open_client
    from ..fleet.cluster import open_cluster
    from ..store.certs import Store

    # In fleet mode, the fleet's shared account.
    ca = ca_named(config, ca_name)
    client = open_client(ca, Store(config.state_dir), open_cluster(config.cluster))
    print(client.account_uri)
    return EXIT_OK


def cmd_renew(
    config: Config,
    names: list[str],
    force: bool,
    dry_run: bool = False,
    textfile: str | None = None,
    allow_production: bool = False,
) -> int:
    from ..engine.renewer import Renewer

    target = Path(textfile) if textfile else config.metrics.textfile if config.metrics else None
    metrics = None
    if target is not None:
        from ..engine.metrics import Metrics

        metrics = Metrics(fleet=config.cluster is not None)
    progress = Progress()
    renewer = Renewer(config, dry_run=dry_run, allow_production=allow_production,
                      on_outcome=progress.outcome, metrics=metrics)  # fmt: skip
    broken = problem_outcomes(config, names)
    selected = [n for n in names if config.problem(n) is None or config.certificate(n)]
    certs = renewer.select(selected) if selected or not names else []
    if dry_run:
        renewer.check_dry_run(certs)  # before any request: a dry run never costs anything
    if not certs and not broken:
        log.warning("%s: no certificates configured", config.path)
        return EXIT_OK
    progress.total = len(certs) + len(broken)
    for outcome in broken:
        progress.outcome(outcome)
    cacheable = renew_cache.cacheable(
        selected=bool(names), force=force, dry_run=dry_run, textfile=target is not None,
        cluster=config.cluster is not None, metrics=config.metrics is not None,
        log_format=config.log_format,
    )  # fmt: skip
    paths = (str(config.path), str(config.certs_dir) if config.certs_dir else None,
             str(config.state_dir))  # fmt: skip
    taken = renew_cache.fingerprint(*paths) if cacheable else []
    outcomes = renewer.run(certs, force=force) + broken
    progress.finish(outcomes)
    if cacheable and not config.problems:  # a file in error is reported on every run
        with contextlib.suppress(AgentError):  # only a cache: the next run goes in full
            renew_cache.save(*paths, taken, outcomes, progress.lines)
    if metrics is not None and target is not None:
        from ..engine.status import gather
        from ..store.certs import Store
        from ..store.skew import load_skew

        metrics.refresh(gather(config))
        metrics.config_errors.set(len(config.problems))
        metrics.clock_skew.set(load_skew(Store(config.state_dir)) or 0)
        try:
            metrics.write_textfile(target)
        except OSError as err:
            raise StoreError(f"{target}: cannot write the metrics textfile ({err})") from None
    in_error = [p for p in config.problems if not names or p.name in names]
    return EXIT_FAILED if in_error or any(o.failed for o in outcomes) else EXIT_OK


def problem_outcomes(config: Config, names: list[str]) -> list[Outcome]:
    """A failed outcome for each file of certs_dir in error (of those selected): a fault
    stays with its certificate, and every other one is renewed as usual."""
    outcomes = []
    for problem in config.problems:
        if names and problem.name not in names:
            continue
        log.error("%s", problem.message, extra={"cert": problem.name, "error_type": "config"})
        if config.certificate(problem.name) is None:  # else: a second file for a name in use
            detail = f"configuration error: {problem.message}; fix the file (acme-agent validate)"
            outcomes.append(Outcome(problem.name, Status.FAILED, detail, error_type="config"))
    return outcomes


class Progress:
    """A line per certificate as it completes (and a counter on a terminal), a summary."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # outcomes arrive from several orders at once
        self.total = 0
        self.done = 0
        self.printed: dict[str, str] = {}
        self.lines: list[str] = []  # everything printed, in order (for the renew cache)
        self.tty = sys.stderr.isatty()

    def outcome(self, outcome: Outcome) -> None:
        with self.lock:
            self.done += 1
            self._print(outcome)
            if self.tty and self.total > 1:
                sys.stderr.write(f"\r{self.done}/{self.total} certificates\r")
                sys.stderr.flush()

    def _print(self, outcome: Outcome) -> None:
        line = describe(outcome)
        if self.printed.get(outcome.name) != line:
            self.printed[outcome.name] = line
            self.lines.append(line)
            print(line, flush=True)

    def finish(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:  # deployment may have changed an outcome
            self._print(outcome)
        counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
        shown = (Status.ISSUED, Status.FAILED)
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in shown)
        self.lines.append(f"{len(outcomes)} certificates: {parts}")
        print(self.lines[-1])


STATUSES = tuple(Status)


def describe(outcome: Outcome) -> str:
    line = f"{outcome.name}: {outcome.status}"
    if outcome.status == Status.ISSUED:
        line += f" ({outcome.detail}); valid until {outcome.not_after:%Y-%m-%d %H:%M} UTC"
        line += f"; {outcome.live_dir}"
    elif outcome.status in (Status.DEPLOYED, Status.DRY_RUN, Status.WAITING):
        line += f" ({outcome.detail})"
    elif outcome.status == Status.UNCHANGED:
        line += f"; valid until {outcome.not_after:%Y-%m-%d %H:%M} UTC; {outcome.detail}"
    else:
        line += f": {outcome.detail.removeprefix(outcome.name + ': ')}"
    return line


if __name__ == "__main__":
    raise SystemExit(main())

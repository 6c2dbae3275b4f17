"""Operator commands: status, check, revoke, account, import-certbot (and delete, in
:mod:`.delete`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..model import REVOCATION_REASONS
from .delete import add_delete_parser, cmd_delete


def add_operator_commands(commands: Any) -> None:
    commands.add_parser(
        "validate",
        help="check the configuration (every file of certs_dir too): one line per problem",
        description="Parse and check the whole configuration without touching the state or the "
        "network: the main file, every file of certs_dir, and the secret files they name (EAB "
        "HMAC key, Redis password, cluster key). Prints one line per problem, naming the file "
        "and the field, and exits 2 when there is any; 0 and a summary otherwise. systemd's "
        "ExecReload runs it first, so `systemctl reload` fails on a bad edit.",
    )
    status = commands.add_parser(
        "status",
        help="show every certificate: expiry, next renewal and why, last attempt",
        description="A table of every configured certificate from the state on disk (no "
        "request to the CA): domains, key type, issuer, not-after, time left, next renewal and "
        "why (ARI window, renew_before or lifetime ratio), last attempt and its result.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")

    check = commands.add_parser(
        "check",
        help="monitoring plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, one summary line",
        description="Nagios/Icinga-style check. Defaults are relative to each certificate's "
        "lifetime: WARNING once past its renewal time or when its last renewal failed (or it is "
        "issued but not deployed); CRITICAL under 10%% of its lifetime left, expired, or "
        "missing.",
    )
    check.add_argument("--warn", metavar="LEFT", help='WARNING below this time left: "10d" or 0.3')
    check.add_argument("--crit", metavar="LEFT", help='CRITICAL below this time left: "3d" or 0.1')

    revoke = commands.add_parser(
        "revoke",
        help="revoke a certificate at the CA (the next run obtains a new one)",
        description="Revoke the certificate in service for NAME; the next renew (or the daemon) "
        "obtains a new one.",
    )
    revoke.add_argument("--cert", metavar="NAME", required=True)
    revoke.add_argument("--reason", choices=sorted(REVOCATION_REASONS), default="unspecified")
    revoke.add_argument(
        "--ca", metavar="NAME", help="revoke at this CA (default: the one that issued it)"
    )

    account = commands.add_parser(
        "account",
        help="show, update, roll over (new key) or deactivate the ACME account of a CA",
        description="show: the account as the CA has it. update --email ADDR: replace its "
        "contact (RFC 8555 section 7.3.2). rollover: replace the account key (RFC 8555 section "
        "7.3.5). deactivate: end the account at the CA (needs --yes or a confirmation); the "
        'next run registers a new one. Each acts on the account at one CA: --ca NAME ("default" '
        "is [acme], the default; else a [ca.NAME] table).",
    )
    account.add_argument("action", choices=["show", "update", "rollover", "deactivate"])
    account.add_argument(
        "--ca", metavar="NAME", default="default", help="which CA's account (default: [acme])"
    )
    account.add_argument("--email", metavar="ADDR", help="update: the new contact address")
    account.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    account.add_argument("--json", action="store_true", help="machine-readable `show`")

    importer = commands.add_parser(
        "import-certbot",
        help="take over certbot's certificates without reissuing",
        description="Turn certbot lineages (renewal/*.conf) into certificate definitions in "
        "certs_dir (with their deploy hook, installer reload, reuse_key, profile and "
        "preferred_chain) and install their current files, so a host switches without "
        "reissuing; take over certbot's account for a configured CA (no new EAB); list the "
        "nginx/Apache lines that read certbot's live/ files with their replacement. Reports "
        "what could not be mapped; a second run says 'already imported'.",
    )
    importer.add_argument("directory", nargs="?", default="/etc/letsencrypt")
    importer.add_argument(
        "--scan",
        metavar="DIR",
        action="append",
        help="web server configuration to search for certbot's paths (repeatable; default "
        "/etc/nginx, /etc/apache2, /etc/httpd)",
    )
    importer.add_argument(
        "--link",
        action="store_true",
        help="replace certbot's live/<name> by a link to acme-agent's, and take the lineage "
        "out of certbot's renewals (renewal/<name>.conf -> .conf.acme-agent)",
    )
    add_delete_parser(commands)


def run_operator_command(config: Config, args: argparse.Namespace) -> int:
    if args.command == "status":
        return cmd_status(config, args.json)
    if args.command == "check":
        return cmd_check(config, args.warn, args.crit)
    if args.command == "revoke":
        from ..engine.accountops import revoke

        serial = revoke(config, args.cert, args.reason, args.ca)
        print(f"{args.cert}: serial {serial} revoked; the next run obtains a new certificate")
        return EXIT_OK
    if args.command == "account":
        return cmd_account(config, args)
    if args.command == "import-certbot":
        from .certbot_import import run_import

        return run_import(config, args.directory, args.scan, args.link)
    if args.command == "delete":
        return cmd_delete(config, args)
    raise UsageError(f"unknown command {args.command}")


def cmd_status(config: Config, as_json: bool) -> int:
    from ..engine.status import gather, table, to_json

    statuses = gather(config, orphans=True)
    print(to_json(statuses) if as_json else table(statuses))
    return EXIT_OK


def cmd_check(config: Config, warn: str | None, crit: str | None) -> int:
    from ..engine.status import gather
    from ..policy.check import evaluate, parse_threshold, perfdata

    try:
        warn_t = parse_threshold(warn) if warn else None
        crit_t = parse_threshold(crit) if crit else None
    except ValueError:
        raise UsageError(
            'check: --warn/--crit take a duration ("10d", "12h") or a fraction of the '
            "lifetime between 0 and 1"
        ) from None
    unreadable = _unreadable_state(config.state_dir)
    if unreadable is not None:
        print(f"UNKNOWN: {unreadable}")
        return UNKNOWN
    now = datetime.now(UTC)
    statuses = gather(config, now, orphans=True)
    others = [p.message for p in config.problems if config.certificate(p.name) is not None]
    from ..store.certs import Store
    from ..store.skew import load_skew

    skew = load_skew(Store(config.state_dir))
    code, summary = evaluate(statuses, now, warn_t, crit_t, others, skew)
    data = perfdata(statuses, warn_t, crit_t)
    print(f"{summary} | {data}" if data else summary)
    return code


# Monitoring plugins' exit code when the state of what they check cannot be known.
UNKNOWN = 3
NEEDS_ACCESS = "run check as root, or give the monitoring user read access to it"


def check_unknown(path: Path, message: str) -> int:
    """`check` could not read the configuration: UNKNOWN, one line."""
    unreadable = "cannot read" in message or "Permission denied" in message
    print(f"UNKNOWN: {message}; {NEEDS_ACCESS}" if unreadable else f"UNKNOWN: {message}")
    return UNKNOWN


def _unreadable_state(state_dir: Path) -> str | None:
    """Why the state cannot be read by this user (None: it can, or there is none yet)."""
    for folder in (state_dir, state_dir / "live"):
        try:
            with os.scandir(folder) as entries:
                next(entries, None)
        except FileNotFoundError:
            return None
        except OSError as err:
            return f"{folder}: cannot read the state ({err.strerror}); {NEEDS_ACCESS}"
    return None


def cmd_account(config: Config, args: argparse.Namespace) -> int:
    from ..engine import accountops

    action, yes, as_json = args.action, args.yes, args.json
    ca = accountops.ca_named(config, args.ca)
    if (args.email is not None) != (action == "update"):
        raise UsageError("account update needs --email ADDR (and --email goes with update only)")
    if action == "update":
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", args.email):
            raise UsageError(f"--email {args.email!r}: not an e-mail address")
        contact = accountops.update_email(config, ca, args.email)
        print(f"{ca.label}: the account's contact is now {', '.join(contact)}")
        return EXIT_OK
    if action == "show":
        info = accountops.show(config, ca)
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                print(f"{key + ':':<12}{value}")
        return EXIT_OK if info["status"] == "valid" else EXIT_FAILED
    if action == "rollover":
        print(f"{accountops.rollover(config, ca)}: account key replaced")
        return EXIT_OK
    if not yes and not _confirm(f"Deactivate the ACME account at {ca.label}? This cannot be "
                                "undone."):  # fmt: skip
        raise UsageError("account deactivate: not confirmed (pass --yes to skip the question)")
    print(f"{accountops.deactivate(config, ca)}: deactivated")
    return EXIT_OK


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

"""`delete --cert NAME [--revoke] [--ca NAME] [--yes]`: the parser and the one line it
prints (the work is :mod:`agent.engine.deletion`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Config
from ..errors import EXIT_OK, UsageError
from ..model import REVOCATION_REASONS
from . import renew_cache

# How the one line names each folder of state_dir it removed something from.
LABELS = {"attempts": "attempts", "ari": "ARI state", "deployed": "deployment record",
          "orders": "pending order", "revoked": "revocation note", "locks": "lock"}  # fmt: skip


def add_delete_parser(commands: Any) -> None:
    delete = commands.add_parser(
        "delete",
        help="remove a certificate no longer in the configuration (--revoke: revoke it first)",
        description="Remove everything state_dir holds for NAME (live, archive, facts, "
        "attempts, ARI state, deployment record, pending order, lock) once it is no longer "
        "in the configuration (`status` lists such certificates); with --revoke, revoke the "
        "certificate in service first, at the CA that issued it (nothing is deleted if that "
        "fails). A configured NAME is refused (exit 2). On a terminal it asks first (--yes: "
        "do not ask); without one it proceeds. Deploy targets outside state_dir are not "
        "touched; in fleet mode only this host's copy is removed.",
    )
    delete.add_argument("--cert", metavar="NAME", required=True)
    delete.add_argument("--revoke", action="store_true", help="revoke it at the CA first")
    delete.add_argument(
        "--ca", metavar="NAME", help="the CA to revoke at ([acme] is \"default\"), when the "
        "one that issued it is not recorded or not configured any more",
    )  # fmt: skip
    delete.add_argument(
        "--reason", choices=sorted(REVOCATION_REASONS), default="cessationOfOperation",
        help="the revocation reason (default: %(default)s)",
    )  # fmt: skip
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def cmd_delete(config: Config, args: argparse.Namespace) -> int:
    from ..engine.deletion import delete, refuse_configured

    if not args.revoke and (args.ca is not None or args.reason != "cessationOfOperation"):
        raise UsageError("delete: --ca and --reason are for --revoke")
    refuse_configured(config, args.cert)  # before asking anything
    what = "Revoke and delete" if args.revoke else "Delete"
    if not args.yes and not _confirmed(f"{what} {args.cert} from {config.state_dir}?"):
        raise UsageError(f"delete --cert {args.cert}: not confirmed (--yes: do not ask)")
    try:
        done = delete(config, args.cert, revoke=args.revoke, ca=args.ca, reason=args.reason)
    finally:  # also after a partial removal: never answer with what is gone
        renew_cache.forget(str(config.state_dir))
    kinds = list(dict.fromkeys(f.kind for f in done.removed))
    plural = "" if done.versions == 1 else "s"
    labels = {**LABELS, "archive": f"archive ({done.versions} version{plural})"}
    parts = [labels.get(k, k) for k in kinds]
    line = f"{done.name}: deleted from {config.state_dir}: {', '.join(parts)}"
    if done.revoked:
        line += f"; {done.revoked}"
    if config.cluster is not None:
        line += "; on this host only: the fleet's record in Redis is kept"
    print(line)
    return EXIT_OK


def _confirmed(question: str) -> bool:
    """Asked only on a terminal: without one (scripts, automation) removing the certificate
    from the configuration was the decision, and the command proceeds."""
    if not sys.stdin.isatty():
        return True
    return input(f"{question} This cannot be undone. [y/N] ").strip().lower() in ("y", "yes")

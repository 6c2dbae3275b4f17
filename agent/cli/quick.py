"""The console script's entry: a plain ``renew`` with nothing due is answered from the
renew cache (:mod:`.renew_cache`) without loading the agent; everything else goes to
:mod:`agent.cli.main`.

Imports are kept to the few a Python start-up already loads; the full path costs
~0.1 s of imports and class creation for 100 certificates, this one ~0.01 s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import renew_cache


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    answered = renew_cache.answer(args)
    if answered is not None:
        return answered
    from .main import main as full_main

    return exit_now(full_main(args))


def exit_now(code: int) -> int:
    """End the process without the interpreter's teardown (freeing every module of the
    protocol stack takes ~40 ms): everything we write is flushed, fsynced and renamed
    before this point, and the threads we start are done or daemons. Output and log
    handlers are flushed here."""
    import logging

    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to say
        pass
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())

"""The renew cache: ``state_dir/renew-cache.json``, one module owning its format, its
fingerprint and the decision whether a run is :func:`cacheable`.

A ``renew`` run in which every certificate was "unchanged" leaves what it printed, until
when nothing can change (the earliest next renewal or renewal-information check), and a
fingerprint of everything its decision read: the configuration files (and certs_dir),
and the folders of state that change when a certificate is issued, deployed, revoked or
its renewal information is refreshed. A plain ``renew`` (no flags but ``--config`` and
``-q``) prints the cached lines when the fingerprint is unchanged and that time has not
come; anything else, any doubt, and any error here, runs the full command.

Imports only what a Python start-up already loads (the quick entry reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..defaults import CONFIG_ENV, DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR

CACHE_NAME = "renew-cache.json"
# State folders whose change can make a certificate due or its deployment pending.
STATE_FOLDERS = ("live", "revoked", "deployed", "ari")
FORMAT = 4
LIVE_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def cacheable(
    *, selected: bool, force: bool, dry_run: bool, textfile: bool, cluster: bool,
    metrics: bool, log_format: str,
) -> bool:  # fmt: skip
    """May this run be answered from (and leave) the cache? The one place that decides, for
    the quick entry and the full command alike: a plain `renew` (every certificate, no
    flags) with a configuration without [cluster] (it must talk to Redis), [metrics] or a
    textfile (it must write it) or JSON logs."""
    return not (selected or force or dry_run or textfile or cluster or metrics) and (
        log_format == "text"
    )


def answer(args: list[str]) -> int | None:
    """0 when a plain ``renew`` was answered from the cache; None to run in full."""
    config = _plain_renew_config(args)
    if config is None:
        return None
    try:
        settings = _settings(config)
        if settings is None:
            return None
        state_dir, certs_dir = settings
        with open(os.path.join(state_dir, CACHE_NAME), "rb") as handle:
            cache = json.loads(handle.read())
        if (
            cache.get("format") != FORMAT
            or cache.get("config") != os.path.abspath(config)
            or time.time() >= float(cache["until"])
            or cache.get("fingerprint") != fingerprint(config, certs_dir, state_dir)
        ):
            return None
        lines = cache["lines"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return 0


def _plain_renew_config(args: list[str]) -> str | None:
    """The config path of ``[--config PATH] [-q] renew [-q]``, or None for anything else."""
    config = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-q", "--quiet", "renew"):
            continue
        if arg == "--config" and rest:
            config = rest.pop(0)
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            return None
    if "renew" not in args:
        return None
    return config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def _settings(config: str) -> tuple[str, str | None] | None:
    """(state_dir, certs_dir) read from the main file; None when the run is not
    :func:`cacheable` (a cluster, a metrics textfile, non-text logs)."""
    import tomllib

    with open(config, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_mode & 0o022 or info.st_uid not in (0, os.geteuid()):
            return None  # refused by the full path (agent/config/trust.py), with the fix
        data = tomllib.load(handle)
    plain = {"selected": False, "force": False, "dry_run": False, "textfile": False}
    settings = {"cluster": "cluster" in data, "metrics": "metrics" in data}
    if not cacheable(**plain, **settings, log_format=str(data.get("log_format", "text"))):
        return None
    base = os.path.dirname(os.path.abspath(config))
    state_dir = os.path.join(base, str(data.get("state_dir") or DEFAULT_STATE_DIR))
    certs_dir = data.get("certs_dir")
    return state_dir, os.path.join(base, str(certs_dir)) if certs_dir else None


def _stat(path: str) -> list[Any]:
    """The file's identity and state, not its name: the full command (which knows the
    paths from the parsed configuration) and this module must agree on the same files."""
    try:
        info = os.stat(path)
    except OSError:
        return [None]
    # ctime too: no tool can set it back (cp -p and touch -d restore mtime, not ctime).
    return [info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino, info.st_mode]


def fingerprint(config: str, certs_dir: str | None, state_dir: str) -> list[Any]:
    """What a "nothing is due" decision depends on, besides the time."""
    entries = [_stat(config)]
    if certs_dir is not None:
        entries.append(_stat(certs_dir))
        try:
            names = sorted(e.name for e in os.scandir(certs_dir) if e.name.endswith(".toml"))
        except OSError:
            names = []
        entries += [[name, *_stat(os.path.join(certs_dir, name))] for name in names]
    entries += [_stat(os.path.join(state_dir, folder)) for folder in STATE_FOLDERS]
    # The files in service (through the links): a deleted key, a truncated certificate
    # or a removed archive makes the full command look, and repair.
    live = os.path.join(state_dir, "live")
    try:
        names = sorted(e.name for e in os.scandir(live) if not e.name.startswith("."))
    except OSError:
        names = []
    for name in names:
        entries += [[name, *_stat(os.path.join(live, name, f))] for f in LIVE_FILES]
    return entries


def save(
    config: str, certs_dir: str | None, state_dir: str, taken: list[Any],
    outcomes: Sequence[Any], lines: list[str],
) -> None:  # fmt: skip
    """Remember a run where nothing was due (every outcome "unchanged", each knowing until
    when); ``taken`` is the fingerprint from before the run read anything (a change during
    the run makes the cache miss, never wrong)."""
    from pathlib import Path

    from ..store.files import write_file_atomic

    rechecks = [o.recheck for o in outcomes if o.status == "unchanged"]
    if not rechecks or len(rechecks) != len(outcomes) or None in rechecks:
        return  # something happened, or it is unknown until when nothing can
    until = min(rechecks).timestamp()
    if fingerprint(config, certs_dir, state_dir) != taken:
        return  # the run itself changed state (e.g. refreshed renewal information)
    data = {
        "format": FORMAT,
        "config": os.path.abspath(config),
        "until": until,
        "fingerprint": taken,
        "lines": lines,
    }
    write_file_atomic(Path(state_dir) / CACHE_NAME, json.dumps(data).encode(), 0o600)


def forget(state_dir: str) -> None:
    """Drop the cache (after `delete`: it must never answer with a certificate that is
    gone); best effort, as a stale cache misses anyway once its fingerprint differs."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(state_dir, CACHE_NAME))

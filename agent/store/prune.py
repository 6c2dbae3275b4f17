"""Archive pruning (``keep_versions = N``): after a new version went into service, the
archive versions beyond the N newest are removed. Never the one in service, never one
newer than it, never the one last deployed (what the targets hold, and what a repair
prefers); with nothing in service, nothing is removed.

A version is first renamed to a staging name (one ``rename(2)``: it is gone from the
archive at once, never half-removed where a repair would look for an intact one), then
deleted; a leftover staging folder is removed by the next install. A failure is logged,
never raised: pruning must not fail a renewal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from .certs import Store
from .files import TMP_PREFIX, fsync_dir

log = logging.getLogger(__name__)


def versions_to_prune(
    versions: Sequence[str], live: str | None, keep: int, deployed: str | None = None
) -> list[str]:
    """Which of ``versions`` (newest first) to remove so that ``keep`` remain, sparing
    ``live`` (the one in service), every version newer than it, and ``deployed``."""
    if live is None or live not in versions:
        return []  # nothing in service (or not ours): nothing is safe to remove
    spared = {*versions[: max(keep, 1)], *versions[: versions.index(live) + 1], deployed}
    return [v for v in versions if v not in spared]


def prune_archive(store: Store, name: str, keep: int | None) -> list[str]:
    """Remove the archive versions of ``name`` beyond the ``keep`` newest (None: keep
    every one); the versions removed. The caller holds ``store.lock(name)``."""
    if keep is None:
        return []
    archive = Path(os.path.normpath(store.archive_dir(name)))  # as live_folder spells it
    try:
        versions = store.versions(name)
    except OSError as err:
        log.warning("%s: archive not pruned (%s: %s)", name, archive, err.strerror,
                    extra={"cert": name})  # fmt: skip
        return []
    folder = store.live_folder(name)
    live = folder.name if folder is not None and folder.parent == archive else None
    removed = []
    for version in versions_to_prune(versions, live, keep, store.deployed_version(name)):
        staging = archive / f"{TMP_PREFIX}pruned-{version}-{secrets.token_hex(4)}"
        try:
            os.rename(archive / version, staging)
        except OSError as err:
            log.warning("%s: archive version %s not removed (%s); keep_versions = %d",
                        name, version, err.strerror, keep, extra={"cert": name})  # fmt: skip
            continue
        removed.append(version)
        shutil.rmtree(staging, ignore_errors=True)  # what is left goes at the next install
    if removed:
        with contextlib.suppress(OSError):  # durability of a removal only: done again
            fsync_dir(archive)
        log.info("%s: removed archive version%s %s (keep_versions = %d)", name,
                 "s" if len(removed) > 1 else "", ", ".join(removed), keep,
                 extra={"cert": name})  # fmt: skip
    return removed

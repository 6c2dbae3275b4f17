"""Everything ``state_dir`` holds for one certificate name, found and removed for
``acme-agent delete``; and the names it holds something for (the orphans of `status`).

Per name: ``live/<name>`` (the link, a temporary link of a crashed swap, a damaged plain
folder set aside as ``.<name>.damaged-<time>``), ``archive/<name>/`` (every version, its
PEM files and ``facts.json``), and ``<name>.json`` in ``attempts/``, ``ari/``,
``deployed/``, ``orders/``, ``revoked/<name>``, each with the copies set aside as
``*.corrupt-<time>`` and dead writers' temporaries; ``locks/<name>.lock`` last. Names are
matched whole, never as a prefix: "www" is not "www2" nor "www.example".

Files of every name (``renew-cache.json``, ``clock-skew.json``, ``ari/_ca.json``,
``orders/_replaces.json``, accounts) are not a certificate's and are never removed here.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import is_certificate_name
from ..errors import StoreError
from .certs import Store
from .files import describe

# Folders of per-certificate state files named <name>.json ("revoked" holds <name>).
JSON_FOLDERS = ("attempts", "ari", "deployed", "orders", "links")
# What set_aside() and the live-set repair append to a name (a time stamp).
_ASIDE = r"(?:\.corrupt-\d{8}T\d{6})?"
_TEMP = r"\.\d+\.[0-9a-f]{8}"  # files.temp_name(): .tmp-<name>.<pid>.<random>


@dataclass(frozen=True)
class Found:
    """One path of a certificate's state: ``kind`` is its folder under state_dir."""

    kind: str
    path: Path


def _matches(folder: Path, pattern: re.Pattern[str], keep: frozenset[str]) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if pattern.match(e.name) and e.name not in keep]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(describe(err, folder)) from None
    return [folder / n for n in sorted(names)]


def state_of(store: Store, name: str, others: frozenset[str] = frozenset()) -> list[Found]:
    """Every path ``state_dir`` holds for ``name``: live entries first, the archive, the
    state files, and the lock file last (the order they are removed in). ``others``: the
    other names known (configured or stored), whose own files are never taken for a
    set-aside copy of this one's."""
    if not is_certificate_name(name):
        raise StoreError(f"{name!r} is not a certificate name")
    n = re.escape(name)
    root = store.root
    found = [Found("live", p) for p in _matches(
        root / "live", re.compile(rf"\A(?:{n}|\.tmp-{n}{_TEMP}|\.{n}\.damaged-\d{{8}}T\d{{6}})\Z"),
        frozenset(),
    )]  # fmt: skip
    archive = store.archive_dir(name)
    if os.path.lexists(archive):
        found.append(Found("archive", archive))
    state = re.compile(rf"\A(?:{n}\.json{_ASIDE}|\.tmp-{n}\.json{_TEMP})\Z")
    for folder in JSON_FOLDERS:
        found += [Found(folder, p) for p in _matches(root / folder, state, frozenset())]
    revoked = re.compile(rf"\A(?:{n}{_ASIDE}|\.tmp-{n}{_TEMP})\Z")
    found += [Found("revoked", p) for p in _matches(root / "revoked", revoked, others)]
    lock = root / "locks" / f"{name}.lock"
    if os.path.lexists(lock):
        found.append(Found("locks", lock))
    return found


def stored_names(store: Store) -> set[str]:
    """The certificate names ``state_dir`` holds something for (a live link, an archive,
    an attempt, ARI state, a deployment record or a pending order); lock files alone do
    not count (every name ever worked on has one)."""
    names: set[str] = set()
    for folder in ("live", "archive"):
        names.update(_listing(store.root / folder))
    for folder in JSON_FOLDERS:
        names.update(e[:-5] for e in _listing(store.root / folder) if e.endswith(".json"))
    return {n for n in names if is_certificate_name(n)}


def _listing(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries]
    except OSError:  # missing or unreadable: nothing of ours to show
        return []


def remove(found: list[Found]) -> None:
    """Remove ``found`` in its order (see :func:`state_of`); the caller holds the
    certificate's lock. A failure stops at that path and says so: what was removed stays
    removed, the rest is there for the next ``delete``."""
    for item in found:
        try:
            if os.path.isdir(item.path) and not os.path.islink(item.path):
                shutil.rmtree(item.path)
            else:
                os.unlink(item.path)
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as err:
            where = Path(err.filename) if err.filename else item.path
            raise StoreError(
                f"{describe(err, where)}; the certificate is partly deleted: fix that and run "
                "acme-agent delete again"
            ) from None

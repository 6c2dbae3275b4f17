"""Is the certificate in service what was installed? A cheap look on every run (the link
and five ``stat`` calls, compared with the sizes and mtimes ``facts.json`` recorded at
install), a full check (parse, key matches certificate, chain, facts) only when the
cheap look differs, and repair from the newest intact archive version without an order.

Damage seen in the field: ``privkey.pem`` deleted, ``cert.pem`` truncated, ``fullchain.pem``
overwritten with garbage, ``archive/<name>`` deleted, ``live/<name>`` replaced by a plain
directory (a backup restored without its links). The agent used to trust ``facts.json``
and say "unchanged, not due" while nginx could not load the files.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import StoreError
from .certs import FACTS, PEM_FILES, Store, file_stats
from .files import describe, write_file_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repair:
    """What was wrong with a live set and what was done: ``version`` the archive version
    now in service, or None when none was intact (a new certificate must be ordered; the
    broken link stays until the new one replaces it)."""

    damage: str
    version: str | None


# suspect(): facts.json from before file stats were recorded (an upgrade): checked in full
# once by the next renew, quietly, and recorded; not damage.
LEGACY = "no file stats recorded yet"


def suspect(store: Store, name: str) -> str | None:
    """Why ``live/<name>`` may be damaged (None: it looks as installed, or there is no
    certificate at all; LEGACY: nothing recorded to compare with). Stats only: cheap, and
    no cryptography (the daemon calls it)."""
    link = store.live_dir(name)
    try:
        info = os.lstat(link)
    except FileNotFoundError:
        return _orphaned_archive(store, name)
    except OSError as err:
        return f"{link}: {err.strerror}"
    if not stat.S_ISLNK(info.st_mode):
        return f"{link} is not a link to an archive version"
    folder = store.live_folder(name)
    if folder is None:
        return None  # removed meanwhile (another process replaces it)
    try:
        recorded = json.loads((folder / FACTS).read_bytes()).get("files")
    except (OSError, ValueError, AttributeError):
        recorded = None
    try:
        found = file_stats(folder)
    except FileNotFoundError as err:
        return f"{folder}: {err.filename and Path(err.filename).name} is missing"
    except OSError as err:
        return f"{folder}: {err.strerror}"
    if recorded is None:
        return LEGACY
    if recorded != found:
        return f"{folder}: the files differ from what was installed"
    return None


def _orphaned_archive(store: Store, name: str) -> str | None:
    try:
        versions = store.versions(name)
    except OSError:
        return None
    return f"{store.live_dir(name)} is missing" if versions else None


def inspect(store: Store, name: str) -> str | None:
    """What is wrong with ``name``'s live set, read-only (for ``status`` and ``check``)."""
    damage = suspect(store, name)
    if damage is None or damage == LEGACY:
        return None  # LEGACY: nothing recorded to compare with yet (the next renew does)
    folder = store.live_folder(name) if os.path.islink(store.live_dir(name)) else None
    try:
        problem = _intact(folder) if folder is not None else damage
    except StoreError:
        return None  # cannot tell now (e.g. too many open files): not damage
    if problem is None:
        return None  # only the recorded stats are stale
    return f"{damage} ({problem})" if folder is not None else damage


def verify(store: Store, name: str) -> Repair | None:
    """Look (cheaply), check (fully, when the look differs), and repair ``name``'s live set;
    the caller holds the certificate's lock. None: intact (facts.json's file stats
    recorded when only they were stale or missing). An I/O error that says nothing about
    the files (EMFILE, EIO, EACCES) raises :class:`StoreError`: never taken for damage."""
    damage = suspect(store, name)
    if damage is None:
        return None
    folder = store.live_folder(name) if os.path.islink(store.live_dir(name)) else None
    if damage == LEGACY and folder is not None:
        _add_stats(folder)  # installed by an older version: record what is there, cheaply
        return None
    if folder is not None and (problem := _intact(folder)) is None:
        _record_stats(store, name, folder)  # touched, or restored by tar
        return None
    if folder is not None:
        damage = f"{damage} ({problem})"
    return Repair(damage, _restore(store, name))


def _intact(folder: Path) -> str | None:
    """What is wrong with an issuance folder (None: key and certificate match, the chain
    parses, fullchain is certificate + chain). Raises StoreError for an I/O error other
    than a missing file."""
    from cryptography import x509

    from .. import keys

    try:
        data = {n: (folder / n).read_bytes() for n in PEM_FILES}
    except FileNotFoundError as err:
        return f"{Path(err.filename or '?').name} is missing"
    except IsADirectoryError as err:
        return f"{Path(err.filename or '?').name} is not a file"
    except OSError as err:
        raise StoreError(describe(err, folder)) from None
    try:
        chain = keys.split_chain(data["fullchain.pem"], str(folder))
        key = keys.load_key_pem(data["privkey.pem"])
        cert = x509.load_pem_x509_certificate(data["cert.pem"])
    except Exception as err:  # any damage (untrusted input)
        return f"unreadable: {getattr(err, 'args', [''])[0] or type(err).__name__}"
    if chain.cert_pem != data["cert.pem"] or chain.chain_pem != data["chain.pem"]:
        return "fullchain.pem is not cert.pem + chain.pem"
    if cert != chain.cert or not keys.public_key_matches(cert, key):
        return "the key does not match the certificate"
    return None  # facts.json is derived data: rebuilt from the files (_record_stats)


def _add_stats(folder: Path) -> None:
    """The file stats added to a facts.json that has none (no cryptography: 10,000 sets
    after an upgrade cost a few stats each, not a parse of every key)."""
    try:
        facts = json.loads((folder / FACTS).read_bytes())
        if not isinstance(facts, dict):
            return
        facts["files"] = file_stats(folder)
        write_file_atomic(folder / FACTS, json.dumps(facts).encode(), 0o600)
    except (OSError, ValueError, StoreError) as err:
        log.debug("%s: file stats not recorded: %s", folder, err)


def _record_stats(store: Store, name: str, folder: Path) -> None:
    """facts.json of an intact folder, rebuilt from its files, with their stats."""
    from .certs import LiveCertificate, record_of

    try:
        from cryptography import x509

        from .. import keys

        cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        key = keys.load_key_pem((folder / "privkey.pem").read_bytes())
        try:
            old = json.loads((folder / FACTS).read_bytes())
            kept = {k: str(old[k]) for k in ("account", "installed", "ca")
                    if old.get(k) is not None}  # fmt: skip
        except (OSError, ValueError, AttributeError, TypeError):
            kept = {}
        live = LiveCertificate(name, folder.name, cert, frozenset(keys.cert_names(cert)),
                               keys.key_type_of(key))  # fmt: skip
        facts = json.loads(record_of(live).to_json())
        facts.update({"files": file_stats(folder), **kept})
        write_file_atomic(folder / FACTS, json.dumps(facts).encode(), 0o600)
    except (OSError, ValueError, TypeError, StoreError) as err:
        log.debug("%s: facts not rebuilt: %s", folder, err)


def _restore(store: Store, name: str) -> str | None:
    """Point ``live/<name>`` at an intact archive version: the one last deployed (what the
    targets hold already, so nothing is rolled back there), else the newest. A live entry
    that is not our link is set aside first. None when no version is intact (the caller
    orders a new certificate; the link stays until that one replaces it)."""
    link = store.live_dir(name)
    if os.path.lexists(link) and not os.path.islink(link):
        aside = link.with_name(f".{name}.damaged-{datetime.now():%Y%m%dT%H%M%S}")
        try:
            os.replace(link, aside)
        except OSError as err:
            raise StoreError(describe(err, link)) from None
        log.warning("%s: not a link to an archive version; moved to %s", link, aside.name,
                    extra={"cert": name})  # fmt: skip
    archive = store.archive_dir(name)
    try:
        versions = store.versions(name)
    except OSError as err:
        raise StoreError(describe(err, archive)) from None
    deployed = store.deployed_version(name)
    if deployed in versions:
        versions.remove(deployed)
        versions.insert(0, deployed)
    for version in versions:
        folder = archive / version
        if _intact(folder) is None:
            store.point_live(name, folder)
            _record_stats(store, name, folder)
            return version
    return None

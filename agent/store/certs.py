"""Account and certificate state under ``state_dir``.

Layout::

    state_dir/                      0700
      accounts/<ca-id>/account.json   account URL and the directory it belongs to
      accounts/<ca-id>/private_key.pem  0600, the account key (EC P-256)
      archive/<name>/<NNNN>/          one directory per issuance: cert.pem chain.pem
                                      fullchain.pem privkey.pem (0600)
      live/<name> -> ../archive/<name>/<NNNN>   symlink, swapped atomically
      locks/<name>.lock               flock per certificate (a crash cannot leave it stale)

Contract: every file is written to a temporary name in its final directory, fsynced and
renamed, so a crash leaves either the old content or the new. An issuance directory is
complete before ``live/<name>`` is pointed at it with one ``rename(2)`` of a symlink, so a
reader that resolves ``live/<name>`` once sees a key and a certificate of the same issuance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import StoreError
from ..model import CertRecord
from .files import (
    SWAP_LOCK,
    TMP_PREFIX,
    describe,
    ensure_private_dir,
    fsync_dir,
    remove_stale_temporaries,
    set_aside,
    temp_name,
    write_file_atomic,
)

if TYPE_CHECKING:  # imported lazily: a run with nothing due never loads cryptography
    from cryptography import x509

    from .. import keys

FACTS = "facts.json"  # beside the PEM files of each issuance: see CertRecord
PEM_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
_VERSION_RE = re.compile(r"\A\d{4,}\Z")


def _facts_of(
    name: str, chain: keys.IssuedChain, key_pem: bytes, account: str, installed: datetime | None,
    ca: str,
) -> bytes:  # fmt: skip
    from .. import keys

    cert = chain.cert
    key_type = keys.key_type_of(keys.load_key_pem(key_pem))
    live = LiveCertificate(name, "", cert, frozenset(keys.cert_names(cert)), key_type)
    record = record_of(live)
    return dataclasses.replace(record, account=account, installed=installed, ca=ca).to_json()


def file_stats(folder: Path) -> dict[str, list[int]]:
    """[size, mtime_ns] of each PEM file of an issuance folder (kept in facts.json)."""
    stats = {}
    for name in PEM_FILES:
        info = os.stat(folder / name)
        stats[name] = [info.st_size, info.st_mtime_ns]
    return stats


@dataclass(frozen=True)
class StoredAccount:
    uri: str
    key_pem: bytes
    thumbprint: str = ""  # RFC 7638 (fleet mode: what the responders answer with)
    generation: int = 0  # of the fleet's shared account record this copy came from


def record_of(live: LiveCertificate) -> CertRecord:
    cert = live.cert
    return CertRecord(
        live.name, live.version, f"{cert.serial_number:x}", live.domains, live.key_type,
        cert.not_valid_before_utc, cert.not_valid_after_utc, cert.issuer.rfc4514_string(),
    )  # fmt: skip


@dataclass(frozen=True)
class LiveCertificate:
    """What ``live/<name>`` holds now, read through one resolution of the symlink."""

    name: str
    version: str
    cert: x509.Certificate
    domains: frozenset[str]
    key_type: str


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir

    def private_dir(self, *parts: str) -> Path:
        """``state_dir/<parts>``, every level created 0700 (never left to the umask)."""
        path = ensure_private_dir(self.root)
        for part in parts:
            path = ensure_private_dir(path / part)
        return path

    # -- accounts -----------------------------------------------------------------------
    def account_dir(self, directory_url: str) -> Path:
        parts = urlsplit(directory_url)
        host = re.sub(r"[^A-Za-z0-9.-]", "_", parts.netloc) or "ca"
        digest = hashlib.sha256(directory_url.encode()).hexdigest()[:12]
        return self.root / "accounts" / f"{host}-{digest}"

    def load_account(self, directory_url: str) -> StoredAccount | None:
        folder = self.account_dir(directory_url)
        try:
            meta = json.loads((folder / "account.json").read_text())
            key_pem = (folder / "private_key.pem").read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise StoreError(
                f"{folder}: account state is unreadable ({err}); move it away "
                "and run 'acme-agent register' again"
            ) from None
        try:
            generation = int(meta.get("generation", 0))
        except (TypeError, ValueError):
            generation = 0
        return StoredAccount(str(meta["uri"]), key_pem, str(meta.get("thumbprint", "")), generation)

    def load_account_key(self, directory_url: str) -> bytes | None:
        """The account key alone (kept even when registration failed half-way)."""
        path = self.account_dir(directory_url) / "private_key.pem"
        return path.read_bytes() if path.exists() else None

    def save_account_key(self, directory_url: str, key_pem: bytes) -> None:
        folder = self.private_dir("accounts", self.account_dir(directory_url).name)
        write_file_atomic(folder / "private_key.pem", key_pem, 0o600)

    def save_account(
        self, directory_url: str, uri: str, thumbprint: str = "", generation: int = 0
    ) -> None:
        folder = self.private_dir("accounts", self.account_dir(directory_url).name)
        meta = {"uri": uri, "directory": directory_url, "thumbprint": thumbprint,
                "generation": generation}  # fmt: skip
        write_file_atomic(folder / "account.json", json.dumps(meta, indent=2).encode(), 0o600)

    # -- certificates -------------------------------------------------------------------
    def live_dir(self, name: str) -> Path:
        return self.root / "live" / name

    def archive_dir(self, name: str) -> Path:
        return self.root / "archive" / name

    def record(self, name: str) -> CertRecord | None:
        """The facts of the certificate in service (cheap), or None when there is none."""
        folder = self.live_folder(name)
        if folder is None:
            return None
        try:
            return CertRecord.from_json(name, folder.name, (folder / FACTS).read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            pass
        current = self.current(name)
        if current is None:
            return None
        record = record_of(current)
        with contextlib.suppress(StoreError):  # self-heal (e.g. imported or older versions)
            write_file_atomic(folder / FACTS, record.to_json(), 0o600)
        return record

    def current(self, name: str) -> LiveCertificate | None:
        """The certificate in service, or None when there is none (or it is unreadable)."""
        from cryptography import x509

        from .. import keys

        link = self.live_dir(name)
        try:
            target = os.readlink(link)
            folder = (link.parent / target).resolve()
            cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
            key = keys.load_key_pem((folder / "privkey.pem").read_bytes())
        except (OSError, ValueError):
            return None
        return LiveCertificate(
            name=name,
            version=folder.name,
            cert=cert,
            domains=frozenset(keys.cert_names(cert)),
            key_type=keys.key_type_of(key),
        )

    def install(
        self, name: str, key_pem: bytes, chain: keys.IssuedChain, account: str = "",
        ordered: datetime | None = None, ca: str = "",
    ) -> Path:  # fmt: skip
        """Archive a new issuance and make it live in one atomic step; returns its folder.
        ``account``: the ACME account that ordered it; ``ordered``: when this host ordered
        it, by its clock (both kept in its facts; None for an import or the fleet's);
        ``ca``: the name of the CA that issued it ("": not known)."""
        with SWAP_LOCK:
            return self._install(name, key_pem, chain, account, ordered, ca)

    def _install(
        self, name: str, key_pem: bytes, chain: keys.IssuedChain, account: str,
        ordered: datetime | None, ca: str,
    ) -> Path:  # fmt: skip
        archive = self.private_dir("archive", name)
        self._remove_leftovers(archive)
        staging = archive / f"{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o700)
            for filename, data, mode in (
                ("privkey.pem", key_pem, 0o600),
                ("cert.pem", chain.cert_pem, 0o644),
                ("chain.pem", chain.chain_pem, 0o644),
                ("fullchain.pem", chain.fullchain_pem, 0o644),
            ):
                write_file_atomic(staging / filename, data, mode)
            # Last: with the files' sizes and mtimes, so each run can see cheaply that they
            # are still what was installed (agent/store/integrity.py).
            facts = json.loads(_facts_of(name, chain, key_pem, account, ordered, ca))
            facts["files"] = file_stats(staging)
            write_file_atomic(staging / FACTS, json.dumps(facts).encode(), 0o600)
            final = archive / self._next_version(archive)
            os.rename(staging, final)
            fsync_dir(archive)
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(describe(err, archive)) from err
        except StoreError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.point_live(name, final)
        # Whatever put a certificate in service (an order, the fleet, an import): an order
        # still kept for this name is stale now and must never be resumed.
        try:
            os.unlink(self.pending_order_path(name))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StoreError(describe(err, self.pending_order_path(name))) from err
        return final

    def pending_order_path(self, name: str) -> Path:
        """``orders/<name>.json``: see :mod:`agent.store.orders`."""
        return self.root / "orders" / f"{name}.json"

    def point_live(self, name: str, folder: Path) -> None:
        """Swap ``live/<name>`` to ``folder`` with one rename of a symlink."""
        live_root = self.private_dir("live")
        link = live_root / name
        remove_stale_temporaries(link)
        tmp = live_root / temp_name(name)
        try:
            os.symlink(os.path.relpath(folder, live_root), tmp)
            os.replace(tmp, link)
            fsync_dir(live_root)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(describe(err, link)) from err

    def versions(self, name: str) -> list[str]:
        """The archive versions of ``name``, newest first ([] when there is no archive;
        another OSError is raised)."""
        try:
            with os.scandir(self.archive_dir(name)) as entries:
                found = [e.name for e in entries if _VERSION_RE.match(e.name)]
        except FileNotFoundError:
            return []
        return sorted(found, key=int, reverse=True)

    def live_folder(self, name: str) -> Path | None:
        """The archive folder ``live/<name>`` points at now."""
        live = os.path.join(self.root, "live")
        try:
            target = os.readlink(os.path.join(live, name))
        except OSError:
            return None
        # Our links are relative ("../archive/<name>/<NNNN>"): normalise, no filesystem walk.
        return Path(os.path.normpath(os.path.join(live, target)))

    def deployed_version(self, name: str) -> str | None:
        """The archive version last deployed to the certificate's targets."""
        path = self.root / "deployed" / f"{name}.json"
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            version = json.loads(raw)["version"]
            if not isinstance(version, str) or not _VERSION_RE.match(version):
                raise ValueError(version)
            return version
        except Exception:  # any damage (untrusted input): deployed again
            set_aside(path, "not a deployment record")
            return None

    def mark_deployed(self, name: str, version: str) -> None:
        folder = self.private_dir("deployed")
        data = json.dumps({"version": version}).encode()
        write_file_atomic(folder / f"{name}.json", data, 0o600)

    @staticmethod
    def _next_version(archive: Path) -> str:
        versions = [int(p.name) for p in archive.iterdir() if _VERSION_RE.match(p.name)]
        return f"{max(versions, default=0) + 1:04d}"

    @staticmethod
    def _remove_leftovers(archive: Path) -> None:
        """Staging folders of an issuance that crashed before it went live."""
        for entry in archive.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive per-certificate lock across processes; released by the kernel on crash.
        A lock file removed while we waited for it (`delete`) is not held: the file at the
        path now is locked instead, so two processes never both hold "the" lock."""
        path = self.private_dir("locks") / f"{name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)


def local_thumbprint(store: Store, directory: str) -> Callable[[], tuple[str, int] | None]:
    """(thumbprint, generation) of this host's copy of the account, read when called."""

    def read() -> tuple[str, int] | None:
        try:
            account = store.load_account(directory)
        except StoreError:
            return None
        if account is None:
            return None
        if not account.thumbprint:  # written by an older version: computed once here
            from .. import keys

            try:
                return keys.thumbprint(account.key_pem), 0
            except (ValueError, TypeError):
                return None
        return account.thumbprint, account.generation

    return read

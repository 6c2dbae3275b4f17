"""Put issued certificates where servers read them, reload safely, roll back on failure.

For every certificate with a ``[certificate.deploy]`` table: write its targets atomically
(owner, group, mode), then per distinct ``reload_command``: run the config test(s), reload
once, verify that the new certificate is served. If the test, the reload or the verify
fails, the previous files are put back and the server reloaded again, so it keeps serving
what it served before; the new certificate stays issued (archive and live) and is deployed
again on the next run.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from ..config.deploy import CERT_MODE, DeployConfig
from ..config.types import CertificateConfig
from ..errors import StoreError
from ..store.files import SWAP_LOCK, FileWrite, describe, write_file_atomic, write_files_atomic
from . import commands

log = logging.getLogger(__name__)

VERIFY_INTERVAL = 0.1
# Old nginx workers keep accepting for a moment after a reload: one good handshake is not
# proof, so this many in a row must show the new serial.
VERIFY_STREAK = 3


@dataclass(frozen=True)
class DeployItem:
    """One certificate version to deploy: its config and its archive folder."""

    cert: CertificateConfig
    folder: Path
    serial: int
    # The version deployed before (its archive folder): what the targets hold now, for a
    # rollback when they cannot be read back (owned by another user, and no CAP_DAC_*).
    previous: Path | None = None
    live: Path | None = None  # state_dir/live/<name> (certbot's RENEWED_LINEAGE for hooks)

    @property
    def config(self) -> DeployConfig:
        assert self.cert.deploy is not None
        return self.cert.deploy


@dataclass
class _Backup:
    path: Path
    content: bytes | None  # None: the file did not exist
    mode: int = 0o600
    uid: int = -1
    gid: int = -1
    unknown: bool = False  # it exists, but what it holds could not be read: no rollback


@dataclass
class DeployResult:
    errors: dict[str, str] = field(default_factory=dict)  # name -> why it is not deployed
    hook_errors: dict[str, str] = field(default_factory=dict)  # deployed, but the hook failed


def target_files(config: DeployConfig, folder: Path) -> list[tuple[Path, bytes, int]]:
    """(path, content, mode) for each configured target."""
    key = (folder / "privkey.pem").read_bytes()
    fullchain = (folder / "fullchain.pem").read_bytes()
    content = {
        "fullchain": (fullchain, CERT_MODE),
        "cert": ((folder / "cert.pem").read_bytes(), CERT_MODE),
        "chain": ((folder / "chain.pem").read_bytes(), CERT_MODE),
        "key": (key, config.key_mode),
        "combined": (key + fullchain, config.key_mode),
    }
    return [(path, *content[kind]) for kind, path in config.targets]


def hook_env(item: DeployItem) -> dict[str, str]:
    config = item.config
    return {
        "ACME_AGENT_CERT_NAME": item.cert.name,
        "ACME_AGENT_DOMAINS": " ".join(item.cert.domains),
        "ACME_AGENT_FULLCHAIN": str(config.path("fullchain") or item.folder / "fullchain.pem"),
        "ACME_AGENT_KEY": str(config.path("key") or item.folder / "privkey.pem"),
        "ACME_AGENT_SERIAL": f"{item.serial:x}",
        # certbot's names, so that a deploy hook written for certbot works unchanged.
        "RENEWED_LINEAGE": str(item.live or item.folder),
        "RENEWED_DOMAINS": " ".join(item.cert.domains),
    }


class Deployer:
    def __init__(
        self,
        run_command: Callable[..., commands.CommandResult] = commands.run,
        verify: Callable[[str, int, str, int, float], str | None] | None = None,
    ) -> None:
        self.run_command = run_command
        self.verify = verify or verify_served

    def deploy(self, items: list[DeployItem]) -> DeployResult:
        result = DeployResult()
        backups: dict[str, list[_Backup]] = {}
        for item in items:
            try:
                backups[item.cert.name] = self._place(item)
            except (StoreError, OSError) as err:
                result.errors[item.cert.name] = f"writing deploy targets failed: {err}"
        placed = [i for i in items if i.cert.name in backups]
        groups: dict[tuple[str, ...] | None, list[DeployItem]] = {}
        for item in placed:
            groups.setdefault(item.config.reload_command, []).append(item)
        for reload_command, group in groups.items():
            if reload_command is not None:
                self._reload_group(reload_command, group, backups, result)
        for item in placed:
            if item.cert.name not in result.errors and item.config.hook:
                self._hook(item, result)
        return result

    def _place(self, item: DeployItem) -> list[_Backup]:
        config = item.config
        uid = pwd.getpwnam(config.owner).pw_uid if config.owner else -1
        gid = grp.getgrnam(config.group).gr_gid if config.group else -1
        writes = [
            FileWrite(p, data, mode, uid, gid)
            for p, data, mode in target_files(config, item.folder)
        ]
        before = _previous_contents(config, item.previous)
        backups = [_backup(w.path, before.get(w.path)) for w in writes]
        for write in writes:
            make_folders(write.path.parent)
        try:
            with SWAP_LOCK:
                write_files_atomic(writes)
        except StoreError:
            _restore(backups)  # a rename half-way through: put every file back
            raise
        if config.targets:  # a [deploy] table may only reload or run a hook
            log.info(
                "%s: deployed to %s", item.cert.name, ", ".join(str(p) for _, p in config.targets)
            )
        return backups

    def _reload_group(
        self,
        reload_command: tuple[str, ...],
        group: list[DeployItem],
        backups: dict[str, list[_Backup]],
        result: DeployResult,
    ) -> None:
        timeout = max(i.config.timeout for i in group)
        tests = list(dict.fromkeys(i.config.test_command for i in group if i.config.test_command))
        for test in tests:
            outcome = self.run_command(test, timeout)
            if not outcome.ok:
                self._fail(
                    group,
                    backups,
                    result,
                    f"config test failed, not reloaded: {outcome.summary}",
                    None,
                )
                return
        outcome = self.run_command(reload_command, timeout)
        if not outcome.ok:
            self._fail(group, backups, result, f"reload failed: {outcome.summary}", reload_command)
            return
        bad = []
        for item in group:
            if item.config.verify is not None:
                host, port = item.config.verify
                sni = item.cert.domains[0].replace("*.", "wildcard-check.", 1)
                error = self.verify(host, port, sni, item.serial, item.config.verify_timeout)
                if error:
                    bad.append((item, error))
        for item, error in bad:
            self._fail([item], backups, result, f"verify failed: {error}", None)
        if bad:
            self._reload_after_rollback(reload_command, timeout)

    def _fail(
        self,
        group: list[DeployItem],
        backups: dict[str, list[_Backup]],
        result: DeployResult,
        reason: str,
        reload_command: tuple[str, ...] | None,
    ) -> None:
        for item in group:
            restored = _restore(backups[item.cert.name])
            after = "previous files restored" if restored else "the new files stay in place"
            result.errors[item.cert.name] = f"{reason}; {after}"
            log.error("%s: deployment failed: %s; %s", item.cert.name, reason, after)
        if reload_command is not None:
            self._reload_after_rollback(reload_command, max(i.config.timeout for i in group))

    def _reload_after_rollback(self, reload_command: tuple[str, ...], timeout: float) -> None:
        outcome = self.run_command(reload_command, timeout)
        if not outcome.ok:
            log.error("reload after restoring the previous files failed too: %s", outcome.summary)

    def _hook(self, item: DeployItem, result: DeployResult) -> None:
        assert item.config.hook is not None
        outcome = self.run_command(item.config.hook, item.config.timeout, hook_env(item))
        if not outcome.ok:
            result.hook_errors[item.cert.name] = f"deploy hook failed: {outcome.summary}"
            log.error("%s: deploy hook failed: %s", item.cert.name, outcome.summary)


def _previous_contents(config: DeployConfig, previous: Path | None) -> dict[Path, bytes]:
    """What each target held after the previous deployment (from our own archive)."""
    if previous is None:
        return {}
    try:
        return {path: data for path, data, _ in target_files(config, previous)}
    except OSError:
        return {}


def _backup(path: Path, deployed_before: bytes | None = None) -> _Backup:
    """The file as it is now, to put back on failure. Its owner and mode come from stat
    (no read needed); its content is read, or, when this process may not read it (the
    unit has no CAP_DAC_*: root cannot read a file it chowned to www-data with mode
    0600), taken from the version deployed before."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return _Backup(path, None)
    mode, uid, gid = info.st_mode & 0o777, info.st_uid, info.st_gid
    try:
        return _Backup(path, path.read_bytes(), mode, uid, gid)
    except PermissionError:
        if deployed_before is None:
            log.warning("%s: cannot read it (owned by uid %d, mode %04o) and no earlier "
                        "deployment of ours to restore from; no rollback for it", path, uid,
                        mode)  # fmt: skip
        return _Backup(path, deployed_before, mode, uid, gid, deployed_before is None)


def make_folders(folder: Path) -> None:
    """``folder`` and any missing parent, each 0755 whatever the umask (a server's
    workers must reach the certificate; the key files protect themselves)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o755)
            os.chmod(level, 0o755)
        except FileExistsError:
            pass
        except OSError as err:
            raise StoreError(describe(err, level)) from None


def _restore(backups: list[_Backup]) -> bool:
    """Put every file back; False (and nothing touched) when one of them could not be read
    before: restoring the others would pair an old certificate with a new key."""
    unknown = [b.path for b in backups if b.unknown]
    if unknown:
        log.error("%s: not restored (it could not be read before), so neither are the other "
                  "files of this certificate: the new files stay in place, as a matching "
                  "set", unknown[0])  # fmt: skip
        return False
    for backup in reversed(backups):
        try:
            if backup.content is None:
                with contextlib.suppress(FileNotFoundError):
                    backup.path.unlink()
            else:
                write_file_atomic(backup.path, backup.content, backup.mode, backup.uid, backup.gid)
        except (StoreError, OSError) as err:
            log.error("%s: could not restore the previous file: %s", backup.path, err)
    return True


def served_serial(host: str, port: int, sni: str, timeout: float) -> int:
    """The serial of the certificate served at host:port for ``sni`` (no trust check:
    we only compare serials with the one we just deployed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("no certificate served")
    return x509.load_der_x509_certificate(der).serial_number


def verify_served(host: str, port: int, sni: str, serial: int, timeout: float) -> str | None:
    """None once host:port serves ``serial`` for ``sni``; else why not, after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "nothing answered"
    streak = 0
    while True:
        try:
            got = served_serial(host, port, sni, min(5.0, timeout))
            streak = streak + 1 if got == serial else 0
            if streak >= VERIFY_STREAK:
                return None
            if got != serial:
                last = f"{host}:{port} still serves serial {got:x} for {sni}, not {serial:x}"
        except (OSError, ValueError) as err:
            streak = 0
            last = f"{host}:{port}: {err}"
        if time.monotonic() >= deadline:
            return f"{last} after {timeout:.0f} s"
        time.sleep(VERIFY_INTERVAL)

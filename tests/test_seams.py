"""Our own seams with hand-written fakes: the fleet backend's claim, the daemon keeping a
broken drop-in's previous definition, the webroot solver refusing links."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import keys
from agent.config import load
from agent.config.types import CertificateConfig
from agent.daemon.reload import keep_previous_definitions
from agent.errors import IssuanceError
from agent.fleet.backend import FleetBackend
from agent.fleet.cluster import Lease, SharedCert
from agent.http01.solvers import WebrootSolver
from agent.model import Challenge, Status
from agent.store.certs import Store
from tests.certs import NOW, make_chain

CERT = CertificateConfig("www", ("www.example.com",))


class HeldLease(Lease):
    """A lease without Redis (no keep-alive thread)."""

    def __init__(self) -> None:
        self.key, self.value, self.fence, self.lost = "lock:www", "1 test", 1, False

    def release(self) -> None:
        self.released = True


class FakeCluster:
    """Redis as the fleet backend sees it: the lease is ours, a newer version is there."""

    def __init__(self, shared: SharedCert, key_pem: bytes) -> None:
        self.shared, self.key_pem = shared, key_pem

    def acquire(self, name: str) -> Any:
        return HeldLease()

    def load_cert(self, name: str) -> SharedCert:
        return self.shared

    def open_key(self, shared: SharedCert) -> bytes:
        return self.key_pem


def test_claim_adopts_a_version_finished_meanwhile_without_deadlock(tmp_path: Path) -> None:
    key, chain = make_chain(("www.example.com",))
    serial = f"{chain.cert.serial_number:x}"
    shared = SharedCert("www", serial, chain.cert.not_valid_after_utc, 2, "host-a",
                        chain.fullchain_pem, "sealed")  # fmt: skip
    store = Store(tmp_path / "state")
    cluster = FakeCluster(shared, keys.key_to_pem(key))
    backend = FleetBackend(store, cluster, 600, clock=lambda: NOW)  # type: ignore[arg-type]
    done: list[Any] = []

    def claim() -> None:
        with backend.claim(CERT) as held:
            done.append(held.adopted)

    thread = threading.Thread(target=claim, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "claim deadlocked on this host's own lock"
    assert done[0] is not None and done[0].status == Status.DEPLOYED
    record = store.record("www")
    assert record is not None and record.serial == serial


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_broken_drop_in_keeps_its_previous_definition_by_file(tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    certs.mkdir()
    main = write(tmp_path / "agent.toml", f'certs_dir = "{certs}"\nstate_dir = "state"\n'
                 '[acme]\ndirectory = "https://ca.example/dir"\n'
                 '[[certificate]]\nname = "main"\ndomains = ["m.example.com"]\n')  # fmt: skip
    shop = write(certs / "shop-site.toml", 'name = "shop"\ndomains = ["shop.example.com"]\n')
    old = load(main)
    shop.write_text('name = "shop"\ndomains = ["shop.example.com"\n')  # a missing ]
    new = keep_previous_definitions(old, load(main))
    assert [c.name for c in new.certificates] == ["main", "shop"]
    assert new.sources[str(shop)] == old.sources[str(shop)]  # what the worker is handed
    again = load(main, files=new.sources)  # the worker's view: the same certificates
    assert [c.name for c in again.certificates] == ["main", "shop"]
    assert again.problems == ()


def test_webroot_refuses_a_symlinked_challenge_folder(tmp_path: Path) -> None:
    webroot, elsewhere = tmp_path / "webroot", tmp_path / "elsewhere"
    webroot.mkdir()
    elsewhere.mkdir()
    (webroot / ".well-known").symlink_to(elsewhere)
    token = "A" * 43
    solver = WebrootSolver(webroot)
    with pytest.raises(IssuanceError, match="is a symlink or not a folder"):
        solver.present([Challenge("example.com", token, token + ".x", None)])
    solver.cleanup()
    assert list(elsewhere.iterdir()) == []


def test_journal_prefix_on_every_line_of_a_traceback() -> None:
    import logging

    from agent.cli.logfmt import JournalPrefix

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = JournalPrefix(logging.Formatter("%(levelname)s %(message)s")).format(record).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_a_rollback_never_pairs_an_old_certificate_with_a_new_key(tmp_path: Path) -> None:
    from agent.deploy.deployer import _Backup, _restore

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("NEW cert")
    key.write_text("NEW key")
    backups = [_Backup(cert, b"OLD cert", 0o644), _Backup(key, None, 0o600, unknown=True)]
    assert _restore(backups) is False
    assert (cert.read_text(), key.read_text()) == ("NEW cert", "NEW key")


def test_failed_ari_refresh_is_postponed_not_repeated(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from agent.engine.renewer import ARI_RETRY, Renewer
    from agent.model import AriState, CertRecord
    from agent.store import ari

    main = write(tmp_path / "agent.toml", 'state_dir = "state"\n[acme]\n'
                 'directory = "https://ca.example/dir"\n')  # fmt: skip
    renewer = Renewer(load(main))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    ari.save_state(renewer.store, "www", AriState("ab", True, now - timedelta(hours=1), now, now))
    record = CertRecord(
        "www", "0001", "ab", frozenset({"www.example.com"}), "ec-p256", now, now, ""
    )
    assert renewer._postpone_ari("www", record, now) is None
    state = ari.load_state(renewer.store, "www")
    assert state is not None and state.next_check == now + ARI_RETRY


def test_validate_sees_what_the_webroot_solver_would_refuse(tmp_path: Path) -> None:
    from agent.cli.validate import problems

    webroot = tmp_path / "webroot"
    webroot.mkdir()
    (webroot / ".well-known").symlink_to(tmp_path)
    main = write(tmp_path / "agent.toml", 'state_dir = "state"\n[acme]\n'
                 'directory = "https://ca.example/dir"\neab_kid = "k"\n'
                 f'eab_hmac_key_file = "{tmp_path}/gone.key"\n'
                 f'[http01]\nmode = "webroot"\nwebroot = "{webroot}"\n')  # fmt: skip
    found = problems(load(main))
    assert any("is a symlink or not a folder" in line for line in found)
    assert any("eab_hmac_key_file" in line for line in found)  # no account yet: needed
    account = tmp_path / "state" / "accounts"
    folder = account / Store(tmp_path / "state").account_dir("https://ca.example/dir").name
    folder.mkdir(parents=True)
    (folder / "account.json").write_text('{"uri": "https://ca.example/acct/1"}')
    assert not any("eab_hmac_key_file" in line for line in problems(load(main)))


def test_an_outcome_from_a_newer_worker_is_read() -> None:
    """The worker protocol: fields this version does not know are ignored (a worker of a
    newer version, started by a daemon that was not restarted after an upgrade)."""
    from agent.model import Outcome, Status

    data = Outcome("x", Status.ISSUED, "d", ca="le").to_json() | {"from_the_future": 1}
    outcome = Outcome.from_json(data)
    assert (outcome.name, outcome.status, outcome.ca) == ("x", Status.ISSUED, "le")

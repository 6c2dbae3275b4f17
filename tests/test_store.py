"""The store: atomic installs, modes, leftovers, and keys that always match certificates."""

import os
from pathlib import Path

import pytest

from agent import keys
from agent.errors import StoreError
from agent.store.certs import Store
from agent.store.files import write_file_atomic
from tests.certs import make_chain


def test_install_swaps_live_and_keeps_archive(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    for _ in range(3):
        key, chain = make_chain(("example.com",))
        store.install("www", keys.key_to_pem(key), chain)
    live = store.current("www")
    assert live is not None and live.version == "0003"
    assert sorted(p.name for p in store.archive_dir("www").iterdir()) == ["0001", "0002", "0003"]
    assert os.readlink(store.live_dir("www")) == "../archive/www/0003"
    modes = {p.name: p.stat().st_mode & 0o777 for p in store.live_dir("www").iterdir()}
    assert modes == {
        "facts.json": 0o600,
        "cert.pem": 0o644,
        "chain.pem": 0o644,
        "fullchain.pem": 0o644,
        "privkey.pem": 0o600,
    }
    for folder in ("", "live", "archive", "archive/www"):
        assert (tmp_path / "state" / folder).stat().st_mode & 0o777 == 0o700


def test_leftover_staging_is_removed_and_never_live(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    key, chain = make_chain(("example.com",))
    store.install("www", keys.key_to_pem(key), chain)
    crashed = store.archive_dir("www") / ".tmp-deadbeef"
    crashed.mkdir()
    (crashed / "privkey.pem").write_text("half")
    store.install("www", keys.key_to_pem(key), chain)
    assert not crashed.exists()


def test_failed_write_leaves_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.pem"
    target.write_bytes(b"old")

    def broken_write(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", broken_write)
    with pytest.raises(StoreError, match="no space left"):
        write_file_atomic(target, b"new", 0o600)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.pem"]


def test_current_is_none_without_or_with_broken_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    assert store.current("www") is None
    key, chain = make_chain(("example.com",))
    folder = store.install("www", keys.key_to_pem(key), chain)
    (folder / "cert.pem").write_text("garbage")
    assert store.current("www") is None


def test_a_lock_file_removed_while_waited_for_is_not_held(tmp_path: Path) -> None:
    """`delete` removes a certificate's lock file while holding it: a process that was
    waiting for it must lock the file at the path now, not the removed one (else it and
    a newcomer would both hold "the" lock)."""
    import threading
    import time

    store = Store(tmp_path)
    path = tmp_path / "locks" / "x.lock"
    seen: list[bool] = []

    def waiter() -> None:
        with store.lock("x"):
            seen.append(path.exists())  # the file it holds is the one at the path

    with store.lock("x"):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
        path.unlink()
    thread.join(5)
    assert seen == [True]

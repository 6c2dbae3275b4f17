"""Web server configuration that reads certbot's ``live/<name>/`` files: every such line
found (nginx, Apache), with the path that replaces it, and ``--link``: a compatibility
symlink in place of certbot's folder, so those lines keep working unedited."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError, UsageError
from .certbot_lineage import TAKEN_OVER, Lineage

DEFAULT_SCAN = ("/etc/nginx", "/etc/apache2", "/etc/httpd")
MAX_CONFIG_FILE = 1024 * 1024  # a web server's configuration file is never larger
ASIDE = ".certbot"  # certbot's own live/<name> folder, kept under this suffix


@dataclass(frozen=True)
class Reference:
    file: Path
    line: int
    old: str  # the path as the configuration names it
    name: str  # the lineage
    rest: str  # what follows live/<name> ("/fullchain.pem", or "")

    def replaced(self, live_root: Path) -> str:
        """The same file in acme-agent's ``live/<name>`` (the PEM files have the same names)."""
        return str(live_root / self.name) + self.rest


def config_files(folders: list[Path]) -> list[Path]:
    """Every regular file under ``folders`` (each once, however many links lead to it)."""
    seen: set[str] = set()
    found = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                real = os.path.realpath(path)
                if real in seen or not os.path.isfile(real):
                    continue
                seen.add(real)
                found.append(path)
    return found


def scan_folders(given: list[str] | None) -> list[Path]:
    if not given:
        return [Path(p) for p in DEFAULT_SCAN if os.path.isdir(p)]
    for folder in given:
        if not os.path.isdir(folder):
            raise UsageError(f"import-certbot: --scan {folder}: no such directory")
    return [Path(p) for p in given]


def find_references(folders: list[Path], certbot_dir: Path, names: set[str]) -> list[Reference]:
    """Lines naming ``<certbot_dir>/live/<name>`` (a file in it, or the folder) of ``names``."""
    pattern = re.compile(
        re.escape(str(certbot_dir)) + r"/live/([A-Za-z0-9][A-Za-z0-9._-]*)(/[^\s;\"'#]*)?"
    )
    found = []
    for path in config_files(folders):
        try:
            if path.stat().st_size > MAX_CONFIG_FILE:
                continue
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in pattern.finditer(line):
                if match.group(1) in names:
                    found.append(Reference(path, number, match.group(0), match.group(1),
                                           match.group(2) or ""))  # fmt: skip
    return found


def link_lineage(lineage: Lineage, our_live: Path) -> str:
    """Take the lineage out of certbot's renewals (``renewal/<name>.conf`` renamed to
    ``.conf.acme-agent``: certbot reads only ``*.conf``), then put a symlink to ``our_live``
    where certbot's ``live/<name>`` was (that folder is kept as ``live/<name>.certbot``).
    Returns one line saying what was done; StoreError when it cannot be."""
    conf, done = lineage.original_conf, []
    taken = conf.with_name(conf.name + TAKEN_OVER)
    if conf.exists() and taken.exists():
        raise StoreError(f"{lineage.name}: {taken} exists already; move it away, then run "
                         "import-certbot --link again")  # fmt: skip
    live = lineage.live
    aside = live.with_name(live.name + ASIDE)
    # The link first: only once the web server's paths lead to our files is certbot
    # told to stop renewing (else they would keep reading certbot's, frozen, files).
    if live.is_symlink() and os.readlink(live) == str(our_live):
        pass
    elif not live.exists() and not live.is_symlink() and aside.is_dir():
        _link(lineage.name, live, our_live)  # a run stopped between the two renames
        done.append(f"{live} is a link to {our_live} now (certbot's folder is {aside.name})")
    else:
        _swap_for_link(lineage.name, live, our_live)
        done.append(f"{live} is a link to {our_live} now (certbot's folder kept as "
                    f"{live.name}{ASIDE})")  # fmt: skip
    if conf.exists():
        _rename(conf, taken)
        done.append(f"{conf} renamed to {taken.name} (certbot no longer renews it)")
    if not done:
        return f"{lineage.name}: already linked ({live} -> {our_live})"
    return f"{lineage.name}: " + "; ".join(done)


def _link(name: str, live: Path, our_live: Path) -> None:
    try:
        os.symlink(our_live, live)
    except OSError as err:
        raise StoreError(f"{name}: cannot link {live}: {err.strerror}") from None


def _swap_for_link(name: str, live: Path, our_live: Path) -> None:
    aside = live.with_name(live.name + ASIDE)
    if live.is_symlink() or not live.is_dir():
        raise StoreError(f"{name}: {live} is not certbot's folder; not linked (remove it, "
                         "then run import-certbot --link again)")  # fmt: skip
    if aside.exists() or aside.is_symlink():
        raise StoreError(f"{name}: {aside} exists already; move it away, then run "
                         "import-certbot --link again")  # fmt: skip
    tmp = live.with_name(f".{live.name}.acme-agent-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(our_live, tmp)
        os.rename(live, aside)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"{name}: cannot link {live}: {err.strerror}; nothing changed") from None
    try:
        os.rename(tmp, live)  # certbot's folder is gone from there for this instant only
    except OSError as err:
        try:
            os.rename(aside, live)
        except OSError:
            raise StoreError(
                f"{name}: cannot link {live} ({err.strerror}), and certbot's "
                f"folder is {aside} now: rename it back to {live}"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise StoreError(f"{name}: cannot link {live}: {err.strerror}; nothing changed") from None


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as err:
        raise StoreError(f"cannot rename {source} to {target.name}: {err.strerror}") from None

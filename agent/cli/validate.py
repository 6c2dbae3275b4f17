"""`acme-agent validate`: the whole configuration checked, nothing else touched (no state,
no network): one line per problem, exit 2 when there is any."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ..config import Config, load
from ..config.secretfile import read_secret_file
from ..errors import EXIT_OK, EXIT_USAGE, ConfigError
from ..store.certs import Store


def problems(config: Config) -> list[str]:
    """Every problem of a configuration whose main file loaded."""
    lines = [p.message for p in config.problems]
    secrets = []
    for ca in config.cas.values():
        eab_file = ca.eab_hmac_key_file
        if eab_file is not None and not _has_account(config, ca.directory):  # needed once
            secrets.append((eab_file, f"{ca.label} eab_hmac_key_file", False))
        staging_file, staging = ca.staging_eab_hmac_key_file, ca.dry_run_directory
        if staging_file is not None and staging and not _has_account(config, staging):
            secrets.append((staging_file, f"{ca.label} staging_eab_hmac_key_file", False))
    if config.cluster is not None:
        secrets.append((config.cluster.key_file, "[cluster] key_file", True))
        if config.cluster.password_file is not None:
            secrets.append((config.cluster.password_file, "[cluster] password_file", False))
    for path, field, private in secrets:
        try:
            read_secret_file(path, field, "it is named in the configuration", private=private)
        except ConfigError as err:
            lines.append(f"{config.path}: {err}")
    for ca in config.cas.values():
        if ca.ca_bundle is not None and not ca.ca_bundle.is_file():
            lines.append(f"{config.path}: {ca.label} ca_bundle: {ca.ca_bundle} does not exist")
    if config.http01.mode == "webroot" and config.http01.webroot is not None:
        lines += [f"{config.path}: {line}" for line in _webroot_problems(config.http01.webroot)]
    return lines


def _has_account(config: Config, directory: str) -> bool:
    """Is an account stored for the CA (then the EAB key file is no longer needed)?"""
    folder = Store(config.state_dir).account_dir(directory)
    return (folder / "account.json").is_file()


def _webroot_problems(webroot: Path) -> list[str]:
    """What would make the webroot solver refuse it, seen without writing anything."""
    if not webroot.is_dir():
        return [f"[http01] webroot: {webroot} is not a folder; create it (nginx serves "
                "/.well-known/acme-challenge/ from it)"]  # fmt: skip
    found = []
    level = webroot
    for name in (".well-known", "acme-challenge"):
        level = level / name
        try:
            info = level.lstat()
        except FileNotFoundError:
            break  # the agent creates it
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            found.append(f"[http01] webroot: {level} is a symlink or not a folder; remove it")
            break
        if info.st_uid not in (0, os.geteuid()):
            found.append(f"[http01] webroot: {level} belongs to uid {info.st_uid}; fix with: "
                         f"chown root {level}")  # fmt: skip
    return found


def cmd_validate(path: Path) -> int:
    try:
        config = load(path)
    except ConfigError as err:
        print(err)
        return EXIT_USAGE
    found = problems(config)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} problem(s) in the configuration of {path}", file=sys.stderr)
        return EXIT_USAGE
    count = len(config.certificates)
    print(f"OK: {path}: {count} certificate{'s' if count != 1 else ''}, no problems")
    return EXIT_OK

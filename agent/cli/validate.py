"""`acme-agent validate`: the whole configuration checked, nothing else touched (no state,
no network): one line per problem, exit 2 when there is any."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import Config, load
from ..config.secretfile import read_secret_file
from ..errors import EXIT_OK, EXIT_USAGE, ConfigError


def problems(config: Config) -> list[str]:
    """Every problem of a configuration whose main file loaded."""
    lines = [p.message for p in config.problems]
    secrets = []
    if config.acme.eab_hmac_key_file is not None:
        secrets.append((config.acme.eab_hmac_key_file, "[acme] eab_hmac_key_file", False))
    if config.cluster is not None:
        secrets.append((config.cluster.key_file, "[cluster] key_file", True))
        if config.cluster.password_file is not None:
            secrets.append((config.cluster.password_file, "[cluster] password_file", False))
    for path, field, private in secrets:
        try:
            read_secret_file(path, field, "it is named in the configuration", private=private)
        except ConfigError as err:
            lines.append(f"{config.path}: {err}")
    if config.acme.ca_bundle is not None and not config.acme.ca_bundle.is_file():
        lines.append(f"{config.path}: [acme] ca_bundle: {config.acme.ca_bundle} does not exist")
    return lines


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

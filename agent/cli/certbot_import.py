"""`import-certbot`: take over certbot's lineages without reissuing.

For each ``renewal/<name>.conf``: write ``<certs_dir>/<name>.toml`` (domains and key type
from the certificate in service) and install the lineage's current key and chain as the
first version in our archive, so the host switches over with the same certificate. Every
lineage that cannot be mapped is reported with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import keys
from ..config.loader import check_wildcards, parse_certificate
from ..config.types import KEY_TYPES, Config
from ..errors import EXIT_FAILED, EXIT_OK, AgentError, ConfigError
from ..store.certs import Store
from ..store.files import write_file_atomic

_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class Lineage:
    name: str
    conf: Path
    values: dict[str, str]  # top-level keys and [renewalparams]

    def path(self, key: str) -> Path | None:
        value = self.values.get(key)
        return Path(value) if value else None


def parse_renewal_conf(path: Path) -> Lineage:
    """certbot's configobj files: ``key = value`` lines, ``[section]``/``[[sub]]`` headers.
    Top-level keys and those of [renewalparams] are kept; nested sections are skipped."""
    values: dict[str, str] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip() if not line.startswith("[[") else "nested"
            continue
        key, sep, value = line.partition("=")
        if sep and section in ("", "renewalparams"):
            values[key.strip()] = value.strip().rstrip(",")
    return Lineage(path.stem, path, values)


def import_lineage(lineage: Lineage, config: Config, store: Store) -> str:
    """Import one lineage; returns a one-line report, raises ConfigError when unmappable."""
    name = lineage.name
    if not _NAME_RE.match(name):
        raise ConfigError(f"{name}: the lineage name cannot be a certificate name here")
    if config.certificate(name) is not None:
        raise ConfigError(f"{name}: already configured in acme-agent; left alone")
    fullchain, privkey = lineage.path("fullchain"), lineage.path("privkey")
    if fullchain is None or privkey is None:
        raise ConfigError(f"{lineage.conf}: no fullchain/privkey entry")
    try:
        chain = keys.split_chain(fullchain.read_bytes(), name)
        key = keys.load_key_pem(privkey.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{name}: cannot read the lineage's files: {err}") from None
    if not keys.public_key_matches(chain.cert, key):
        raise ConfigError(f"{name}: {privkey} does not belong to {fullchain}")
    key_type = keys.key_type_of(key)
    if key_type not in KEY_TYPES:
        raise ConfigError(f"{name}: key type {key_type} is not one acme-agent issues")
    domains = sorted(keys.cert_names(chain.cert))
    definition = {"name": name, "domains": domains, "key_type": key_type}
    assert config.certs_dir is not None
    target = config.certs_dir / f"{name}.toml"
    cert = parse_certificate(definition, str(target), "")
    check_wildcards(cert, config.http01)
    notes = _notes(lineage, config)
    if target.exists():
        raise ConfigError(f"{name}: {target} exists already; left alone")
    write_file_atomic(target, _toml(definition, lineage).encode(), 0o644)
    store.install(name, keys.key_to_pem(key), chain)
    return f"{name}: imported ({', '.join(domains)}; {key_type}){notes}"


def _notes(lineage: Lineage, config: Config) -> str:
    notes = []
    server = lineage.values.get("server")
    if server and server != config.acme.directory:
        notes.append(f"certbot used {server}; renewals will use {config.acme.directory}")
    authenticator = lineage.values.get("authenticator", "")
    if authenticator.startswith("dns"):
        notes.append(f"certbot validated with {authenticator}; acme-agent answers HTTP-01")
    return f"; note: {'; '.join(notes)}" if notes else ""


def _toml(definition: dict[str, object], lineage: Lineage) -> str:
    lines = [f"# Imported from certbot's {lineage.conf}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in definition.items()]
    return "\n".join(lines) + "\n"


def run_import(config: Config, directory: str) -> int:
    if config.certs_dir is None:
        raise ConfigError(
            f"{config.path}: import-certbot writes one file per certificate into certs_dir; "
            'set certs_dir (e.g. certs_dir = "/etc/acme-agent/certs.d") first'
        )
    renewal = Path(directory) / "renewal"
    confs = sorted(renewal.glob("*.conf")) if renewal.is_dir() else []
    if not confs:
        raise ConfigError(f"{renewal}: no certbot lineages (renewal/*.conf) found")
    store = Store(config.state_dir)
    failed = 0
    for conf in confs:
        try:
            print(import_lineage(parse_renewal_conf(conf), config, store))
        except AgentError as err:
            failed += 1
            print(f"not imported: {err}")
    print(f"{len(confs) - failed} of {len(confs)} certbot lineages imported")
    return EXIT_FAILED if failed else EXIT_OK

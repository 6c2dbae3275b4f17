"""`import-certbot`: take over certbot's lineages without reissuing.

For each ``renewal/<name>.conf``: install the lineage's current key and chain as the first
version in our archive, then write ``<certs_dir>/<name>.toml`` (domains and key type from
the certificate in service; what certbot's settings kept: CA, reuse_key, profile,
preferred_chain, deploy hook and installer reload as ``[deploy]``), so the host switches
over with the same certificate. Then certbot's account for the same CA, the web server
lines that read certbot's files, and (``--link``) links that keep those lines working.
Every lineage that cannot be mapped is reported with the reason; a second run finds what
the first imported ("already imported") and changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

from .. import keys
from ..config.cas import check_cas
from ..config.loader import check_wildcards, parse_certificate
from ..config.trust import check_trusted
from ..config.types import KEY_TYPES, Config
from ..errors import EXIT_FAILED, EXIT_OK, AgentError, ConfigError
from ..store.certs import Store
from ..store.files import write_file_atomic
from ..store.removal import state_of
from .certbot_account import import_account
from .certbot_lineage import (
    Lineage,
    Mapping,
    lineage_confs,
    map_lineage,
    parse_renewal_conf,
    toml_value,
)
from .certbot_web import find_references, link_lineage, scan_folders

_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def run_import(
    config: Config, directory: str, scan: list[str] | None = None, link: bool = False
) -> int:
    if config.certs_dir is None:
        raise ConfigError(
            f"{config.path}: import-certbot writes one file per certificate into certs_dir; "
            'set certs_dir (e.g. certs_dir = "/etc/acme-agent/certs.d") first'
        )
    certbot_dir = Path(os.path.abspath(directory))
    confs = lineage_confs(certbot_dir)
    if not confs:
        raise ConfigError(f"{certbot_dir / 'renewal'}: no certbot lineages (renewal/*.conf) found")
    folders = scan_folders(scan)
    store = Store(config.state_dir)
    done: list[Lineage] = []
    failed = 0
    for conf in confs:
        try:
            lineage = parse_renewal_conf(conf, certbot_dir)
            for line in import_lineage(lineage, config, store, link):
                print(line)
            done.append(lineage)
        except (AgentError, OSError, ValueError) as err:
            failed += 1
            print(f"not imported: {err}")
    failed += _accounts(done, config)
    failed += _web_servers(done, folders, store, link)
    print(f"{len(done)} of {len(confs)} certbot lineages imported")
    return EXIT_FAILED if failed else EXIT_OK


def import_lineage(lineage: Lineage, config: Config, store: Store, link: bool = False) -> list[str]:
    """Import one lineage; returns one-line reports, raises AgentError when unmappable."""
    name = lineage.name
    if not _NAME_RE.match(name):
        raise ConfigError(f"{name}: the lineage name cannot be a certificate name here")
    chain, key = _read_lineage(lineage)
    assert config.certs_dir is not None
    target = config.certs_dir / f"{name}.toml"
    if _written_for(target, lineage):
        return [_already_imported(lineage, config, store, chain, key, link)]
    _refuse_if_taken(lineage, config, target)
    current = store.current(name)
    if state_of(store, name) and not (current is not None and current.cert == chain.cert):
        raise ConfigError(
            f"{name}: {store.root} still holds a certificate of that name (no longer "
            f"configured); nothing written: acme-agent delete --cert {name} first, or rename "
            "the lineage"
        )
    key_type = keys.key_type_of(key)
    if key_type not in KEY_TYPES:
        raise ConfigError(f"{name}: key type {key_type} is not one acme-agent issues")
    domains = _names(chain.cert)
    mapping = map_lineage(lineage, config, key_type)
    text = render(lineage, {"name": name, "domains": domains, "key_type": key_type}, mapping)
    cert = parse_certificate(tomllib.loads(text), str(target), "")
    check_wildcards(cert, config.http01)
    check_cas(cert, config.cas)
    # The certificate goes in first, the file that makes it configured last: a daemon
    # watching certs_dir never sees the file without the certificate (and orders one).
    folder = _install(store, name, keys.key_to_pem(key), chain, _ca_of(lineage, config))
    if cert.deploy is not None:  # certbot deployed the certificate in service already
        store.mark_deployed(name, folder.name)
    write_file_atomic(target, text.encode(), 0o644)
    lines = [f"{name}: imported ({', '.join(domains)}; {key_type}) into {target}"]
    return lines + [f"{name}: note: {note}" for note in mapping.notes]


def _read_lineage(lineage: Lineage) -> tuple[keys.IssuedChain, keys.PrivateKey]:
    name = lineage.name
    fullchain, privkey = lineage.path("fullchain"), lineage.path("privkey")
    if fullchain is None or privkey is None:
        raise ConfigError(f"{lineage.conf}: no fullchain/privkey entry")
    fullchain, privkey = _lineage_file(lineage, fullchain), _lineage_file(lineage, privkey)
    try:
        chain = keys.split_chain(fullchain.read_bytes(), name)
        key = keys.load_key_pem(privkey.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{name}: cannot read the lineage's files: {err}") from None
    if not keys.public_key_matches(chain.cert, key):
        raise ConfigError(f"{name}: {privkey} does not belong to {fullchain}")
    return chain, key


def _lineage_file(lineage: Lineage, path: Path) -> Path:
    """``path`` (certbot's live/<name>/x.pem) as it may be read: only what root could have
    written, and inside certbot's folder (a renewal file naming /etc/shadow, or a link out
    of it, is refused). After an interrupted --link, certbot's folder is the one set aside."""
    live = lineage.live
    if not path.exists() and path.parent.resolve() == live.resolve():
        aside = live.with_name(live.name + ".certbot") / path.name
        path = aside if aside.exists() else path
    checked = check_trusted(path, f"{lineage.name}: certbot's file")
    ours = lineage.certbot_dir.resolve()
    outside = ours not in checked.parents
    if outside and not checked.is_relative_to(lineage.live.resolve()):
        raise ConfigError(f"{lineage.name}: {path} is not in {lineage.certbot_dir} (it resolves "
                          f"to {checked}); not imported")  # fmt: skip
    return checked


def _written_for(target: Path, lineage: Lineage) -> bool:
    try:
        with target.open() as file:
            return file.readline().rstrip("\n") == lineage.header
    except OSError:
        return False


def _refuse_if_taken(lineage: Lineage, config: Config, target: Path) -> None:
    name = lineage.name
    cert, problem = config.certificate(name), config.problem(name)
    where = cert.source if cert else str(problem.path) if problem else None
    if where is None and (target.exists() or target.is_symlink()):
        where = str(target)
    if where is not None:
        raise ConfigError(
            f"{name}: the name is used by a certificate not imported from {lineage.original_conf} "
            f"({where}); nothing written: rename or remove that certificate to import this lineage"
        )


def _ca_of(lineage: Lineage, config: Config) -> str:
    """The name of the configured CA certbot used for ``lineage`` ("": none)."""
    issuer = config.ca_for_directory(lineage.values.get("server", ""))
    return issuer.name if issuer else ""


def _already_imported(
    lineage: Lineage, config: Config, store: Store, chain: keys.IssuedChain,
    key: keys.PrivateKey, link: bool,
) -> str:  # fmt: skip
    """The file was written for this lineage: the same certificate must be (or have been)
    in service here; a state_dir that lost it gets it back."""
    name = lineage.name
    ca = _ca_of(lineage, config)
    if store.current(name) is None:
        _install(store, name, keys.key_to_pem(key), chain, ca)
        return f"{name}: already imported; its certificate was missing from {store.root}: installed"
    for version in store.versions(name):
        try:
            if (store.archive_dir(name) / version / "cert.pem").read_bytes() == chain.cert_pem:
                return f"{name}: already imported"
        except OSError:
            continue
    record = store.record(name)
    if record is not None and record.not_after >= chain.cert.not_valid_after_utc:
        return f"{name}: already imported (acme-agent has renewed it since)"
    if link:  # certbot renewed it meanwhile: its newer certificate, then the link
        _install(store, name, keys.key_to_pem(key), chain, ca)
        return (f"{name}: already imported; certbot's newer certificate (serial "
                f"{chain.cert.serial_number:x}) installed")  # fmt: skip
    raise ConfigError(
        f"{name}: imported before, but certbot has a certificate since (serial "
        f"{chain.cert.serial_number:x}) that acme-agent never installed: certbot still renews "
        f"{lineage.original_conf}; acme-agent keeps its own (run import-certbot --link to "
        "take certbot's in and stop certbot)"
    )


def _install(
    store: Store, name: str, key_pem: bytes, chain: keys.IssuedChain, ca: str = ""
) -> Path:
    """The lineage's certificate in service here (installed once: a run that stopped after
    installing it finds it in service); ``ca``: the configured CA certbot used, if any."""
    with store.lock(name):  # a renewal (or another import) of it may be under way
        current, folder = store.current(name), store.live_folder(name)
        if current is not None and folder is not None and current.cert == chain.cert:
            return folder
        return store.install(name, key_pem, chain, ca=ca)


def render(lineage: Lineage, definition: dict[str, object], mapping: Mapping) -> str:
    lines = [lineage.header]
    items = {**definition, **mapping.keys}
    lines += [f"{key} = {toml_value(value)}" for key, value in items.items()]
    if mapping.deploy:
        lines += ["", "[deploy]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in mapping.deploy.items()]
    return "\n".join(lines) + "\n"


def _accounts(done: list[Lineage], config: Config) -> int:
    """certbot's account of each server the imported lineages used; the number that failed."""
    failed = 0
    seen = set()
    for lineage in done:
        server, account = lineage.values.get("server"), lineage.values.get("account")
        if not server or not account or (server, account) in seen:
            continue
        seen.add((server, account))
        try:
            print(import_account(lineage.certbot_dir, server, account, config))
        except AgentError as err:
            failed += 1
            print(f"account not imported: {err}")
    return failed


def _web_servers(done: list[Lineage], folders: list[Path], store: Store, link: bool) -> int:
    """The lines that read certbot's files, and the links (--link); the number that failed."""
    if not done:
        return 0
    live_root, failed = store.root / "live", 0
    for ref in find_references(folders, done[0].certbot_dir, {lin.name for lin in done}):
        print(f"{ref.file}:{ref.line}: {ref.old} -> {ref.replaced(live_root)}")
    for lineage in done:
        if link:
            try:
                print(link_lineage(lineage, store.live_dir(lineage.name)))
                # Where the link is, for `delete` to say it would lead nowhere.
                record = json.dumps({"link": str(lineage.live)}).encode()
                path = store.private_dir("links") / f"{lineage.name}.json"
                write_file_atomic(path, record, 0o600)
            except AgentError as err:
                failed += 1
                print(f"not linked: {err}")
        elif not lineage.taken_over:
            conf = lineage.original_conf
            print(f"{lineage.name}: certbot still renews it ({conf}): run import-certbot "
                  f"--link, or rename that file to {conf.name}.acme-agent (certbot reads only "
                  "*.conf)")  # fmt: skip
    return failed


def _names(cert: object) -> list[str]:
    """The DNS names (sorted) then the IP addresses (normalised) of a certificate."""
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    names = keys.cert_names(cert)
    ips = sorted(n for n in names if keys.ip_address_of(n) is not None)
    return sorted(n for n in names if n not in ips) + ips

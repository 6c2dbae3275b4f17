"""Load and validate the TOML configuration once, into frozen, typed objects.

Every problem becomes a :class:`ConfigError` naming the file, the field and what is
wrong, e.g. ``agent.toml: certificate[2].domains[0]: "a..b" is not a valid domain name``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..defaults import CONFIG_ENV, DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR
from ..errors import ConfigError
from ..policy.durations import MAX_DURATION, DurationTooLong, parse_duration
from ..policy.renewal import RenewBefore
from .cas import check_cas, parse_ca_choice, parse_cas
from .cluster import parse_cluster
from .deploy import parse_deploy, parse_hooks
from .listen import is_ip_address, parse_listen
from .tomltable import Table as _Table
from .tomltable import relative_to as _relative_to
from .trust import check_trusted
from .types import (
    DEFAULT_CA,
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    AcmeConfig,
    CertificateConfig,
    Config,
    ConfigProblem,
    Http01Config,
    MetricsConfig,
)

HTTP01_MODES = ("standalone", "webroot", "none")
LOG_FORMATS = ("text", "json")
# A certificate name becomes a directory name under live/ and archive/.
_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_LABEL_RE = re.compile(r"\A(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def is_certificate_name(name: str) -> bool:
    """``name`` may name a certificate (and so a folder under live/ and archive/)."""
    return bool(_NAME_RE.match(name))


def resolve_config_path(cli_value: str | None) -> Path:
    """``--config`` wins, then ``$ACME_AGENT_CONFIG``, then the default path."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


class Sources:
    """Where the configuration's text comes from: the files on disk (checked for trust
    before they are read), or a snapshot of them (``files``: path -> text) taken by a
    process that already loaded and checked them, e.g. the daemon for its worker.
    Every text read is kept, so the configuration in force can be handed on."""

    def __init__(self, files: Mapping[str, str] | None = None) -> None:
        self.snapshot = dict(files) if files is not None else None
        self.read: dict[str, str] = {}
        self.trusted_dirs: set[str] = set()  # found trustworthy during this load

    def text(self, path: Path) -> str:
        if self.snapshot is None:
            text = _read_file(path, self.trusted_dirs)
        elif str(path) in self.snapshot:
            text = self.snapshot[str(path)]
        else:
            raise ConfigError(f"{path}: not in the configuration handed over")
        self.read[str(path)] = text
        return text

    def toml(self, path: Path) -> dict[str, Any]:
        return _parse_toml(path, self.text(path))

    def listing(self, folder: Path) -> list[Path]:
        """The ``*.toml`` files of ``folder``, sorted by name (cheap for 10,000)."""
        if self.snapshot is not None:
            return sorted(
                (
                    Path(p)
                    for p in self.snapshot
                    if Path(p).parent == folder and p.endswith(".toml")
                ),
                key=lambda p: p.name,
            )
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".toml") and e.is_file())
        return [folder / name for name in names]


def load(path: Path, files: Mapping[str, str] | None = None) -> Config:
    """The configuration of ``path`` (and its ``certs_dir``), read from disk, or from
    ``files`` (a snapshot from :attr:`Config.sources`) without touching the disk."""
    sources = Sources(files)
    data = sources.toml(path)
    where = str(path)
    top = _Table(data, where, "")
    state_dir = Path(top.text("state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR)
    cas = parse_cas(top, path.parent)
    http01 = _parse_http01(top.table("http01"), path.parent)
    hooks = parse_hooks(top.table("hooks"))
    metrics = _parse_metrics(top, path.parent)
    cluster = parse_cluster(top, path.parent)
    if cluster is not None and http01.mode == "webroot":
        raise ConfigError(
            f'{where}: http01.mode: "webroot" cannot answer for the other hosts of a '
            '[cluster]; use "standalone" (every host\'s responder answers from Redis; nginx '
            'proxies /.well-known/acme-challenge/ to it) or "none"'
        )
    log_format = top.get("log_format", str, "text")
    if log_format not in LOG_FORMATS:
        raise top.error("log_format", f'{log_format!r} must be "text" or "json"')
    entries = top.get("certificate", list, [])
    certs_dir_text = top.text("certs_dir")
    top.finish()
    certificates = tuple(
        parse_certificate(entry, where, f"certificate[{i}].") for i, entry in enumerate(entries)
    )
    certs_dir = _relative_to(Path(certs_dir_text), path.parent) if certs_dir_text else None
    _check_certificates(certificates, http01, cas)
    problems: tuple[ConfigProblem, ...] = ()
    if certs_dir is not None:
        dropped, problems = load_certs_dir(certs_dir, http01, where, sources, certificates, cas=cas)
        certificates += dropped
    state = _relative_to(state_dir, path.parent)
    return Config(
        path, state, cas[DEFAULT_CA], http01, certificates, hooks, certs_dir, metrics, log_format,
        cluster, sources.read, problems, cas,
    )  # fmt: skip


def _read_file(path: Path, trusted_dirs: set[str]) -> str:
    checked = check_trusted(path, "configuration", trusted_dirs)
    try:
        raw = checked.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (pass --config PATH or set {CONFIG_ENV}; "
            "config/agent.example.toml is a commented starting point)"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except RecursionError:  # tables or arrays nested thousands deep
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None


def _parse_metrics(top: _Table, base: Path) -> MetricsConfig | None:
    table = top.optional_table("metrics")
    if table is None:
        return None
    host, port = parse_listen(table.text("listen", "127.0.0.1:9402") or "", table)
    textfile = table.text("textfile")
    table.finish()
    return MetricsConfig(host, port, _relative_to(Path(textfile), base) if textfile else None)


def _parse_http01(table: _Table, base: Path) -> Http01Config:
    mode = table.get("mode", str, "standalone")
    if mode not in HTTP01_MODES:
        raise table.error("mode", f"{mode!r} is not one of {', '.join(HTTP01_MODES)}")
    listen = table.text("listen", "0.0.0.0:80") or "0.0.0.0:80"
    host, port = parse_listen(listen, table)
    webroot = table.text("webroot")
    if mode == "webroot" and webroot is None:
        raise table.error("webroot", 'is required with mode = "webroot"')
    table.finish()
    return Http01Config(mode, host, port, _relative_to(Path(webroot), base) if webroot else None)


def parse_certificate(
    entry: Any, where: str, prefix: str, default_name: str | None = None
) -> CertificateConfig:
    """One ``[[certificate]]`` table (also the whole of a file in ``certs_dir``)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.')}: expected a table")
    table = _Table(entry, where, prefix)
    name = table.get("name", str, default_name)
    if name is None:
        raise table.error("name", "is required")
    if not _NAME_RE.match(name):
        raise table.error(
            "name", f"{name!r} must be 1-64 letters, digits, '.', '_' or '-' (it names a directory)"
        )
    raw_domains = table.require("domains", list)
    if not raw_domains:
        raise table.error("domains", "must list at least one domain")
    domains: list[str] = []
    for i, value in enumerate(raw_domains):
        domain = check_domain(value, table, f"domains[{i}]")
        if domain in domains:
            raise table.error(f"domains[{i}]", f"{domain!r} is listed twice")
        domains.append(domain)
    key_type = table.get("key_type", str, DEFAULT_KEY_TYPE)
    if key_type not in KEY_TYPES:
        raise table.error("key_type", f"{key_type!r} is not one of {', '.join(KEY_TYPES)}")
    renew_before = _renew_before(table)
    profile = table.text("profile")
    deploy = parse_deploy(table.table("deploy"))
    ca = parse_ca_choice(table)
    reuse_key = table.get("reuse_key", bool, False)
    preferred_chain = table.text("preferred_chain")
    keep_versions = table.get("keep_versions", int)
    if keep_versions is not None and not 1 <= keep_versions <= 10000:
        raise table.error(
            "keep_versions", f"{keep_versions} must be at least 1 (the version in service)"
        )
    table.finish()
    source = f"{where}: {prefix.rstrip('.')}" if prefix else where
    return CertificateConfig(
        name, tuple(domains), key_type, source, deploy, renew_before, profile, ca, reuse_key,
        preferred_chain, keep_versions,
    )  # fmt: skip


def _renew_before(table: _Table) -> RenewBefore | None:
    value = table.get("renew_before", (str, float, int))
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationTooLong:
            raise table.error(
                "renew_before", f"{value!r} is longer than {MAX_DURATION.days} days"
            ) from None
        except ValueError:
            raise table.error(
                "renew_before", f'{value!r} must be a duration ("10d", "12h", "30m") or a fraction'
            ) from None
    if not 0 < value < 1:
        raise table.error(
            "renew_before",
            f"{value} must be a fraction of the lifetime between 0 and 1, or a "
            'duration such as "10d"',
        )
    return float(value)


def load_certs_dir(
    folder: Path,
    http01: Http01Config,
    where: str,
    sources: Sources | None = None,
    taken: tuple[CertificateConfig, ...] = (),
    *,
    cas: Mapping[str, AcmeConfig] | None = None,
) -> tuple[tuple[CertificateConfig, ...], tuple[ConfigProblem, ...]]:
    """One certificate per ``*.toml`` file in ``folder``; ``name`` defaults to the file stem.
    A file in error is that certificate's problem only: it is returned among the problems
    and every other file still counts (``taken``: certificates defined before these)."""
    sources = sources or Sources()
    try:
        files = sources.listing(folder)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: certs_dir: {folder} does not exist; create it or remove certs_dir"
        ) from None
    except OSError as err:
        raise ConfigError(f"{where}: certs_dir: cannot read {folder}: {err.strerror}") from None
    certs: list[CertificateConfig] = []
    problems: list[ConfigProblem] = []
    first = {c.name: c for c in taken}
    for path in files:
        try:
            cert = parse_certificate(sources.toml(path), str(path), "", default_name=path.stem)
            check_wildcards(cert, http01)
            if cas is not None:
                check_cas(cert, cas)
            _check_unique(cert, first)
        except ConfigError as err:
            problems.append(ConfigProblem(_name_of(path, sources), path, str(err)))
            continue
        except Exception as err:  # a bug of ours: still this file's problem only
            message = f"{path}: internal error ({type(err).__name__}: {err}); please report it"
            problems.append(ConfigProblem(_name_of(path, sources), path, message))
            continue
        first[cert.name] = cert
        certs.append(cert)
    return tuple(certs), tuple(problems)


def _name_of(path: Path, sources: Sources) -> str:
    """The certificate a broken file defines: its ``name`` if that much can be read, else
    the file's stem (the default name)."""
    text = sources.read.get(str(path))
    if text is not None:
        try:
            name = tomllib.loads(text).get("name")
        except (tomllib.TOMLDecodeError, RecursionError):
            name = None
        if isinstance(name, str) and _NAME_RE.match(name):
            return name
    return path.stem


def check_domain(value: Any, table: _Table, key: str) -> str:
    if not isinstance(value, str):
        raise table.error(key, f"expected a string, got {type(value).__name__}")
    domain = value.strip().lower().rstrip(".")
    if is_ip_address(domain.strip("[]")):  # RFC 8738: validated over HTTP-01 only
        import ipaddress  # rare: not at every start

        address = ipaddress.ip_address(domain.strip("[]"))
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            raise table.error(key, f"{value!r} is an IPv4 address written as IPv6: write "
                              f"{str(address.ipv4_mapped)!r}")  # fmt: skip
        if address.is_unspecified or address.is_multicast:
            raise table.error(key, f"{value!r} is no address a certificate can be for")
        return address.compressed
    if not domain.isascii():
        raise table.error(key, f"{value!r}: write internationalised names in xn-- (A-label) form")
    labels = domain.split(".")
    bare = labels[1:] if labels[0] == "*" else labels
    if len(domain) > 253 or len(bare) < 2 or not all(_LABEL_RE.match(lab) for lab in bare):
        raise table.error(key, f"{value!r} is not a valid domain name")
    if bare[-1].isdigit() or bare[-1].startswith("0x"):  # no top-level domain is numeric
        raise table.error(key, f"{value!r} is neither a domain name nor an IP address "
                          "(an address: four decimal numbers, or IPv6; no wildcard)")  # fmt: skip
    return domain


def _check_certificates(
    certs: tuple[CertificateConfig, ...], http01: Http01Config, cas: Mapping[str, AcmeConfig]
) -> None:
    first: dict[str, CertificateConfig] = {}
    for cert in certs:
        _check_unique(cert, first)
        first[cert.name] = cert
        check_wildcards(cert, http01)
        check_cas(cert, cas)


def _check_unique(cert: CertificateConfig, first: Mapping[str, CertificateConfig]) -> None:
    if cert.name in first:
        raise ConfigError(
            f"{cert.field('name')}: {cert.name!r} is used twice (also in {first[cert.name].source})"
        )


def check_wildcards(cert: CertificateConfig, http01: Http01Config) -> None:
    for domain in cert.domains:
        if domain.startswith("*.") and http01.mode != "none":
            raise ConfigError(
                f"{cert.field('domains')}: {domain!r}: a wildcard cannot be validated over "
                'HTTP-01; use a CA that pre-approves the domain with [http01] mode = "none"'
            )

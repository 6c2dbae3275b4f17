"""The configuration as frozen, typed objects (built by :mod:`.loader`, read by every layer
above this one). Defaults are named constants with the reason for their value."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..policy.renewal import RenewBefore
from .cluster import ClusterConfig
from .deploy import DeployConfig, HooksConfig

# AWS Certificate Manager documents up to 2 minutes per issuance; 5 minutes leaves room.
DEFAULT_ISSUANCE_TIMEOUT = 600.0  # AWS ACM asks clients to wait at least 600 s
# Orders worked on at once: fast through a mass renewal, yet gentle on a CA (each waits
# for the CA most of the time; Retry-After from any of them pauses all).
DEFAULT_MAX_CONCURRENT_ORDERS = 8
# One HTTP request to the CA (connect + answer); a stalled CA costs at most this per try.
DEFAULT_REQUEST_TIMEOUT = 30.0
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ec-p256"
DEFAULT_CA = "default"  # the name of [acme]
# Where `renew --dry-run` goes for a CA whose staging_directory is not set.
KNOWN_STAGING = {
    "https://acme-v02.api.letsencrypt.org/directory":
        "https://acme-staging-v02.api.letsencrypt.org/directory",
}  # fmt: skip


@dataclass(frozen=True)
class AcmeConfig:
    directory: str
    email: str | None = None
    eab_kid: str | None = None
    # The HMAC key itself never appears in repr() or logs.
    eab_hmac_key: str | None = field(default=None, repr=False)
    eab_hmac_key_file: Path | None = None
    ca_bundle: Path | None = None
    issuance_timeout: float = DEFAULT_ISSUANCE_TIMEOUT
    request_timeout: float = 30.0
    staging_directory: str | None = None  # where `renew --dry-run` goes, if set
    max_concurrent_orders: int = 8
    name: str = DEFAULT_CA  # "default" for [acme], NAME for [ca.NAME]
    key_types: tuple[str, ...] | None = None  # what this CA accepts (None: any)
    # EAB for the staging directory's account (dry runs): never the production ones,
    # which may be single-use.
    staging_eab_kid: str | None = None
    staging_eab_hmac_key_file: Path | None = None

    @property
    def dry_run_directory(self) -> str | None:
        """Where a dry run goes: staging_directory, or the known staging directory of a
        public CA's production one; None: this CA has none (a dry run would be real)."""
        if self.staging_directory:
            return self.staging_directory
        if same_url(self.directory) in {same_url(d) for d in KNOWN_STAGING.values()}:
            return self.directory  # a staging directory already: dry runs there are free
        return KNOWN_STAGING.get(same_url(self.directory))

    @property
    def label(self) -> str:
        """How messages name this CA: ``[acme]`` or ``[ca.NAME]``."""
        return "[acme]" if self.name == DEFAULT_CA else f"[ca.{self.name}]"


@dataclass(frozen=True)
class Http01Config:
    mode: str = "standalone"
    listen_host: str = "0.0.0.0"
    listen_port: int = 80
    webroot: Path | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the daemon serves /metrics on listen; `renew` writes textfile."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 9402
    textfile: Path | None = None


@dataclass(frozen=True)
class CertificateConfig:
    name: str
    domains: tuple[str, ...]
    key_type: str = DEFAULT_KEY_TYPE
    source: str = ""  # "file: field" prefix for messages about this certificate
    deploy: DeployConfig | None = None
    renew_before: RenewBefore | None = None
    profile: str | None = None
    ca: tuple[str, ...] = (DEFAULT_CA,)  # the fallback order: names of [acme]/[ca.NAME]
    reuse_key: bool = False  # keep the private key across renewals
    preferred_chain: str | None = None  # the alternate chain whose root has this CN
    keep_versions: int | None = None  # archive versions kept (None: every one)

    def field(self, key: str) -> str:
        """``file: certificate[i].key`` (main file) or ``file: key`` (a certs_dir file)."""
        return f"{self.source}.{key}" if "certificate[" in self.source else f"{self.source}: {key}"


@dataclass(frozen=True)
class ConfigProblem:
    """A file of ``certs_dir`` in error: that certificate's problem, nobody else's."""

    name: str  # the certificate it defines (its name, or the file's stem)
    path: Path
    message: str  # one line naming the file and the field


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    acme: AcmeConfig
    http01: Http01Config
    certificates: tuple[CertificateConfig, ...]
    hooks: HooksConfig = field(default_factory=HooksConfig)
    certs_dir: Path | None = None
    metrics: MetricsConfig | None = None
    log_format: str = "text"
    cluster: ClusterConfig | None = None
    # The text of every file read (path -> TOML), so the configuration in force can be
    # handed to the daemon's worker without reading the disk again (never logged).
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    problems: tuple[ConfigProblem, ...] = ()  # files of certs_dir in error (not loaded)
    # Every CA by name: "default" ([acme], also ``acme``) first, then each [ca.NAME].
    cas: Mapping[str, AcmeConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cas:
            object.__setattr__(self, "cas", {DEFAULT_CA: self.acme})

    def ca(self, name: str) -> AcmeConfig | None:
        return self.cas.get(name)

    def ca_for_directory(self, directory: str) -> AcmeConfig | None:
        """The configured CA whose directory is ``directory`` (as URLs), if any."""
        wanted = same_url(directory)
        return next((c for c in self.cas.values() if same_url(c.directory) == wanted), None)

    @functools.cached_property
    def _by_name(self) -> dict[str, CertificateConfig]:
        return {c.name: c for c in self.certificates}

    def certificate(self, name: str) -> CertificateConfig | None:
        return self._by_name.get(name)

    def problem(self, name: str) -> ConfigProblem | None:
        return next((p for p in self.problems if p.name == name), None)


def same_url(url: str) -> str:
    """``url`` as compared with another: scheme and host in lower case, no trailing /."""
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}".rstrip("/")

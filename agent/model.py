"""Value types every layer shares: what a certificate is (facts, records), what was
decided about it (``Plan``), what happened to it (``Outcome``), and the challenge and
order values that pass between the protocol, the solvers and the fleet.

Imports nothing of ours and does no I/O: frozen dataclasses and their JSON forms.
"""

from __future__ import annotations

import enum
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

# Tokens are base64url (RFC 8555 section 8.3); anything else could escape a directory.
TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]{16,256}\Z")  # \Z: "$" would let "x\n" through

# RFC 5280 reason codes accepted by `revoke --reason`.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


class Status(enum.StrEnum):
    """What a run did with one certificate (the words `renew` prints)."""

    ISSUED = "issued"  # a new certificate was obtained and put in service
    DEPLOYED = "deployed"  # an earlier issuance (or the fleet's) was put in service
    DRY_RUN = "dry-run"
    WAITING = "waiting"  # another host of the fleet is renewing it
    FAILED = "failed"
    UNCHANGED = "unchanged"


# Outcomes that changed what is in service (for the post hook's ACME_AGENT_RENEWED).
CHANGED = (Status.ISSUED, Status.DEPLOYED)


@dataclass(frozen=True)
class CertFacts:
    """What policy needs to know about a certificate in service."""

    domains: frozenset[str]
    key_type: str
    not_before: datetime
    not_after: datetime

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class AriWindow:
    """The CA's suggested renewal window for one certificate."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class AriState:
    """What the CA said about one serial (RFC 9773), and when to ask again."""

    serial: str
    supported: bool
    next_check: datetime
    start: datetime | None = None
    end: datetime | None = None

    def window(self) -> AriWindow | None:
        if self.supported and self.start is not None and self.end is not None:
            return AriWindow(self.start, self.end)
        return None

    def to_json(self) -> bytes:
        data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AriState:
        data = json.loads(raw)
        for key in ("next_check", "start", "end"):
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key])
        return cls(**data)


@dataclass(frozen=True)
class CertRecord:
    """The facts of the certificate in service, from ``facts.json`` beside its files
    (written at install; rebuilt from the files if missing). Reading it needs no
    cryptography, so deciding that nothing is due is cheap."""

    name: str
    version: str
    serial: str  # hex
    domains: frozenset[str]
    key_type: str
    not_before: datetime
    not_after: datetime
    issuer: str
    # The ACME account that ordered it ("": not this host's order: imported, or installed
    # from the fleet; None: installed by a version that did not record it, taken for the
    # account in use): RFC 9773's ``replaces`` names only certificates of that account.
    account: str | None = None
    installed: datetime | None = None  # by this host's clock (the spacing of orders)
    # The name of the CA that issued it ([acme] is "default"; "": not known, e.g. from the
    # fleet or an import from an unconfigured CA; None: from a version with one CA only).
    ca: str | None = None

    @property
    def facts(self) -> CertFacts:
        return CertFacts(self.domains, self.key_type, self.not_before, self.not_after)

    def to_json(self) -> bytes:
        data = {
            "serial": self.serial,
            "domains": sorted(self.domains),
            "key_type": self.key_type,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issuer": self.issuer,
        }
        if self.account is not None:
            data["account"] = self.account
        if self.installed is not None:
            data["installed"] = self.installed.isoformat()
        if self.ca is not None:
            data["ca"] = self.ca
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, name: str, version: str, raw: bytes) -> CertRecord:
        data = json.loads(raw)
        return cls(
            name, version, str(data["serial"]), frozenset(data["domains"]),
            str(data["key_type"]), datetime.fromisoformat(data["not_before"]),
            datetime.fromisoformat(data["not_after"]), str(data.get("issuer", "")),
            str(data["account"]) if data.get("account") is not None else None,
            datetime.fromisoformat(data["installed"]) if data.get("installed") else None,
            str(data["ca"]) if data.get("ca") is not None else None,
        )  # fmt: skip


def facts(record: CertRecord | None) -> CertFacts | None:
    return record.facts if record is not None else None


@dataclass(frozen=True)
class PendingOrder:
    """An order placed and not yet installed, kept (with its key, 0600) so that an issuance
    that timed out is resumed by the next run instead of ordered, and paid for, again."""

    name: str
    directory: str
    account: str
    url: str
    domains: tuple[str, ...]
    key_type: str
    key_pem: bytes
    csr_pem: bytes
    placed: datetime
    profile: str | None = None

    def to_json(self) -> bytes:
        data = {**asdict(self), "key_pem": self.key_pem.decode(), "csr_pem": self.csr_pem.decode(),
                "domains": list(self.domains), "placed": self.placed.isoformat()}  # fmt: skip
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PendingOrder:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("domains"), list):
            raise ValueError("not a pending order")
        return cls(
            str(data["name"]), str(data["directory"]), str(data["account"]), str(data["url"]),
            tuple(str(d) for d in data["domains"]), str(data["key_type"]),
            str(data["key_pem"]).encode(), str(data["csr_pem"]).encode(),
            datetime.fromisoformat(data["placed"]),
            str(data["profile"]) if data.get("profile") is not None else None,
        )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    reason: str | None  # why the certificate is due now; None when it is not
    next_time: datetime | None  # when it will be due (None when due now)
    why: str  # what decided next_time: lifetime ratio, renew_before, ARI
    ari: AriState | None = None


@dataclass(frozen=True)
class Outcome:
    name: str
    status: Status
    detail: str
    live_dir: Path | None = None
    not_after: datetime | None = None
    next_time: datetime | None = None  # when the certificate is next due (if known)
    retry_after: float | None = None  # seconds the CA asked us to wait before trying again
    error_type: str = ""  # e.g. "rateLimited", "network", "IssuanceError" (metrics, JSON logs)
    # "unchanged": nothing can change before this (next renewal or ARI check); None: unknown
    recheck: datetime | None = None
    ca: str = ""  # "issued": the name of the CA that issued it (after any fallback)
    fell_back: str = ""  # the CAs that failed before it, space-separated (a fallback)

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED

    def to_json(self) -> dict[str, Any]:
        """One line of the daemon's worker protocol (see :mod:`agent.daemon.worker`)."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
            elif isinstance(value, Path):
                data[key] = str(value)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # a newer worker's extras
        values["status"] = Status(values["status"])
        for key in ("not_after", "next_time", "recheck"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        if values.get("live_dir"):
            values["live_dir"] = Path(values["live_dir"])
        return cls(**values)


@dataclass(frozen=True)
class CertStatus:
    """One certificate as `status`, `check` and the metrics see it (from disk only)."""

    name: str
    domains: list[str]
    key_type: str | None
    issuer: str | None
    serial: str | None
    not_before: str | None
    not_after: str | None
    seconds_left: float | None
    lifetime_seconds: float | None
    next_renewal: str | None
    next_renewal_reason: str
    last_attempt: str | None
    last_result: str | None
    last_error: str | None
    deployed: bool | None  # None: no deploy table
    revoked: bool = False  # the certificate in service was revoked
    config_error: str | None = None  # its file of certs_dir is in error: not renewed
    damaged: str | None = None  # the live set is not what was installed (repaired next run)
    account_error: bool = False  # the last attempt failed on the ACME account (EAB, ...)
    ca: str | None = None  # the name of the CA that issued it ("": not known; None: none)
    configured: bool = True  # False: in state_dir only (an orphan: `acme-agent delete`)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class RunContext:
    """State of one run (one `renew`, or one worker batch): hooks and a failed account."""

    pre_hook_ran: bool = False
    # Per CA (by name): the account could not be opened (not tried again this run); the
    # CA had lost the account and a new one was registered; certificates tried again for it.
    client_errors: dict[str, Exception] = field(default_factory=dict)
    account_recovered: set[str] = field(default_factory=set)
    account_retried: set[tuple[str, str]] = field(default_factory=set)  # (CA, certificate)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Challenge:
    """A pending HTTP-01 challenge: serve ``key_authorization`` at ``token``."""

    domain: str
    token: str
    key_authorization: str
    body: Any  # acme.messages.ChallengeBody, for answering it


@dataclass(frozen=True)
class Holder:
    """Another host holds the right to renew a certificate (fleet mode), for this long."""

    node: str
    seconds_left: float


@dataclass(frozen=True)
class OrderRequest:
    """What the protocol layer needs to obtain one certificate (no configuration objects)."""

    name: str
    domains: tuple[str, ...]
    key_type: str
    profile: str | None = None
    profile_field: str = "profile"  # where `profile` was set, for messages
    reuse_key: bool = False  # order with the key in service (when it can be used)
    preferred_chain: str | None = None  # the root's name of the chain to install
    # The key to order with (reuse_key: the one in service), None: a fresh one. Secret.
    key_pem: bytes | None = field(default=None, repr=False)


class Solver(Protocol):
    """The HTTP-01 seam (lego's ``challenge.Provider``): serve the tokens, then take them down."""

    def present(self, challenges: Sequence[Challenge]) -> None: ...

    def cleanup(self) -> None: ...

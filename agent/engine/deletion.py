"""`delete`: remove a certificate that is no longer in the configuration from ``state_dir``
(everything :mod:`agent.store.removal` finds for its name), revoked first at the CA that
issued it when asked. A configured name is refused; so is one with nothing stored.

In fleet mode only this host's copy is removed: the shared record in Redis stays (other
hosts may still have the name configured; the fleet has no safe way to tell yet)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import is_certificate_name
from ..config.types import DEFAULT_CA, AcmeConfig, Config
from ..errors import AgentError, CAError, ConfigError, UsageError
from ..fleet.cluster import open_cluster
from ..model import REVOCATION_REASONS, CertRecord
from ..store.certs import Store
from ..store.removal import Found, remove, state_of, stored_names
from .accounts import stored_client
from .issuing import issued_by, issuing_ca

log = logging.getLogger(__name__)
CERTBOT_LIVE = Path("/etc/letsencrypt/live")  # certbot's default, for links not recorded


@dataclass(frozen=True)
class Deleted:
    name: str
    removed: list[Found]
    versions: int = 0  # of the archive
    revoked: str | None = None  # "serial <hex> revoked at <CA>", "already revoked", ...


def refuse_configured(config: Config, name: str) -> None:
    """A name the configuration still defines (also by a file of certs_dir in error)."""
    cert = config.certificate(name)
    problem = config.problem(name)
    if cert is None and problem is None:
        return
    where = cert.source.split(":", 1)[0] if cert and cert.source else str(config.path)
    if cert is None and problem is not None:
        where = f"{problem.path} (a file in error)"
    raise ConfigError(
        f"{name}: still configured in {where}; remove it from the configuration first, then "
        f"run acme-agent delete --cert {name} again"
    )


def delete(
    config: Config, name: str, *, revoke: bool = False, ca: str | None = None,
    reason: str = "cessationOfOperation",
) -> Deleted:  # fmt: skip
    """Revoke (when asked) and remove everything ``state_dir`` holds for ``name``."""
    if not is_certificate_name(name):
        raise UsageError(
            f"delete --cert {name!r}: not a certificate name (1-64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit)"
        )
    refuse_configured(config, name)
    store = Store(config.state_dir)
    if not state_of(store, name):
        raise UsageError(
            f"delete: no certificate named {name!r} in {config.state_dir} (acme-agent status "
            "lists those that are not configured any more)"
        )
    others = frozenset(stored_names(store) | {c.name for c in config.certificates}) - {name}
    with store.lock(name):  # no renewal of it is under way meanwhile
        revoked = _revoke(config, store, name, ca, reason) if revoke else None
        link = _certbot_link(store, name)
        found = state_of(store, name, others)
        versions = _count_versions(store, name)
        remove(found)
    if config.cluster is not None:
        log.info("%s: deleted on this host only; the fleet's shared record in Redis is kept "
                 "(other hosts may still have it configured)", name)  # fmt: skip
    if link.is_symlink() and os.readlink(link) == str(store.live_dir(name)):
        log.warning("%s: %s (import-certbot --link) now leads nowhere: remove it once no web "
                    "server reads it", name, link, extra={"cert": name})  # fmt: skip
    return Deleted(name, found, versions, revoked)


def _certbot_link(store: Store, name: str) -> Path:
    """Where import-certbot --link left certbot's live/<name> pointing at ours (recorded
    in ``links/<name>.json``; else certbot's default place)."""
    try:
        return Path(json.loads((store.root / "links" / f"{name}.json").read_text())["link"])
    except (OSError, ValueError, KeyError, TypeError):
        return CERTBOT_LIVE / name


def _revoke(config: Config, store: Store, name: str, ca: str | None, reason: str) -> str:
    """Revoke the certificate in service at the CA that issued it (``ca``: the operator's
    word for which one). Nothing is deleted when this raises."""
    current = store.current(name)
    if current is None:
        raise UsageError(
            f"{name}: no certificate in service in {store.live_dir(name)} to revoke; run "
            f"acme-agent delete --cert {name} without --revoke"
        )
    acme = revoking_ca(config, store, name, store.record(name), ca)
    client = stored_client(acme, store, open_cluster(config.cluster))
    if client is None:
        raise AgentError(
            f"{name}: not revoked, nothing deleted: there is no ACME account for {acme.label} "
            f"in {store.account_dir(acme.directory)}; name the CA whose account ordered it "
            f"with --ca NAME, or delete without --revoke"
        )
    serial = f"{current.cert.serial_number:x}"
    try:
        client.revoke(current.cert, REVOCATION_REASONS[reason], name)
    except CAError as err:
        if err.problem_type == "alreadyRevoked":
            log.info("%s: serial %s was already revoked at %s", name, serial, acme.label)
            return f"serial {serial} already revoked at {acme.label}"
        said = str(err).removeprefix(f"{name}: ")
        if err.retryable:  # not by the agent: by running delete again
            said = said.split(" -> ", 1)[0] + " -> try again later"
        raise AgentError(f"{name}: not revoked, nothing deleted: {said}") from None
    log.info("%s: serial %s revoked at %s (%s)", name, serial, acme.label, reason)
    return f"serial {serial} revoked at {acme.label}"


def revoking_ca(
    config: Config, store: Store, name: str, record: CertRecord | None, ca: str | None
) -> AcmeConfig:
    """The CA to revoke ``name``'s certificate at: ``ca`` when given, else the one its
    facts name (None: "default", from a version with one CA), else the configured CA whose
    stored account ordered it (the facts' account URL). Otherwise (an import, a CA since
    removed) refused with the way out: --ca NAME."""
    configured = ", ".join(config.cas)
    if ca is not None:
        chosen = config.ca(ca)
        if chosen is None:
            raise UsageError(f"delete --ca {ca}: no CA named {ca!r} (configured: {configured})")
        return chosen
    if record is None:  # facts unreadable: as from a version with one CA
        chosen, recorded = config.ca(DEFAULT_CA), DEFAULT_CA
    else:  # no longer configured: no certificate definition to take its only CA from
        chosen, recorded = issuing_ca(config.cas, store, None, record), issued_by(record)
    if chosen is not None:
        return chosen
    why = "the CA that issued it is not recorded"
    if recorded:
        why = f"it was issued by the CA {recorded!r}, which is not configured any more"
    raise ConfigError(
        f"{name}: not revoked, nothing deleted: {why}; say which CA to revoke it at with "
        f"--ca NAME (configured: {configured})"
    )


def _count_versions(store: Store, name: str) -> int:
    try:
        return len(store.versions(name))
    except OSError:  # unreadable: removing it says what is wrong
        return 0

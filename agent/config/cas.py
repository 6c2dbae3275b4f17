"""The CAs of a configuration: ``[acme]`` (the CA named "default") and any number of
``[ca.<name>]`` tables with the same keys, and which of them each certificate may use
(its ``ca`` list, filtered by each CA's ``key_types``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .tomltable import Table, relative_to
from .types import (
    DEFAULT_CA,
    DEFAULT_ISSUANCE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_ORDERS,
    DEFAULT_REQUEST_TIMEOUT,
    KEY_TYPES,
    AcmeConfig,
    CertificateConfig,
    same_url,
)

log = logging.getLogger(__name__)
# A CA's name appears in metrics labels, status and messages: short and plain.
_CA_NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")


def parse_cas(top: Table, base: Path) -> dict[str, AcmeConfig]:
    """``[acme]`` as "default", then each ``[ca.<name>]`` in the file's order."""
    cas = {DEFAULT_CA: parse_ca(top.table("acme"), base, DEFAULT_CA)}
    named = top.get("ca", dict, {})
    seen = {same_url(cas[DEFAULT_CA].directory): "[acme]"}
    for name, value in named.items():
        field = f"ca.{name}"
        if not _CA_NAME_RE.match(name):
            raise top.error(field, "a CA's name is 1-32 lower-case letters, digits, '-' or '_'")
        if name == DEFAULT_CA:
            raise top.error(field, '"default" is the name of [acme]; name this CA otherwise')
        if not isinstance(value, dict):
            raise top.error(field, "expected a table ([ca.NAME] with directory = ...)")
        cas[name] = parse_ca(Table(value, top.where, f"{field}."), base, name)
        directory = same_url(cas[name].directory)
        if directory in seen:  # one account, ARI memory and pending order per directory
            raise top.error(f"{field}.directory", f"is also the directory of {seen[directory]}; "
                            "one table per CA")  # fmt: skip
        seen[directory] = f"[{field}]"
    return cas


def parse_ca(table: Table, base: Path, name: str) -> AcmeConfig:
    directory = table.require("directory", str)
    if not directory.startswith("https://"):
        raise table.error("directory", f"{directory!r} must be an https:// URL")
    email = table.text("email")
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise table.error("email", f"{email!r} is not an e-mail address")
    eab_kid = table.text("eab_kid")
    eab_key = table.text("eab_hmac_key")
    eab_file = table.text("eab_hmac_key_file")
    if eab_key is not None and eab_file is not None:
        raise table.error("eab_hmac_key", "set eab_hmac_key or eab_hmac_key_file, not both")
    if (eab_key is not None or eab_file is not None) and eab_kid is None:
        raise table.error("eab_kid", "is required when an EAB HMAC key is configured")
    bundle = table.text("ca_bundle")
    request_timeout = table.get("request_timeout", (int, float), DEFAULT_REQUEST_TIMEOUT)
    if not 1 <= request_timeout <= 600:
        raise table.error("request_timeout", f"{request_timeout} must be between 1 and 600 seconds")
    concurrency = table.get("max_concurrent_orders", int, DEFAULT_MAX_CONCURRENT_ORDERS)
    if not 1 <= concurrency <= 64:
        raise table.error("max_concurrent_orders", f"{concurrency} must be between 1 and 64")
    staging = table.text("staging_directory")
    if staging is not None and not staging.startswith("https://"):
        raise table.error("staging_directory", f"{staging!r} must be an https:// URL")
    if staging is not None and same_url(staging) == same_url(directory):
        # What older example configurations said ("default: directory"): not an error, but
        # no staging directory either (a dry run there would not be free).
        log.warning("%s: %s: is the CA's own directory, so it is no staging directory; "
                    "ignored (renew --dry-run asks for one, or --allow-production)",
                    table.where, table.field_name("staging_directory"))  # fmt: skip
        staging = None
    staging_kid = table.text("staging_eab_kid")
    staging_file = table.text("staging_eab_hmac_key_file")
    if (staging_kid is None) != (staging_file is None):
        raise table.error("staging_eab_kid", "set both staging_eab_kid and "
                          "staging_eab_hmac_key_file, or neither")  # fmt: skip
    timeout = table.get("issuance_timeout", (int, float), DEFAULT_ISSUANCE_TIMEOUT)
    if not 1 <= timeout <= 86400:
        raise table.error("issuance_timeout", f"{timeout} must be between 1 and 86400 seconds")
    key_types = _key_types(table)
    table.finish()
    return AcmeConfig(
        directory=directory,
        email=email,
        eab_kid=eab_kid,
        eab_hmac_key=eab_key,
        eab_hmac_key_file=relative_to(Path(eab_file), base) if eab_file else None,
        ca_bundle=relative_to(Path(bundle), base) if bundle else None,
        issuance_timeout=float(timeout),
        request_timeout=float(request_timeout),
        staging_directory=staging,
        max_concurrent_orders=concurrency,
        name=name,
        key_types=key_types,
        staging_eab_kid=staging_kid,
        staging_eab_hmac_key_file=relative_to(Path(staging_file), base) if staging_file else None,
    )


def _key_types(table: Table) -> tuple[str, ...] | None:
    raw = table.get("key_types", list)
    if raw is None:
        return None
    if not raw:
        raise table.error("key_types", "must list at least one key type (or be left out)")
    found: list[str] = []
    for i, value in enumerate(raw):
        if not isinstance(value, str) or value not in KEY_TYPES:
            raise table.error(f"key_types[{i}]", f"{value!r} is not one of {', '.join(KEY_TYPES)}")
        if value not in found:
            found.append(value)
    return tuple(found)


def parse_ca_choice(table: Table) -> tuple[str, ...]:
    """A certificate's ``ca``: one name or a list of them (the fallback order)."""
    value = table.get("ca", (str, list), DEFAULT_CA)
    names = [value] if isinstance(value, str) else value
    if not names:
        raise table.error("ca", "must name at least one CA (or be left out: the default CA)")
    chosen: list[str] = []
    for i, name in enumerate(names):
        key = "ca" if isinstance(value, str) else f"ca[{i}]"
        if not isinstance(name, str) or not name.strip():
            raise table.error(key, 'expected the name of a CA ([acme] is "default")')
        if name in chosen:
            raise table.error(key, f"{name!r} is listed twice")
        chosen.append(name)
    return tuple(chosen)


def check_cas(cert: CertificateConfig, cas: Mapping[str, AcmeConfig]) -> None:
    """Every CA ``cert`` names exists, and one of them at least accepts its key type."""
    for name in cert.ca:
        if name not in cas:
            known = ", ".join(cas)
            raise ConfigError(
                f"{cert.field('ca')}: no CA named {name!r} (configured: {known}; add a "
                f"[ca.{name}] table or fix the name)"
            )
    if not any(accepts(cas[name], cert.key_type) for name in cert.ca):
        which = ", ".join(f"{n} accepts {', '.join(cas[n].key_types or ())}" for n in cert.ca)
        raise ConfigError(
            f"{cert.field('key_type')}: {cert.key_type!r} is accepted by none of its CAs "
            f"({which}); choose one of those key types, or another CA"
        )


def accepts(ca: AcmeConfig, key_type: str) -> bool:
    return ca.key_types is None or key_type in ca.key_types


def usable_cas(cert: CertificateConfig, cas: Mapping[str, AcmeConfig]) -> list[AcmeConfig]:
    """The CAs ``cert`` is ordered from, in its fallback order: those it names that
    accept its key type (those that do not are skipped)."""
    return [cas[name] for name in cert.ca if name in cas and accepts(cas[name], cert.key_type)]

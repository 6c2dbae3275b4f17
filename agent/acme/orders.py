"""Order messages: newOrder with RFC 9773's ``replaces`` and RFC 8738's IP identifiers, what
an order answer says, and the alternate chains of a certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import josepy as jose
import requests
from acme import messages

from .. import keys
from .problems import describe_problem
from .transport import Response


@dataclass(frozen=True)
class OrderState:
    url: str
    status: str
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None
    error: str
    retry_after: str | None
    identifiers: tuple[str, ...] = ()  # the names (DNS, IP) the CA has in the order
    profile: str | None = None  # the profile the CA echoes, if it does
    expires: datetime | None = None


class NewOrderReplacing(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (the ARI id of the certificate it renews)."""

    replaces: str | None = jose.field("replaces", omitempty=True)


def identifier(name: str) -> messages.Identifier:
    """The order identifier of a configured name: type "ip" for an IP address (RFC 8738),
    else "dns"."""
    if keys.ip_address_of(name) is not None:
        return messages.Identifier(typ=messages.IDENTIFIER_IP, value=name)
    return messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)


def alternate_links(response: Response, url: str) -> list[str]:
    """The ``Link: rel="alternate"`` URLs of a certificate download, resolved against
    ``url``; only those on the certificate's own origin (the chains are the CA's)."""
    origin = urlsplit(url)[:2]
    found: list[str] = []
    try:
        links = requests.utils.parse_header_links(response.headers.get("Link", ""))
    except ValueError:
        return []  # an unreadable header: the default chain (the download stands)
    for link in links:
        if "alternate" not in link.get("rel", "").split():
            continue
        try:
            target = urljoin(url, link.get("url", ""))
            same = urlsplit(target)[:2] == origin
        except ValueError:  # "https://[bad": skipped, never the download's failure
            continue
        if same and target not in found:
            found.append(target)
    return found[:MAX_ALTERNATES]


# Alternate chains fetched at most (each is a signed request; CAs offer one or two).
MAX_ALTERNATES = 8


def order_state(response: Response, url: str) -> OrderState:
    body = messages.Order.from_json(response.json())
    error = ""
    if body.error is not None:
        error = f"{body.error.code}: {describe_problem(body.error)}"
    return OrderState(
        url=url,
        status=str(body.status.name),
        authorizations=tuple(str(a) for a in body.authorizations or ()),
        finalize=str(body.finalize),
        certificate=str(body.certificate) if body.certificate else None,
        error=error,
        retry_after=response.headers.get("Retry-After"),
        identifiers=tuple(str(i.value) for i in body.identifiers or ()),
        profile=str(body.profile) if body.profile else None,
        expires=_aware(body.expires),
    )


def _aware(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def order_mismatch(order: OrderState, domains: tuple[str, ...], profile: str | None) -> str | None:
    """What the CA's order has that was not asked for (None: it is the order requested).
    A server that copies the replaced certificate's names into a renewal would otherwise
    fail at finalize with a misleading ``badCSR``."""
    wanted = {keys.normal_name(d) for d in domains}
    got = {keys.normal_name(i) for i in order.identifiers}
    problems = []
    if order.identifiers and got != wanted:
        if extra := sorted(got - wanted):
            problems.append(f"names not requested: {', '.join(extra)}")
        if missing := sorted(wanted - got):
            problems.append(f"requested names missing: {', '.join(missing)}")
    if profile is not None and order.profile is not None and order.profile != profile:
        problems.append(f"profile {order.profile!r} instead of {profile!r}")
    return "; ".join(problems) or None

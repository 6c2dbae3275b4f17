"""The fleet's shared ACME account in Redis (``account:<id>``): its key sealed, its URL and
RFC 7638 thumbprint under the cluster's MAC; and the responders' answers to the HTTP-01
tokens other hosts published, computed from that thumbprint (Redis holds data; the
cluster's key holds authority)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.cluster import ClusterConfig
from ..config.types import AcmeConfig
from ..errors import AgentError
from ..model import Challenge
from ..store.certs import Store, local_thumbprint
from .sealing import Authenticator, Sealer, SealError

log = logging.getLogger(__name__)

# The responder looks the shared account's thumbprint up again after this long.
THUMBPRINT_CACHE = 30.0
# Unanswered HTTP-01 tokens disappear on their own after this long (at least).
TOKEN_TTL_MIN = 600


@dataclass(frozen=True)
class SharedAccountRecord:
    key_pem: bytes
    uri: str
    thumbprint: str
    generation: int


_WARNED: dict[str, str | None] = {}  # Redis key -> the MAC last warned about


class SharedAccount:
    """Mixed into :class:`~agent.fleet.cluster.RedisCluster`, which provides these."""

    settings: ClusterConfig
    prefix: str

    def call(self, operation: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    @property
    def sealer(self) -> Sealer:
        raise NotImplementedError

    @property
    def auth(self) -> Authenticator:
        raise NotImplementedError

    def account_key(self, directory: str) -> str:
        return self.prefix + "account:" + hashlib.sha256(directory.encode()).hexdigest()[:16]

    def load_account(self, directory: str) -> SharedAccountRecord | None:
        """The shared account for this CA, when a host of this cluster wrote it (its key
        sealed, its URL, thumbprint and generation under the cluster's MAC); else None,
        said once: a record someone else wrote is never used."""
        where = self.account_key(directory)
        data = self.call(lambda r: r.hgetall(where))
        if not data or "uri" not in data or "key" not in data:
            return None
        fields = self._account_fields(directory, data)
        if not self.auth.verify(data.get("mac"), "account", *fields):
            if _WARNED.get(where) != data.get("mac"):
                _WARNED[where] = data.get("mac")
                log.warning("Redis key %s: the shared ACME account does not carry a valid MAC of "
                            "this cluster (written by something else, or by an older version); "
                            "not used", where)  # fmt: skip
            return None
        try:
            key_pem = self.sealer.open(data["key"], where.removeprefix(self.prefix))
        except SealError as err:
            raise AgentError(f"the shared ACME account: {err}") from None
        return SharedAccountRecord(key_pem, data["uri"], data["thumbprint"],
                                   int(data["generation"]))  # fmt: skip

    def unauthenticated_account(self, directory: str) -> bool:
        """Is there an account record without this cluster's MAC (an older acme-agent's)?"""
        data = self.call(lambda r: r.hgetall(self.account_key(directory)))
        if not data or "key" not in data:
            return False
        return not self.auth.verify(data.get("mac"), "account",
                                    *self._account_fields(directory, data))  # fmt: skip

    def _account_fields(self, directory: str, data: dict[str, str]) -> tuple[str, ...]:
        return (self.prefix, directory, data.get("uri", ""), data.get("thumbprint", ""),
                data.get("key", ""), data.get("generation", ""))  # fmt: skip

    def deactivated_account(self, directory: str) -> str | None:
        """The URL of the shared account a host deactivated (its copies must go), or None;
        only a note a host of this cluster wrote counts."""
        data = self.call(lambda r: r.hgetall(self.account_key(directory)))
        uri = data.get("deactivated") if data else None
        mac = data.get("deactivated_mac") if data else None
        if uri and self.auth.verify(mac, "deactivated", self.prefix, directory, uri):
            return str(uri)
        return None

    def forget_account(self, directory: str, uri: str) -> None:
        """After deactivation: no key left in Redis, and a note for the other hosts."""
        where = self.account_key(directory)
        mac = self.auth.mac("deactivated", self.prefix, directory, uri)

        def replace(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.delete(where)
            pipe.hset(where, mapping={"deactivated": uri, "deactivated_mac": mac,
                                      "node": self.settings.node_name})  # fmt: skip
            pipe.execute()

        self.call(replace)

    def store_account(self, directory: str, key_pem: bytes, uri: str, thumbprint: str) -> int:
        """The shared account: its key sealed, its URL, RFC 7638 thumbprint and generation
        (nanoseconds of the write: a replayed older record is refused by hosts that know a
        newer one) under a MAC. The responders answer challenges with that thumbprint only.
        Returns the generation."""
        where = self.account_key(directory)
        sealed = self.sealer.seal(key_pem, where.removeprefix(self.prefix))
        data = {"uri": uri, "key": sealed, "directory": directory, "thumbprint": thumbprint,
                "generation": str(time.time_ns()), "node": self.settings.node_name}  # fmt: skip
        data["mac"] = self.auth.mac("account", *self._account_fields(directory, data))

        def replace(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.delete(where)  # no field of an older record survives
            pipe.hset(where, mapping=data)
            pipe.execute()

        self.call(replace)
        return int(data["generation"])

    def account_thumbprint(self, directory: str) -> tuple[str, int] | None:
        """The shared account's (thumbprint, generation), when a host of this cluster wrote
        it."""
        data = self.call(lambda r: r.hgetall(self.account_key(directory)))
        if not data or not data.get("thumbprint"):
            return None
        if not self.auth.verify(data.get("mac"), "account", *self._account_fields(directory, data)):
            return None
        try:
            return str(data["thumbprint"]), int(data["generation"])
        except (KeyError, ValueError):
            return None

    def answerer_for(
        self, cas: Mapping[str, AcmeConfig], store: Store
    ) -> Callable[[str], str | None]:
        """:meth:`token_answerer` for the fleet's account at each configured CA, as this
        host keeps them in ``store``."""
        return self.token_answerer(
            {ca.directory: local_thumbprint(store, ca.directory) for ca in cas.values()}
        )

    def token_answerer(
        self, accounts: Mapping[str, Callable[[], tuple[str, int] | None]]
    ) -> Callable[[str], str | None]:
        """For the responder: the key authorization of a token another host published.
        Redis only says *which* tokens are pending; the answer is computed here from the
        thumbprint of one of the fleet's accounts (``accounts``: directory -> this host's
        copy, thumbprint and generation from state_dir; the one in Redis under the
        cluster's MAC wins when newer: a rollover on another host). With several CAs, the
        published value says which of those accounts the token is for. Whoever can write
        to Redis cannot have this fleet answer a challenge of another account, nor bring
        back a rolled-over key."""
        cached: list[tuple[float, list[str]]] = []

        def thumbprints(fresh: bool = False) -> list[str]:
            if fresh or not cached or cached[0][0] < time.monotonic():
                known = []
                for directory, local in accounts.items():
                    mine, shared = local(), self.account_thumbprint(directory)
                    best = max((t for t in (mine, shared) if t is not None), key=lambda t: t[1],
                               default=None)  # fmt: skip
                    if best is not None:
                        known.append(best[0])
                cached[:] = [(time.monotonic() + THUMBPRINT_CACHE, known)]
            return cached[0][1]

        def answer(token: str) -> str | None:
            try:
                value = self.call(lambda r: r.get(self.prefix + "http01:" + token))
                known = thumbprints() if value is not None else []
            except AgentError as err:
                log.warning("HTTP-01 token lookup: %s", err)
                return None
            if value is None:
                return None
            claimed = str(value).partition(".")[2]  # which of our accounts it is for
            if claimed not in known:  # perhaps one registered or rolled over just now
                try:
                    known = thumbprints(fresh=True)
                except AgentError:
                    known = []
            chosen = claimed if claimed in known else None
            if chosen is None:
                log.warning(
                    "HTTP-01 token %s is pending in Redis, but for no authenticated "
                    "thumbprint of the fleet's accounts; not answered",
                    token,
                )
            return f"{token}.{chosen}" if chosen else None

        return answer

    def publish_tokens(self, challenges: Sequence[Challenge], ttl: float) -> None:
        seconds = max(TOKEN_TTL_MIN, int(ttl))

        def write(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for challenge in challenges:
                pipe.set(self.prefix + "http01:" + challenge.token,
                         challenge.key_authorization, ex=seconds)  # fmt: skip
            pipe.execute()

        self.call(write)

    def remove_tokens(self, challenges: Sequence[Challenge]) -> None:
        if challenges:
            keys = [self.prefix + "http01:" + c.token for c in challenges]
            self.call(lambda r: r.delete(*keys))

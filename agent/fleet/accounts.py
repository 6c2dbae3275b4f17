"""The fleet's shared ACME account in Redis (``account:<id>``): its key sealed, its URL and
RFC 7638 thumbprint under the cluster's MAC; and the responders' answers to the HTTP-01
tokens other hosts published, computed from that thumbprint (Redis holds data; the
cluster's key holds authority)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..config.cluster import ClusterConfig
from ..errors import AgentError
from .sealing import Authenticator, Sealer, SealError

log = logging.getLogger(__name__)

# The responder looks the shared account's thumbprint up again after this long.
THUMBPRINT_CACHE = 30.0


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

    def load_account(self, directory: str) -> tuple[bytes, str] | None:
        """The shared account's (key PEM, URL) for this CA, or None."""
        where = self.account_key(directory)
        data = self.call(lambda r: r.hgetall(where))
        if not data or "uri" not in data or "key" not in data:
            return None
        try:
            return self.sealer.open(data["key"], where.removeprefix(self.prefix)), data["uri"]
        except SealError as err:
            raise AgentError(f"the shared ACME account: {err}") from None

    def deactivated_account(self, directory: str) -> str | None:
        """The URL of the shared account a host deactivated (its copies must go), or None."""
        value = self.call(lambda r: r.hget(self.account_key(directory), "deactivated"))
        return str(value) if value else None

    def forget_account(self, directory: str, uri: str) -> None:
        """After deactivation: no key left in Redis, and a note for the other hosts."""
        where = self.account_key(directory)

        def replace(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.delete(where)
            pipe.hset(where, mapping={"deactivated": uri, "node": self.settings.node_name})
            pipe.execute()

        self.call(replace)

    def store_account(self, directory: str, key_pem: bytes, uri: str, thumbprint: str) -> None:
        """The shared account: its key sealed, its URL and RFC 7638 thumbprint under a MAC
        (the responders answer challenges with that thumbprint only)."""
        where = self.account_key(directory)
        sealed = self.sealer.seal(key_pem, where.removeprefix(self.prefix))
        mac = self.auth.mac("account", directory, uri, thumbprint, sealed)
        mapping = {"uri": uri, "key": sealed, "directory": directory, "thumbprint": thumbprint,
                   "mac": mac, "node": self.settings.node_name}  # fmt: skip
        self.call(lambda r: r.hset(where, mapping=mapping))

    def account_thumbprint(self, directory: str) -> str | None:
        """The shared account's thumbprint, when a host of this cluster wrote it."""
        data = self.call(lambda r: r.hgetall(self.account_key(directory)))
        fields = (directory, data.get("uri", ""), data.get("thumbprint", ""), data.get("key", ""))
        if data.get("thumbprint") and self.auth.verify(data.get("mac"), "account", *fields):
            return str(data["thumbprint"])
        return None

    def token_answerer(self, directory: str) -> Callable[[str], str | None]:
        """For the responder: the key authorization of a token another host published.
        Redis only says *which* tokens are pending; the answer is computed here from the
        shared account's thumbprint (authenticated with the cluster key), so whoever can
        write to Redis cannot have this fleet answer a challenge of another account."""
        cached: list[tuple[float, str | None]] = []

        def thumbprint() -> str | None:
            if not cached or cached[0][0] < time.monotonic():
                cached[:] = [
                    (time.monotonic() + THUMBPRINT_CACHE, self.account_thumbprint(directory))
                ]
            return cached[0][1]

        def answer(token: str) -> str | None:
            try:
                pending = self.call(lambda r: r.exists(self.prefix + "http01:" + token))
                known = thumbprint() if pending else None
            except AgentError as err:
                log.warning("HTTP-01 token lookup: %s", err)
                return None
            if pending and known is None:
                log.warning(
                    "HTTP-01 token %s is pending in Redis, but the cluster's ACME account "
                    "has no authenticated thumbprint there yet; not answered",
                    token,
                )
            return f"{token}.{known}" if pending and known else None

        return answer

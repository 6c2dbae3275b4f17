"""Fleet mode: hosts behind one load balancer share certificates through Redis.

What lives in Redis (all names under ``[cluster] key_prefix``):

- ``cert:<name>``: hash of the current certificate (fullchain, serial, not_after, version,
  node) and its private key, sealed with the hosts' shared ``key_file`` (:mod:`.sealing`);
- ``lock:<name>``: the lease of the host renewing ``<name>`` ("<fence> <owner>", with a
  TTL, renewed while the order runs); ``fence`` is the counter fencing tokens come from.
  A write needs the writer's lease to be current (checked in the same atomic step), so a
  holder that stalled past its lease can never overwrite a newer result; the lock's value
  carries a MAC of the cluster (one without is honoured until its TTL, which is never
  longer than ten leases);
- ``http01:<token>``: pending key authorizations, with a TTL; every host's responder
  answers from them, whichever host the CA's request lands on;
- ``account:<id>``: the shared ACME account (URL and sealed key), registered once;
- channel ``events``: a certificate name, published with each new version (:mod:`.events`).

Redis unreachable: nothing local is touched; the operation fails with a
:class:`ClusterError` (retried by the daemon like any failed renewal).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config.cluster import ClusterConfig
from ..config.secretfile import read_secret_file
from ..errors import AgentError, ConfigError
from ..model import Holder
from .accounts import SharedAccount
from .sealing import Authenticator, Sealer, SealError

log = logging.getLogger(__name__)

# One Redis request: connect, then answer. A dead Redis costs at most this much per call.
CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 5.0
# Keep-alive on idle connections (pub/sub): a silent network failure is seen within this.
HEALTH_CHECK_INTERVAL = 15
# A lock without a TTL, or with one far beyond any lease (written by something other than
# a host of this cluster), is given the caller's lease as TTL: it is taken over then. The
# fence counter is repaired when it is not a number or absurdly large (a Redis writer).
_ACQUIRE = """
local cur = redis.call('get', KEYS[1])
if cur then
  local ttl = redis.call('pttl', KEYS[1])
  if ttl < 0 or ttl > 10 * tonumber(ARGV[2]) then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return {0, cur, tonumber(ARGV[2]), 1}
  end
  return {0, cur, ttl, 0}
end
local fence = redis.pcall('incr', KEYS[2])
if type(fence) ~= 'number' or fence > 4503599627370496 then
  redis.call('set', KEYS[2], 1)
  fence = 1
end
local value = fence .. ' ' .. ARGV[1]
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return {1, value, fence}
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# The lease, checked and used in one atomic step, is what fences a write: a holder that
# stalled past its lease can never overwrite a newer result. The whole record is replaced
# (no field of a record another writer made survives).
_PUT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[2])
redis.call('hset', KEYS[2], unpack(ARGV, 5))
redis.call('publish', ARGV[3], ARGV[4])
return 1
"""


def redacted(url: str) -> str:
    """``url`` without a password (the user name stays: it is no secret)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))


_WARNED_LOCKS: dict[str, str] = {}  # lock key -> the value last warned about


class ClusterError(AgentError):
    """Redis could not be reached or refused an operation; what is in service is kept."""


class LeaseLost(ClusterError):
    """Another host took over the lease (this one stalled past it): the result is dropped."""


@dataclass(frozen=True)
class SharedCert:
    name: str
    serial: str  # lower-case hex, as in the local facts
    not_after: datetime
    version: int  # the fencing token of the write
    node: str
    fullchain: bytes
    sealed_key: str
    ca: str = ""  # the name of the CA that issued it ("": not said, or not authentic)


class Lease:
    """A held lock on one name; renewed in the background until :meth:`release`."""

    def __init__(self, cluster: RedisCluster, key: str, value: str, fence: int) -> None:
        self.cluster = cluster
        self.key = key
        self.value = value
        self.fence = fence
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease {key}", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        ttl_ms = int(self.cluster.settings.lease_seconds * 1000)
        while not self._stop.wait(self.cluster.settings.lease_seconds / 3):
            try:
                if not self.cluster.script("renew")(keys=[self.key], args=[self.value, ttl_ms]):
                    self.lost = True
                    log.warning("%s: lease lost (another host took over)", self.key)
                    return
            except Exception as err:  # keep trying until the lease runs out
                log.warning("%s: cannot renew the lease: %s", self.key, self.cluster.describe(err))

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=SOCKET_TIMEOUT)
        with contextlib.suppress(ClusterError):  # it expires on its own anyway
            self.cluster.call(lambda r: self.cluster.script("release")(
                keys=[self.key], args=[self.value]))  # fmt: skip


def open_cluster(settings: ClusterConfig | None) -> RedisCluster | None:
    """The shared store of ``[cluster]`` (connected on first use), or None on a single host."""
    return RedisCluster(settings) if settings is not None else None


class RedisCluster(SharedAccount):
    """Redis for the fleet; the shared account's records are in :class:`SharedAccount`."""

    def __init__(self, settings: ClusterConfig, sealer: Sealer | None = None) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.events_channel = self.prefix + "events"
        self._sealer = sealer
        self._auth: Authenticator | None = None
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------
    @property
    def redis(self) -> Any:
        with self._lock:
            if self._redis is None:
                self._redis = self._connect()
            return self._redis

    def _connect(self) -> Any:
        import redis

        settings = self.settings
        options: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "health_check_interval": HEALTH_CHECK_INTERVAL,
            "decode_responses": True,
            "client_name": f"acme-agent-{settings.node_name}"[:64].replace(" ", "-"),
        }
        if settings.password_file is not None:
            field, needed = "[cluster] password_file", "the Redis password is read from it"
            options["password"] = read_secret_file(settings.password_file, field, needed)
        if settings.url.startswith("rediss://") and settings.ca_file is not None:
            options["ssl_ca_certs"] = str(settings.ca_file)
        try:
            return redis.Redis.from_url(settings.url, **options)
        except ValueError as err:
            raise ConfigError(f"[cluster] url: {err}") from None

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            self._auth = Authenticator.from_file(self.settings.key_file)
        return self._auth

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer.from_file(self.settings.key_file)
        return self._sealer

    def describe(self, err: Exception) -> str:
        return f"Redis at {redacted(self.settings.url)}: {err or type(err).__name__}"

    def call(self, operation: Callable[[Any], Any]) -> Any:
        """Run ``operation(redis)``; Redis failures become one readable error."""
        import redis

        try:
            return operation(self.redis)
        except redis.AuthenticationError as err:
            raise ConfigError(
                f"[cluster] password_file: {self.describe(err)}; check the password (and the "
                "user in url)"
            ) from None
        except redis.RedisError as err:
            raise ClusterError(
                f"{self.describe(err)}; the certificates in service are kept, will retry"
            ) from None
        except (UnicodeDecodeError, TypeError, ValueError) as err:  # a value not ours
            raise ClusterError(
                f"Redis at {redacted(self.settings.url)} holds a value acme-agent did not write "
                f"({type(err).__name__}); the certificates in service are kept"
            ) from None

    def script(self, name: str) -> Any:
        if name not in self._scripts:
            source = {"acquire": _ACQUIRE, "renew": _RENEW, "release": _RELEASE, "put": _PUT}
            self._scripts[name] = self.redis.register_script(source[name])
        return self._scripts[name]

    def ping(self) -> None:
        self.call(lambda r: r.ping())

    def close(self) -> None:
        with self._lock:
            if self._redis is not None:
                self._redis.close()
                self._redis = None

    # -- leases ----------------------------------------------------------------------
    def acquire(self, name: str) -> Lease | Holder:
        """The lease on ``name``, or who holds it now. The lock's value carries a MAC of
        this cluster; one without (an older acme-agent's during a rolling upgrade, or
        forged) is honoured until its TTL, which _ACQUIRE bounds to ten leases."""
        key = self.prefix + "lock:" + name
        who = f"{self.settings.node_name} {os.getpid()} {secrets.token_hex(8)}"
        owner = f"{who} {self.auth.mac('lock', key, who)}"
        ttl_ms = int(self.settings.lease_seconds * 1000)
        result = self.call(lambda r: self.script("acquire")(
            keys=[key, self.prefix + "fence"], args=[owner, ttl_ms]))  # fmt: skip
        if int(result[0]) == 1:
            return Lease(self, key, str(result[1]), int(result[2]))
        value = str(result[1])
        if not self._lock_is_ours(key, value) and _WARNED_LOCKS.get(key) != value:
            _WARNED_LOCKS[key] = value  # an older acme-agent's (rolling upgrade), or forged:
            log.warning("Redis key %s holds a lock without this cluster's MAC (%r: an older "
                        "acme-agent, or not ours); it is honoured until its TTL runs out",
                        key, value[:80])  # fmt: skip
        parts = value.split(" ")
        node = parts[1] if len(parts) > 1 else "?"
        if len(result) > 3 and int(result[3]) == 1:
            log.warning("Redis key %s held a lock without a sensible TTL (%r); it now expires in "
                        "%.0f s and is taken over then", key, value[:80],
                        self.settings.lease_seconds)  # fmt: skip
        return Holder(node, max(0.0, int(result[2]) / 1000))

    def _lock_is_ours(self, key: str, value: str) -> bool:
        parts = value.split(" ")  # "<fence> <node> <pid> <random> <mac>"
        return len(parts) == 5 and self.auth.verify(parts[4], "lock", key, " ".join(parts[1:4]))

    @contextlib.contextmanager
    def holding(self, name: str, wait: float) -> Iterator[Lease | Holder]:
        """The lease on ``name``, waiting up to ``wait`` seconds for its holder."""
        deadline = time.monotonic() + wait
        got = self.acquire(name)
        while isinstance(got, Holder) and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
            got = self.acquire(name)
        try:
            yield got
        finally:
            if isinstance(got, Lease):
                got.release()

    # -- certificates ----------------------------------------------------------------
    def cert_key(self, name: str) -> str:
        return self.prefix + "cert:" + name

    def serials(self, names: Sequence[str]) -> dict[str, str | None]:
        """The serial stored for each name (None: none yet), in one round trip."""

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.hget(self.cert_key(name), "serial")
            return list(pipe.execute())

        return dict(zip(names, self.call(read), strict=True)) if names else {}

    def load_cert(self, name: str) -> SharedCert | None:
        """The version in Redis, or None: none yet, or a record that no host holding this
        cluster's key_file wrote (it is logged and never installed)."""
        data = self.call(lambda r: r.hgetall(self.cert_key(name)))
        if not data or "serial" not in data:
            return None
        if not self._authentic(name, data):
            log.warning("%s: Redis key %s does not carry a valid MAC of this cluster (written by "
                        "something else, or by a host with another key_file); ignored",
                        name, self.cert_key(name), extra={"cert": name})  # fmt: skip
            return None
        try:
            return SharedCert(
                name=name,
                serial=data["serial"],
                not_after=datetime.fromisoformat(data["not_after"]),
                version=int(data["version"]),
                node=data.get("node", "?"),
                fullchain=data["fullchain"].encode(),
                sealed_key=data["key"],
                ca=self._issuing_ca(name, data),
            )
        except (KeyError, ValueError):
            raise ClusterError(
                f"Redis key {self.cert_key(name)} is incomplete; the next renewal replaces it"
            ) from None

    def _cert_mac_fields(self, name: str, data: dict[str, str]) -> tuple[str, ...]:
        digest = hashlib.sha256(data.get("fullchain", "").encode()).hexdigest()
        return (self.prefix, name, data.get("serial", ""), data.get("not_after", ""),
                data.get("version", ""), data.get("node", ""), digest,
                data.get("key", ""))  # fmt: skip

    def _issuing_ca(self, name: str, data: dict[str, str]) -> str:
        """The CA named in the record, under a MAC of its own (hosts of an older version
        neither write nor check it: their records have none, and ours still verify)."""
        ca, serial = data.get("ca", ""), data.get("serial", "")
        if ca and self.auth.verify(data.get("ca_mac"), "cert-ca", self.prefix, name, serial, ca):
            return ca
        return ""

    def _authentic(self, name: str, data: dict[str, str]) -> bool:
        return self.auth.verify(data.get("mac"), "cert", *self._cert_mac_fields(name, data))

    def open_key(self, shared: SharedCert) -> bytes:
        try:
            return self.sealer.open(shared.sealed_key, "cert:" + shared.name)
        except SealError as err:
            raise ClusterError(f"{shared.name}: {err}") from None

    def put_cert(
        self, lease: Lease, name: str, key_pem: bytes, fullchain: bytes, serial: str,
        not_after: datetime, ca: str = "",
    ) -> None:  # fmt: skip
        """Publish a new version; refused when ``lease`` is no longer current."""
        fields = {
            "serial": serial,
            "not_after": not_after.isoformat(),
            "version": str(lease.fence),
            "node": self.settings.node_name,
            "fullchain": fullchain.decode("ascii"),
            "key": self.sealer.seal(key_pem, "cert:" + name),
        }
        fields["mac"] = self.auth.mac("cert", *self._cert_mac_fields(name, fields))
        fields["ca"] = ca  # outside the record's MAC (older hosts check that one), under its own
        fields["ca_mac"] = self.auth.mac("cert-ca", self.prefix, name, serial, ca)
        flat = [item for pair in fields.items() for item in pair]
        args = [lease.value, lease.fence, self.events_channel, name, *flat]
        result = self.call(lambda r: self.script("put")(
            keys=[lease.key, self.cert_key(name)], args=args))  # fmt: skip
        if int(result) != 1:
            raise LeaseLost(
                f"{name}: this host's lease ran out during the order and another host took "
                "over; the certificate is kept on this host but not shared"
            )

"""Where "the current certificate of NAME" lives and who may renew it: the seam between the
renewer and a fleet (certmagic's ``Storage`` + ``Locker``).

On one host (:class:`LocalBackend`) the local store is the only copy and the right to
renew is a ``flock``. In a fleet (:class:`agent.fleet.backend.FleetBackend`) Redis holds
the shared version, the right to renew is a fenced lease, and a new certificate goes to
Redis before it goes into service here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from .. import keys
from ..config.types import CertificateConfig, Config
from ..model import CertRecord, Holder, Outcome, Solver
from ..store.certs import Store

if TYPE_CHECKING:
    from ..fleet.cluster import RedisCluster


class Claim(Protocol):
    """The right to renew one certificate, held for the duration of a ``with`` block."""

    holder: Holder | None  # someone else holds it: do not renew (None: we hold it)
    # A newer version another host finished between our first look and the claim: put
    # into service while the claim was taken (before this host's lock on the name).
    adopted: Outcome | None

    def publish(self, key_pem: bytes, chain: keys.IssuedChain, ca: str = "") -> None:
        """Share a new certificate (``ca``: the name of the CA that issued it) before it
        goes into service here (raises if the right to renew was lost meanwhile: then it
        must not be used)."""


class CertBackend(Protocol):
    cluster: RedisCluster | None  # the fleet's Redis (shared account, tokens), if any

    def prepare(self, names: Sequence[str]) -> bool:
        """Read what is shared, once per run; False when it cannot be read (then every
        certificate takes the full path and reports the problem itself)."""

    def differs(self, name: str, record: CertRecord | None) -> bool:
        """Is the shared version of ``name`` another one than ``record`` (in service here)?"""

    def adopt(self, cert: CertificateConfig, *, fresh: bool = False) -> Outcome | None:
        """Put the shared version into service here when it is newer; its outcome."""

    def claim(self, cert: CertificateConfig) -> contextlib.AbstractContextManager[Claim]:
        """The right to renew ``cert`` (or who holds it), with this host's lock on it."""

    def solver(self, local: Solver) -> Solver:
        """The solver for one issuance, given this host's own."""


class _LocalClaim:
    holder: Holder | None = None
    adopted: Outcome | None = None

    def publish(self, key_pem: bytes, chain: keys.IssuedChain, ca: str = "") -> None:
        return None


class LocalBackend:
    """One host: the store is the only copy; ``flock`` on ``locks/<name>.lock``."""

    cluster: RedisCluster | None = None

    def __init__(self, store: Store) -> None:
        self.store = store

    def prepare(self, names: Sequence[str]) -> bool:
        return True

    def differs(self, name: str, record: CertRecord | None) -> bool:
        return False

    def adopt(self, cert: CertificateConfig, *, fresh: bool = False) -> Outcome | None:
        return None

    @contextlib.contextmanager
    def claim(self, cert: CertificateConfig) -> Iterator[Claim]:
        with self.store.lock(cert.name):
            yield _LocalClaim()

    def solver(self, local: Solver) -> Solver:
        return local


def open_backend(config: Config, store: Store) -> CertBackend:
    """The fleet's backend when ``[cluster]`` is set, else this host's store."""
    if config.cluster is None:
        return LocalBackend(store)
    from ..fleet.backend import FleetBackend
    from ..fleet.cluster import RedisCluster

    ttl = max(ca.issuance_timeout for ca in config.cas.values())  # tokens outlive any order
    return FleetBackend(store, RedisCluster(config.cluster), ttl)

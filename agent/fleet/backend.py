"""Fleet mode (``[cluster]``) behind the renewer's backend seam (:mod:`agent.engine.backend`):
take what another host published, and renew under the cluster's lease so that the whole
fleet places one order per renewal.

1. A newer version in Redis than the one in service here is installed locally (then the
   usual deployment runs: files, test, reload, verify).
2. If the certificate is due, the host that gets the lease orders it; the others report
   "waiting" and pick the result up when it is published (pub/sub, or the next check).
3. The new version goes to Redis first (refused if the lease was lost), then into service.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from .. import keys
from ..config.types import CertificateConfig
from ..errors import AgentError
from ..model import CertRecord, Holder, Outcome, Solver, Status
from ..store.certs import Store
from ..store.prune import prune_archive
from .cluster import ClusterError, Lease, RedisCluster
from .solver import SharedSolver

log = logging.getLogger(__name__)


class FleetClaim:
    """The lease on one certificate (or who holds it); :meth:`publish` writes under it."""

    def __init__(self, cluster: RedisCluster, name: str, lease: Lease | Holder) -> None:
        self.cluster = cluster
        self.name = name
        self.lease = lease if isinstance(lease, Lease) else None
        self.holder = lease if isinstance(lease, Holder) else None
        self.adopted: Outcome | None = None
        self.unshared: ClusterError | None = None

    def publish(self, key_pem: bytes, chain: keys.IssuedChain, ca: str = "") -> None:
        assert self.lease is not None
        try:
            self.cluster.put_cert(self.lease, self.name, key_pem, chain.fullchain_pem,
                                  f"{chain.cert.serial_number:x}",
                                  chain.cert.not_valid_after_utc, ca)  # fmt: skip
        except ClusterError as err:  # Redis went away, or the lease was lost (another host
            self.unshared = err  # renews too): the certificate the CA issued is kept here


class FleetBackend:
    def __init__(
        self,
        store: Store,
        cluster: RedisCluster,
        token_ttl: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.clock = clock
        self.cluster = cluster  # never None here (the protocol's attribute allows None)
        self.token_ttl = token_ttl
        # The serial Redis holds for each certificate, read once per run.
        self.shared_serials: dict[str, str | None] = {}

    def prepare(self, names: Sequence[str]) -> bool:
        try:  # one round trip; Redis down: every certificate reports it on its own
            self.shared_serials = self.cluster.serials(list(names))
        except AgentError:
            self.shared_serials = {}
        return bool(self.shared_serials)

    def differs(self, name: str, record: CertRecord | None) -> bool:
        return self.shared_serials.get(name) != (record.serial if record else None)

    @contextlib.contextmanager
    def claim(self, cert: CertificateConfig) -> Iterator[FleetClaim]:
        claim = FleetClaim(self.cluster, cert.name, self.cluster.acquire(cert.name))
        if claim.lease is None:
            yield claim
            return
        try:
            # Another host may have finished between our first look and the lease: take
            # its version now, before this host's lock (adopt takes that lock itself).
            claim.adopted = self.adopt(cert, fresh=True)
            with self.store.lock(cert.name):
                yield claim
        finally:
            claim.lease.release()
        if claim.unshared is not None:
            log.error(
                "%s: installed on this host but not shared with the cluster: %s; the other "
                "hosts keep theirs until the next renewal", cert.name, claim.unshared,
                extra={"cert": cert.name, "error_type": "cluster"},
            )  # fmt: skip

    def adopt(self, cert: CertificateConfig, *, fresh: bool = False) -> Outcome | None:
        """Install the version in Redis when it is newer than ours; its outcome, or None.
        ``fresh``: ask Redis now, not the serials read at the start of the run."""
        store = self.store
        local = store.record(cert.name)
        if not fresh:
            known = self.shared_serials.get(cert.name, "?")
            if known is None or (local is not None and known == local.serial):
                return None  # nothing in Redis yet, or the same version as here
        shared = self.cluster.load_cert(cert.name)
        if shared is None or not _newer(local, shared.serial, shared.not_after):
            return None
        where = f"{cert.name} (from Redis, obtained by {shared.node})"
        key_pem = self.cluster.open_key(shared)
        chain = keys.split_chain(shared.fullchain, where)
        try:  # as one from the CA: our key, our names, its issuer's signature, valid now
            keys.check_issued(chain, keys.load_key_pem(key_pem), cert.domains, where)
            keys.check_chain(chain, where, self.clock())
        except AgentError as err:  # e.g. the domains were just changed here: renew instead
            log.warning("%s", err)
            return None
        with store.lock(cert.name):
            if not _newer(store.record(cert.name), shared.serial, shared.not_after):
                return None  # installed meanwhile by another process of this host
            store.install(cert.name, key_pem, chain, ca=shared.ca)
            prune_archive(store, cert.name, cert.keep_versions)
        detail = f"serial {shared.serial} from the cluster, obtained by {shared.node}"
        log.info("%s: installed %s", cert.name, detail, extra={"cert": cert.name})
        live = store.live_dir(cert.name)
        return Outcome(cert.name, Status.DEPLOYED, detail, live, shared.not_after, ca=shared.ca)

    def solver(self, local: Solver) -> Solver:
        return SharedSolver(local, self.cluster, self.token_ttl)


def _newer(local: CertRecord | None, serial: str, not_after: datetime) -> bool:
    """Is the version in Redis (``serial``, ``not_after``) the one to have here?"""
    if local is None:
        return True
    # Not older than ours (two issuances in one second share not_after): Redis wins ties,
    # so that every host converges on the version the cluster holds.
    return local.serial != serial and not_after.astimezone(UTC) >= local.not_after

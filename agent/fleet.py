"""One certificate in fleet mode (``[cluster]``): take what another host published, and
renew under the cluster's lease so that the whole fleet places one order per renewal.

1. A newer version in Redis than the one in service here is installed locally (then the
   usual deployment runs: files, test, reload, verify).
2. If the certificate is due, the host that gets the lease orders it; the others report
   "waiting" and pick the result up when it is published (pub/sub, or the next check).
3. The new version goes to Redis first (refused if the lease was lost), then into service.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import keys
from .challenge import Challenge
from .cluster import ClusterError, Holder, LeaseLost, RedisCluster
from .config import CertificateConfig
from .errors import AgentError

if TYPE_CHECKING:
    from .http01 import Solver
    from .renewer import Outcome, Renewer, _Run
    from .store import CertRecord

log = logging.getLogger(__name__)


def process(renewer: Renewer, cert: CertificateConfig, run: _Run, force: bool) -> Outcome:
    from .renewer import Outcome

    cluster = renewer.cluster
    assert cluster is not None
    adopted = adopt(renewer, cert, cluster)
    if not force:
        unchanged = renewer.unchanged_now(cert, renewer.store.record(cert.name))
        if unchanged is not None:
            return adopted or unchanged
    lease = cluster.acquire(cert.name)
    if isinstance(lease, Holder):
        wait = lease.seconds_left + 1
        detail = (
            f"{lease.node} is renewing it (its lease runs {lease.seconds_left:.0f} s more); "
            "the new certificate arrives through the cluster"
        )
        log.info("%s: %s", cert.name, detail, extra={"cert": cert.name})
        return Outcome(cert.name, "waiting", detail, retry_after=wait)
    try:
        # Another host may have finished between our check and the lease.
        adopted = adopt(renewer, cert, cluster, fresh=True) or adopted
        with renewer.store.lock(cert.name):

            def publish(key_pem: bytes, chain: keys.IssuedChain) -> None:
                try:
                    cluster.put_cert(lease, cert.name, key_pem, chain.fullchain_pem,
                                     f"{chain.cert.serial_number:x}",
                                     chain.cert.not_valid_after_utc)  # fmt: skip
                except LeaseLost:
                    raise  # another host owns this renewal now: ours is not used
                except ClusterError as err:  # Redis went away: keep it here all the same
                    unshared.append(err)

            unshared: list[ClusterError] = []
            outcome = renewer._process_locked(cert, run, force and adopted is None, publish)
    finally:
        lease.release()
    if unshared:
        log.error("%s: installed on this host but not shared with the cluster: %s; the other "
                  "hosts keep theirs until the next renewal", cert.name, unshared[0],
                  extra={"cert": cert.name, "error_type": "cluster"})  # fmt: skip
    if outcome.status == "unchanged" and adopted is not None:
        return adopted
    return outcome


def adopt(
    renewer: Renewer, cert: CertificateConfig, cluster: RedisCluster, *, fresh: bool = False
) -> Outcome | None:
    """Install the version in Redis when it is newer than ours; its outcome, or None.
    ``fresh``: ask Redis now, not the serials read at the start of the run."""
    from .renewer import Outcome

    store = renewer.store
    local = store.record(cert.name)
    if not fresh:
        known = renewer.shared_serials.get(cert.name, "?")
        if known is None or (local is not None and known == local.serial):
            return None  # nothing in Redis yet, or the same version as here
    shared = cluster.load_cert(cert.name)
    if shared is None or not _newer(local, shared.serial, shared.not_after):
        return None
    where = f"{cert.name} (from Redis, obtained by {shared.node})"
    key_pem = cluster.open_key(shared)
    chain = keys.split_chain(shared.fullchain, where)
    try:
        keys.check_issued(chain, keys.load_key_pem(key_pem), cert.domains, where)
    except AgentError as err:  # e.g. the domains were just changed here: renew instead
        log.warning("%s", err)
        return None
    with store.lock(cert.name):
        if not _newer(store.record(cert.name), shared.serial, shared.not_after):
            return None  # installed meanwhile by another process of this host
        store.install(cert.name, key_pem, chain)
    detail = f"serial {shared.serial} from the cluster, obtained by {shared.node}"
    log.info("%s: installed %s", cert.name, detail, extra={"cert": cert.name})
    return Outcome(cert.name, "deployed", detail, store.live_dir(cert.name), shared.not_after)


def _newer(local: CertRecord | None, serial: str, not_after: datetime) -> bool:
    """Is the version in Redis (``serial``, ``not_after``) the one to have here?"""
    if local is None:
        return True
    # Not older than ours (two issuances in one second share not_after): Redis wins ties,
    # so that every host converges on the version the cluster holds.
    return local.serial != serial and not_after.astimezone(UTC) >= local.not_after


class SharedSolver:
    """Presents tokens here (``inner``) and in Redis, for every other host's responder."""

    def __init__(self, inner: Solver, cluster: RedisCluster, ttl: float) -> None:
        self.inner = inner
        self.cluster = cluster
        self.ttl = ttl
        self._published: list[Challenge] = []

    def present(self, challenges: Sequence[Challenge]) -> None:
        self.inner.present(challenges)
        self.cluster.publish_tokens(challenges, self.ttl)
        self._published += challenges

    def cleanup(self) -> None:
        self.inner.cleanup()
        try:
            self.cluster.remove_tokens(self._published)
        except AgentError as err:  # they expire on their own
            log.warning("HTTP-01 tokens not removed from Redis: %s", err)
        self._published.clear()

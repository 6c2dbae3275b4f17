"""The HTTP-01 solver for each issuance, from ``[http01]``: a new solver per issuance; in
standalone mode they share one responder (or hand their tokens to the running daemon's).
The backend wraps it (in a fleet, tokens also go to Redis for the other hosts)."""

from __future__ import annotations

from collections.abc import Callable

from ..config.types import Config
from ..http01.solvers import NoSolver, StandaloneSession, StandaloneSolver, WebrootSolver
from ..model import Solver
from ..store.certs import Store
from .backend import CertBackend


def solver_factory_for(config: Config, backend: CertBackend) -> Callable[[], Solver]:
    local = _local_solver_factory(config, backend)
    return lambda: backend.solver(local())


def _local_solver_factory(config: Config, backend: CertBackend) -> Callable[[], Solver]:
    http01 = config.http01
    if http01.mode == "webroot":
        assert http01.webroot is not None
        webroot = http01.webroot
        return lambda: WebrootSolver(webroot)
    if http01.mode == "none":
        return NoSolver
    tokens_dir = config.state_dir / "http01"
    cluster = backend.cluster
    store = Store(config.state_dir)
    fallback = cluster.answerer_for(config.cas, store) if cluster is not None else None
    session = StandaloneSession(http01.listen_host, http01.listen_port, tokens_dir, fallback)
    return lambda: StandaloneSolver(session)

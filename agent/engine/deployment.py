"""Which certificates need deploying, and deploying them under their locks."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

from ..config.types import CertificateConfig
from ..model import Outcome, Status
from ..store.certs import Store


def pending_deployments(
    store: Store, certs: Sequence[CertificateConfig], outcomes: dict[str, Outcome]
) -> list[CertificateConfig]:
    """Certificates with a deploy table whose live version is not the deployed one."""
    pending = []
    for cert in certs:
        if cert.deploy is None or outcomes[cert.name].failed:
            continue
        folder = store.live_folder(cert.name)
        if folder is not None and store.deployed_version(cert.name) != folder.name:
            pending.append(cert)
    return pending


def deploy_pending(
    store: Store, certs: list[CertificateConfig], outcomes: dict[str, Outcome]
) -> dict[str, Outcome]:
    from ..deploy.deployer import Deployer, DeployItem  # cryptography: only when deploying

    with contextlib.ExitStack() as stack:
        for cert in sorted(certs, key=lambda c: c.name):  # one order: no deadlock
            stack.enter_context(store.lock(cert.name))
        items = []
        for cert in certs:
            folder, current = store.live_folder(cert.name), store.record(cert.name)
            if folder is not None and current is not None:
                deployed = store.deployed_version(cert.name)
                previous = store.archive_dir(cert.name) / deployed if deployed else None
                serial, live = int(current.serial, 16), store.live_dir(cert.name)
                items.append(DeployItem(cert, folder, serial, previous, live))
        result = Deployer().deploy(items)
        updated = {}
        for item in items:
            name, before = item.cert.name, outcomes[item.cert.name]
            if name in result.errors:
                detail = f"issued, not deployed: {result.errors[name]}"
                updated[name] = replace(
                    before, status=Status.FAILED, detail=detail, error_type="deploy"
                )
                continue
            store.mark_deployed(name, item.folder.name)
            status = Status.ISSUED if before.status == Status.ISSUED else Status.DEPLOYED
            kept = status == Status.ISSUED or (before.status == Status.DEPLOYED and before.detail)
            detail = before.detail if kept else "pending deployment completed"
            if name in result.hook_errors:
                status, detail = Status.FAILED, f"deployed, but {result.hook_errors[name]}"
            kind = "hook" if status == Status.FAILED else ""
            updated[name] = replace(before, status=status, detail=detail, error_type=kind)
    return updated

"""Run the certbot of the test virtualenv against a local CA (for import-certbot tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def certbot_certonly(
    workdir: Path, directory_url: str, ca_bundle: Path, http_port: int, eab: tuple[str, str],
    name: str, *domains: str, email: str | None = None, extra: Sequence[str] = (),
) -> Path:  # fmt: skip
    """A certbot lineage ``name`` for ``domains`` (standalone HTTP-01 on ``http_port``),
    registering with EAB; returns certbot's config dir (what import-certbot reads).
    ``extra``: more certbot arguments (``--deploy-hook CMD``, ``--pre-hook CMD``,
    ``--post-hook CMD``, ``--reuse-key``, ``--preferred-chain CN``, ``--required-profile P``,
    ``--key-type rsa``...). A second call with the same ``workdir`` reuses certbot's
    account for the same server (certbot then ignores the EAB arguments)."""
    letsencrypt = workdir / "letsencrypt"
    argv = [
        str(Path(sys.executable).parent / "certbot"), "--config-dir", str(letsencrypt),
        "--work-dir", str(workdir / "cb-work"), "--logs-dir", str(workdir / "cb-logs"),
        "--server", directory_url, "--non-interactive", "certonly", "--standalone",
        "--http-01-port", str(http_port), "--http-01-address", "127.0.0.1",
        "--cert-name", name, "--agree-tos", "--eab-kid", eab[0], "--eab-hmac-key", eab[1],
        *(["-m", email] if email else ["--register-unsafely-without-email"]),
        *[arg for domain in domains for arg in ("-d", domain)], *extra,
    ]  # fmt: skip
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca_bundle)}
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=120)
    return letsencrypt

"""``acme-agent demo``: the whole job against a local pebble CA on loopback.

Starts pebble (EAB required) and its DNS on 127.0.0.1, writes a configuration for it,
registers with EAB, obtains a certificate, writes the PEM files and shows them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509

from ..config import load
from ..engine.renewer import Renewer
from ..errors import EXIT_FAILED, EXIT_OK
from ..localca import LocalCA

log = logging.getLogger(__name__)

DEMO_DOMAINS = ("demo.acme-agent.test", "www.demo.acme-agent.test")


def write_config(ca: LocalCA, workdir: Path, domains: tuple[str, ...] = DEMO_DOMAINS) -> Path:
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    eab_file = workdir / "eab-hmac.key"
    eab_file.write_text(ca.eab_hmac_key + "\n")
    eab_file.chmod(0o600)
    config = workdir / "agent.toml"
    names = ", ".join(f'"{d}"' for d in domains)
    config.write_text(
        f"""# Written by 'acme-agent demo' for a local pebble CA on loopback.
state_dir = "{workdir / "state"}"

[acme]
directory = "{ca.directory_url}"
eab_kid = "{ca.eab_kid}"
eab_hmac_key_file = "{eab_file}"
ca_bundle = "{ca.ca_bundle}"

[http01]
mode = "standalone"
listen = "127.0.0.1:{ca.http_port}"

[[certificate]]
name = "demo"
domains = [{names}]
"""
    )
    config.chmod(0o600)
    return config


def run_demo(directory: str) -> int:
    workdir = Path(directory).resolve()
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    print(f"starting a local pebble ACME CA on 127.0.0.1 (EAB required) in {workdir}")
    with LocalCA(workdir / "pebble") as ca:
        config = load(write_config(ca, workdir))
        print(f"configuration: {config.path}")
        outcome = Renewer(config).run(list(config.certificates))[0]
        if outcome.failed:
            print(f"FAILED: {outcome.detail}")
            return EXIT_FAILED
        assert outcome.live_dir is not None
        cert = x509.load_pem_x509_certificate((outcome.live_dir / "cert.pem").read_bytes())
        account = Renewer(config).store.load_account(config.acme.directory)
        print(f"account:  {account.uri if account else '?'}")
        print(f"subject:  {cert.subject.rfc4514_string()}")
        print(f"names:    {', '.join(config.certificates[0].domains)}")
        print(f"issuer:   {cert.issuer.rfc4514_string()}")
        print(f"expires:  {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
        print(f"PEM files in {outcome.live_dir}/:")
        for name in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
            path = outcome.live_dir / name
            print(f"  {name:<14} {path.stat().st_mode & 0o777:04o}  {path.stat().st_size} bytes")
        again = Renewer(config).run(list(config.certificates))[0]
        print(f"second run: {again.status} ({again.detail}); no new account, no new order")
    print("pebble stopped. Run it again with: acme-agent demo --dir", directory)
    return EXIT_OK

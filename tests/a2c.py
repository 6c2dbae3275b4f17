"""acme2certifier (PyPI) on loopback: a second, independent ACME server that offers ARI
(renewalInfo) and profiles, with EAB. For tests of what pebble 2.4 lacks.

It validates HTTP-01 on port 80 of the address its DNS gives (127.0.0.1, from
pebble-challtestsrv on 127.0.0.1:53), so these tests need root and free ports 80 and 53
on 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from agent.localca import (
    LOOPBACK,
    _write_tls_material,
    free_port,
    self_signed_root,
    stop_processes,
)

SERVER = """
import os, sys
from werkzeug.serving import run_simple
from acme2certifier.share.acme2certifier_wsgi import application
run_simple("127.0.0.1", int(sys.argv[1]), application, ssl_context=(sys.argv[2], sys.argv[3]),
           threaded=True)
"""


def _issuing_ca(folder: Path) -> tuple[Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    key, cert = self_signed_root("acme2certifier test CA", days=3650)
    name = cert.subject
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = folder / "ca-cert.pem", folder / "ca-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class A2C:
    workdir: Path
    renewal: dict[str, str] = field(default_factory=dict)  # [Renewalinfo] options
    eab_kid: str = "a2c-kid"
    eab_hmac_key: str = ""
    directory_url: str = ""
    ca_bundle: Path = Path()
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> A2C:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)
        self.eab_hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        (self.workdir / "eab.json").write_text(json.dumps({self.eab_kid: self.eab_hmac_key}))
        self.ca_bundle, tls_cert, tls_key = _write_tls_material(self.workdir)
        ca_cert, ca_key = _issuing_ca(self.workdir)
        config = self.workdir / "acme_srv.cfg"
        config.write_text(self._config(ca_cert, ca_key))
        port = free_port()
        self.directory_url = f"https://{LOOPBACK}:{port}/directory"
        self._spawn(
            ["pebble-challtestsrv", "-defaultIPv4", LOOPBACK, "-defaultIPv6", "",
             "-dns01", f"{LOOPBACK}:53", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"{LOOPBACK}:{free_port()}"],
            "dns.log", {},
        )  # fmt: skip
        env = {"ACME_SRV_CONFIGFILE": str(config), "ACME2CERTIFIER_BASE_DIR": str(self.workdir)}
        self._spawn(
            [sys.executable, "-c", SERVER, str(port), str(tls_cert), str(tls_key)], "a2c.log", env
        )
        self._wait()
        return self

    def _config(self, ca_cert: Path, ca_key: Path) -> str:
        d = self.workdir
        handler = (
            "handler_module: acme2certifier.cahandlers.openssl_ca_handler\n"
            f"issuing_ca_key: {ca_key}\nissuing_ca_cert: {ca_cert}\n"
            f"cert_save_path: {d}/certs\nissuing_ca_crl: {d}/ca.crl\n"
            f'ca_cert_chain_list: ["{ca_cert}"]\n'
        )
        renewal = "".join(f"{k}: {v}\n" for k, v in self.renewal.items())
        return f"""[DEFAULT]
debug: True
dns_server_list: ["{LOOPBACK}"]

[Nonce]
nonce_check_disable: False

[CAhandler]
multi_handler: True
default_handler: classic

[CAhandler:classic]
{handler}cert_validity_days: 90

[CAhandler:short]
{handler}cert_validity_days: 6

[DBhandler]
dbfile: {d}/a2c.db

[EABhandler]
eab_handler_module: acme2certifier.eabhandlers.json_handler
key_file: {d}/eab.json

[Order]
profiles: {{"classic": "90-day certificates", "shortlived": "6-day certificates"}}
profile_cahandler: {{"shortlived": "short", "classic": "classic"}}

[Renewalinfo]
{renewal}
"""

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str]) -> None:
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, **env}
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
        )
        self._procs.append(proc)
        log.close()

    def _wait(self) -> None:
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{proc.args[0]} exited; see {self.workdir}")
            try:
                with urllib.request.urlopen(self.directory_url, context=context, timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"acme2certifier did not start; see {self.workdir}/a2c.log")

    def log_text(self) -> str:
        return (self.workdir / "a2c.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_processes(self._procs)

"""A local pebble ACME CA on loopback, for the demo, the tests and the benchmarks.

Everything listens on 127.0.0.1 only and names resolve to 127.0.0.1 through
pebble-challtestsrv, so nothing here ever talks to another address.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
# How long pebble may take to answer its directory after start (it is ready in ~0.1 s).
START_TIMEOUT = 20.0
START_ATTEMPTS = 3


class LocalCAError(RuntimeError):
    """pebble could not be started; the message says what to install or check."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate, give each 5 s, kill the rest; empties ``procs``."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


def self_signed_root(
    common_name: str,
    days: int = 30,
    not_before: datetime.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A throwaway EC P-256 root (for the local CA's TLS, and tests' own CAs)."""
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway root and a server certificate for pebble's own HTTPS listener."""
    now = datetime.datetime.now(datetime.UTC)
    root_key, root = self_signed_root("acme-agent local CA TLS root", days=3650)
    root_name = root.subject
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))  # tests step clocks ahead
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    ca_path = directory / "tls-ca.pem"
    cert_path = directory / "tls-cert.pem"
    key_path = directory / "tls-key.pem"
    ca_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@dataclass
class LocalCA:
    """One pebble (plus pebble-challtestsrv as its DNS) in ``workdir``.

    ``http_port`` is where pebble sends HTTP-01 validation requests; point the agent's
    standalone responder (or nginx) at it.
    """

    workdir: Path
    eab_required: bool = True
    validity_seconds: int = 90 * 24 * 3600
    blocklist: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Roots besides the default one; each signs an alternate chain of every certificate
    # (RFC 8555 Link: rel="alternate"). Their names are random: see root_pem(index).
    alternate_roots: int = 0
    http_port: int = 0
    eab_kid: str = "kid-1"
    eab_hmac_key: str = ""
    ca_bundle: Path = Path()
    directory_url: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _management_url: str = ""

    def start(self) -> LocalCA:
        for binary in ("pebble", "pebble-challtestsrv"):
            if shutil.which(binary) is None:
                raise LocalCAError(
                    f"{binary} is not installed: run 'apt-get install pebble' "
                    "(or the README's set-up command)"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        if not self.eab_hmac_key:
            raw = secrets.token_bytes(32)
            self.eab_hmac_key = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        self.ca_bundle, cert, key = _write_tls_material(self.workdir)
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once(cert, key)
                return self
            except LocalCAError:
                # A port chosen as free may have been taken meanwhile: try new ones.
                if attempt == START_ATTEMPTS - 1:
                    raise
        return self

    def _start_once(self, cert: Path, key: Path) -> None:
        ports = [p for p in free_ports(6) if p != self.http_port][:5]
        dns_port, listen_port, mgmt_port, dns_mgmt_port, tls_port = ports
        self._start_dns(dns_port, dns_mgmt_port)
        self._write_config(cert, key, listen_port, mgmt_port, tls_port)
        self._start_pebble(dns_port)
        self.directory_url = f"https://{LOOPBACK}:{listen_port}/dir"
        self._management_url = f"https://{LOOPBACK}:{mgmt_port}"
        self._wait_ready()

    def _start_dns(self, dns_port: int, management_port: int) -> None:
        argv = [
            "pebble-challtestsrv",
            "-defaultIPv4",
            LOOPBACK,
            "-defaultIPv6",
            "",
            "-dns01",
            f"{LOOPBACK}:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"{LOOPBACK}:{management_port}",
        ]
        self._spawn(argv, "challtestsrv.log", {})

    def _write_config(
        self, cert: Path, key: Path, listen_port: int, mgmt_port: int, tls_port: int
    ) -> None:
        config = {
            "pebble": {
                "listenAddress": f"{LOOPBACK}:{listen_port}",
                "managementListenAddress": f"{LOOPBACK}:{mgmt_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": self.eab_required,
                "externalAccountMACKeys": {self.eab_kid: self.eab_hmac_key},
                "domainBlocklist": self.blocklist,
                "certificateValidityPeriod": self.validity_seconds,
            }
        }
        path = self.workdir / "pebble-config.json"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _start_pebble(self, dns_port: int) -> None:
        # Defaults: validate at once, accept every nonce, never reuse authorizations (so a
        # challenge is always asked for unless a test says otherwise).
        env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
            **(
                {"PEBBLE_ALTERNATE_ROOTS": str(self.alternate_roots)}
                if self.alternate_roots
                else {}
            ),
            **self.env,
        }
        argv = [
            "pebble",
            "-config",
            str(self.workdir / "pebble-config.json"),
            "-dnsserver",
            f"{LOOPBACK}:{dns_port}",
        ]
        self._spawn(argv, "pebble.log", env)

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str]) -> None:
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env={**os.environ, **env},
        )
        log.close()
        self._procs.append(proc)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise LocalCAError(
                        f"{proc.args[0]} exited with {proc.returncode}; see {self.workdir}"
                    )
            try:
                with urllib.request.urlopen(
                    self.directory_url, context=self._ssl_context(), timeout=2
                ):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise LocalCAError(
                        f"pebble did not answer within {START_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.05)

    def root_pem(self, index: int = 0) -> bytes:
        """The root that signs issued certificates (new at every pebble start); ``index``
        1..alternate_roots: the root of an alternate chain."""
        return self._management(f"/roots/{index}")

    def intermediate_pem(self, index: int = 0) -> bytes:
        """The intermediate of chain ``index`` (0: the default chain)."""
        return self._management(f"/intermediates/{index}")

    def _management(self, path: str) -> bytes:
        url = f"{self._management_url}{path}"
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=5) as response:
            return bytes(response.read())

    def cert_status(self, serial: str) -> str:
        """pebble's word on a certificate it issued, by serial (hex): "Valid" or "Revoked"
        (its management API, ``/cert-status-by-serial/<serial>``)."""
        url = f"{self._management_url}/cert-status-by-serial/{serial}"
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=5) as response:
            return str(json.loads(response.read())["Status"])

    def log_text(self) -> str:
        path = self.workdir / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_processes(self._procs)

    def __enter__(self) -> LocalCA:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

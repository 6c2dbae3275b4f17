"""Private keys sealed for Redis: AES-256-GCM under a key derived from ``[cluster] key_file``.

Every host of a cluster reads the same secret from a local file, so Redis (and its dumps,
replicas and backups) only ever holds ciphertext. The associated data binds a sealed
value to its place (``cert:<name>``), so one certificate's key cannot be swapped in for
another's. Every other field of a record is authenticated with an HMAC under a second key
derived from the same secret (:class:`Authenticator`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

from ..errors import ConfigError

FORMAT = b"v1."
MIN_SECRET_BYTES = 16
_INFO = b"acme-agent cluster key v1"
_MAC_INFO = b"acme-agent cluster mac v1"
_MAC_RE = re.compile(r"\A[0-9a-f]{64}\Z")


def read_cluster_secret(path: Path) -> bytes:
    from ..config.secretfile import read_secret_file

    needed = "every host needs the same secret there (e.g. from: openssl rand -base64 32)"
    field = "[cluster] key_file"
    secret = read_secret_file(path, field, needed, private=True).encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{field}: {path} holds {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
            "(e.g. openssl rand -base64 32)"
        )
    return secret


class Authenticator:
    """HMAC-SHA256 under a key derived from the cluster secret (standard library only, so
    the daemon can check what Redis says without loading cryptography): a record in Redis
    is believed only when it carries the MAC that only holders of ``key_file`` can make."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _MAC_INFO, hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: Path) -> Authenticator:
        return cls(read_cluster_secret(path))

    def mac(self, kind: str, *fields: str) -> str:
        message = "\x1f".join((kind, *fields)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def verify(self, mac: object, kind: str, *fields: object) -> bool:
        """Only a MAC of exactly our form is compared (anything else from Redis is just
        false, never an exception)."""
        if not isinstance(mac, str) or not _MAC_RE.match(mac):
            return False
        if not all(isinstance(f, str) for f in fields):
            return False
        return hmac.compare_digest(mac, self.mac(kind, *fields))  # type: ignore[arg-type]


class SealError(Exception):
    """A sealed value that this key cannot open (another key_file, or tampering)."""


class Sealer:
    def __init__(self, secret: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(hashes.SHA256(), 32, salt=None, info=_INFO).derive(secret)
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        return cls(read_cluster_secret(path))

    def seal(self, plaintext: bytes, where: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, where.encode())
        return (FORMAT + base64.b64encode(nonce + sealed)).decode("ascii")

    def open(self, text: str, where: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        data = text.encode("ascii", "replace")
        if not data.startswith(FORMAT):
            raise SealError(f"{where}: not a sealed value")
        try:
            raw = base64.b64decode(data[len(FORMAT) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], where.encode())
        except (ValueError, InvalidTag):
            raise SealError(
                f"{where}: cannot be decrypted with this host's [cluster] key_file (the hosts' "
                "key files differ, or the value was altered)"
            ) from None

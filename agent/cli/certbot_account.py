"""certbot's ACME account for a CA acme-agent is configured for, taken over (URL and key), so
that no new registration (and no new EAB credential, single-use at some CAs) is needed.

certbot keeps it in ``accounts/<host[:port]><path>/<id>/``: ``regr.json`` ("uri"),
``private_key.json`` (a JWK; RSA by default) and ``meta.json``; a lineage's
``[renewalparams]`` ``account = <id>`` and ``server = <directory>`` say which.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from .. import keys
from ..config.trust import check_trusted
from ..config.types import Config
from ..errors import ConfigError
from ..store.certs import Store


def account_folder(certbot_dir: Path, server: str, account_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", account_id):  # certbot's ids: an MD5, in hex
        raise ConfigError(f"account {account_id!r}: not a certbot account id; not imported")
    parts = urlsplit(server)
    folder = certbot_dir / "accounts" / (parts.netloc + parts.path) / account_id
    if ".." in folder.relative_to(certbot_dir).parts:
        raise ConfigError(f"{server}: not a directory URL certbot could have used; not imported")
    return folder


def read_certbot_account(folder: Path) -> tuple[str, bytes]:
    """(account URL, account key as PEM) of a certbot account folder."""
    import josepy as jose
    from cryptography.hazmat.primitives import serialization

    try:
        regr = check_trusted(folder / "regr.json", "certbot account")
        key_file = check_trusted(folder / "private_key.json", "certbot account key")
        uri = json.loads(regr.read_text())["uri"]
        jwk = jose.JWK.json_loads(key_file.read_text())
        pem = jwk.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        keys.load_key_pem(pem)  # EC or RSA: what our client signs with
    except FileNotFoundError as err:
        raise ConfigError(f"{folder}: no certbot account there ({err.filename} missing)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, jose.Error) as err:
        # The error's type only: its text may quote the key file.
        raise ConfigError(
            f"{folder}: not a usable certbot account ({type(err).__name__}); "
            "nothing imported (the next run registers a new account)"
        ) from None
    if not isinstance(uri, str) or not uri.startswith("https://"):
        raise ConfigError(f"{folder}/regr.json: the account URL is not an https:// URL")
    return uri, pem


def import_account(certbot_dir: Path, server: str, account_id: str, config: Config) -> str:
    """Take over certbot's account for ``server``; returns one line saying what happened."""
    folder = account_folder(certbot_dir, server, account_id)
    ca = config.ca_for_directory(server)
    if ca is None:
        return f"account {folder}: not imported, {server} is no configured CA"
    if config.cluster is not None:
        return (f"account {folder}: not imported, fleet mode ([cluster]) uses the fleet's "
                f"shared account for {ca.label}")  # fmt: skip
    uri, pem = read_certbot_account(folder)
    store = Store(config.state_dir)
    stored = store.load_account(ca.directory)
    if stored is not None:
        if stored.uri == uri:
            return f"account {uri}: already imported for {ca.label}"
        return (f"account {uri}: not imported, acme-agent keeps its own account {stored.uri} "
                f"for {ca.label}")  # fmt: skip
    if store.load_account_key(ca.directory) is not None:
        return (f"account {uri}: not imported, acme-agent has an account key for {ca.label} "
                f"already ({store.account_dir(ca.directory)}), kept")  # fmt: skip
    store.save_account_key(ca.directory, pem)
    store.save_account(ca.directory, uri, keys.thumbprint(pem))
    return f"account {uri}: imported for {ca.label} (no new registration, no EAB needed)"

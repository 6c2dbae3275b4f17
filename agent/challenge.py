"""An HTTP-01 challenge as the solvers see it (no protocol imports: the daemon's
responder uses this without loading the ACME stack)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Tokens are base64url (RFC 8555 section 8.3); anything else could escape a directory.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


@dataclass(frozen=True)
class Challenge:
    """A pending HTTP-01 challenge: serve ``key_authorization`` at ``token``."""

    domain: str
    token: str
    key_authorization: str
    body: Any  # acme.messages.ChallengeBody, for answering it

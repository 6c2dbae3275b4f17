"""Reading a secret (EAB HMAC key, Redis password, cluster key) from a file: one message
naming the field and the fix for every problem, never the secret itself."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from ..errors import ConfigError
from .trust import check_trusted

log = logging.getLogger(__name__)


def read_secret_file(path: Path, field: str, needed_for: str, *, private: bool = False) -> str:
    """The stripped content of ``path``. A file any user may write is refused; with
    ``private`` any group or other permission is refused, else world-readable warns."""
    checked = check_trusted(path, field)
    try:
        info = checked.stat()
        text = checked.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not text"
        raise ConfigError(f"{field}: cannot read {path} ({reason}); {needed_for}") from None
    if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{field}: {path} is readable by others; fix with: chmod 600 {path}")
    if info.st_mode & stat.S_IROTH:
        log.warning("%s: %s is readable by every user; consider chmod 600", field, path)
    if not text:
        raise ConfigError(f"{field}: {path} is empty")
    return text

"""A TOML table under validation: typed getters whose errors say ``file: field: problem``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError


class Table:
    """A TOML table being validated: typed getters that report ``file: field``."""

    def __init__(self, data: dict[str, Any], where: str, prefix: str) -> None:
        self.data = data
        self.where = where
        self.prefix = prefix
        self.seen: set[str] = set()

    def field_name(self, key: str) -> str:
        return f"{self.prefix}{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.field_name(key)}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def require(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.get(key, kind)
        if value is None:
            raise self.error(key, "is required")
        return value

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, str, default)
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def table(self, key: str) -> Table:
        value = self.get(key, dict, {})
        return Table(value, self.where, f"{self.field_name(key)}.")

    def optional_table(self, key: str) -> Table | None:
        """The sub-table ``key``, or None when the file has none (absent means "off")."""
        if key not in self.data:
            self.seen.add(key)
            return None
        return self.table(key)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling; see agent.example.toml)")


def relative_to(value: Path, base: Path) -> Path:
    """Relative paths in the config are relative to the config file's directory."""
    return value if value.is_absolute() else (base / value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names.update({list: "a list", dict: "a table"})
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)

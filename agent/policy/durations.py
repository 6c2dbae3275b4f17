"""Durations as the configuration writes them: "10d", "12h", "30m", "45s", "1d12h"."""

from __future__ import annotations

from datetime import timedelta


def parse_duration(text: str) -> timedelta:
    """'10d', '12h', '30m', '45s' (or combined, '1d12h') -> timedelta; ValueError if not."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in text.strip():
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            raise ValueError(text)
    if number or total <= 0:
        raise ValueError(text)
    return timedelta(seconds=total)

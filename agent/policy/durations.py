"""Durations as the configuration writes them: "10d", "12h", "30m", "45s", "1d12h"."""

from __future__ import annotations

from datetime import timedelta

# No duration in the configuration is longer than this (about ten years): a bound that
# keeps every later date computation in range.
MAX_DURATION = timedelta(days=3650)


class DurationTooLong(ValueError):
    """A duration past MAX_DURATION."""


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
    if total > MAX_DURATION.total_seconds():
        raise DurationTooLong(f"{text} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=total)


def span(delta: timedelta) -> str:
    """A duration for people, at most two units: "3d4h", "2h5m", "1m2s", "-4s"."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{sign}{seconds // 60}m{seconds % 60}s"
    return f"{sign}{seconds}s"

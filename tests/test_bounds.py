"""Values from a CA or a configuration that could overflow or recurse are bounded where
they are parsed (issue 14's first items): one clear line, never a traceback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import load
from agent.errors import ConfigError
from agent.policy.durations import parse_duration
from agent.policy.retry_after import MAX_RETRY_AFTER, retry_after_problem, retry_after_seconds

HEAD = 'state_dir = "state"\n[acme]\ndirectory = "https://ca.example/dir"\n'


@pytest.mark.parametrize(
    ("value", "seconds", "problem"),
    [
        ("7", 7.0, None),
        ("0", 0.0, None),
        ("99999999999999", MAX_RETRY_AFTER, "more than a day"),
        ("9" * 400, MAX_RETRY_AFTER, "more than a day"),
        ("\u00b2", None, "neither seconds nor an HTTP-date"),  # "²".isdigit() is True
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER, "more than a day"),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, None),  # in the past: now
        ("soon", None, "neither seconds nor an HTTP-date"),
    ],
)
def test_retry_after_is_bounded(value: str, seconds: float | None, problem: str | None) -> None:
    assert retry_after_seconds(value, 1_000_000.0) == seconds
    said = retry_after_problem(value, 1_000_000.0)
    assert (said is None) == (problem is None) and (problem is None or problem in str(said))
    if seconds is not None:
        timedelta(seconds=seconds)  # never an OverflowError downstream


def test_durations_are_bounded() -> None:
    assert parse_duration("3650d") == timedelta(days=3650)
    with pytest.raises(ValueError, match="longer than 3650 days"):
        parse_duration("99999999999d")


def test_renew_before_too_long_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + '[[certificate]]\nname = "w"\ndomains = ["w.example.com"]\n'
                    'renew_before = "99999999999d"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=r"renew_before: '99999999999d' is longer than 3650"):
        load(path)


def test_toml_nested_thousands_deep_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)

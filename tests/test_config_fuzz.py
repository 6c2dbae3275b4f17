"""Property-based: any malformed configuration ends in exit 2 with a message naming the file
(and, for a bad value, the field); never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli.main import main

BASE: dict[str, Any] = {
    "state_dir": "state",
    "acme": {"directory": "https://ca.example/dir", "eab_kid": "k", "eab_hmac_key_file": "eab"},
    "http01": {"mode": "standalone", "listen": "127.0.0.1:8080"},
    "certificate": [{"name": "www", "domains": ["example.com"]}],
}

# Every (table path, key) the loader knows, to corrupt one at a time.
FIELDS = [
    ((), "state_dir"), ((), "certs_dir"),
    (("acme",), "directory"), (("acme",), "email"), (("acme",), "eab_kid"),
    (("acme",), "eab_hmac_key_file"), (("acme",), "eab_hmac_key"), (("acme",), "ca_bundle"),
    (("acme",), "issuance_timeout"), (("acme",), "request_timeout"),
    (("http01",), "mode"), (("http01",), "listen"), (("http01",), "webroot"),
    (("certificate", 0), "name"), (("certificate", 0), "domains"),
    (("certificate", 0), "key_type"), (("certificate", 0), "renew_before"),
    (("certificate", 0), "profile"), (("certificate", 0), "deploy"),
]  # fmt: skip

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def to_toml(value: Any) -> str:
    """A small TOML writer (inline values), enough for these documents."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{json.dumps(k)} = {to_toml(v)}" for k, v in value.items() if v is not None
        )
        return "{" + items + "}"
    raise TypeError(value)


def document(data: dict[str, Any]) -> str:
    lines = [f"{k} = {to_toml(v)}" for k, v in data.items() if v is not None]
    return "\n".join(lines) + "\n"


def run(text: str | bytes) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        path.chmod(0o600)
        capture = _Capture()
        with capture:
            code = main(["--config", str(path), "renew", "--cert", "nothing-matches"])
        return code, capture.text.replace(tmp, "<tmp>")


class _Capture:
    """Collect what the CLI logs to stderr, without pytest's capture fixtures (hypothesis
    runs many examples per test)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self.buffer = io.StringIO()
        self._ctx = contextlib.redirect_stderr(self.buffer)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        self.text = self.buffer.getvalue()


def corrupt(path: tuple[Any, ...], key: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    target = data
    for part in path:
        target = target[part]
    target[key] = value
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_in_any_field_is_exit_2_or_accepted(field: Any, value: Any) -> None:
    path, key = field
    text = document(corrupt(path, key, value))
    code, err = run(text)
    assert "Traceback" not in err
    # "nothing-matches" is never configured: a valid document ends in exit 2 naming it.
    assert code == 2, err
    assert "<tmp>/agent.toml" in err, err
    if "no certificate named" not in err:
        assert key in err or "TOML" in err or "UTF-8" in err, err


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_traceback(data: bytes) -> None:
    code, err = run(data)
    assert code == 2
    assert "Traceback" not in err and "<tmp>/agent.toml" in err


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_traceback(text: str) -> None:
    code, err = run(text)
    assert code == 2
    assert "Traceback" not in err and "<tmp>/agent.toml" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["renew", "--cert"],
        ["--config"],
        ["renew", "--force", "--bogus"],
        [],
        ["-q", "-v", "renew"],
    ],
)
def test_command_line_misuse_is_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2

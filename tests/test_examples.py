"""The shipped example configurations stay valid."""

from pathlib import Path

import pytest

from agent.config import load

EXAMPLES = sorted((Path(__file__).parent.parent / "config").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path: Path) -> None:
    config = load(path)
    assert config.certificates

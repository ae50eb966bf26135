"""Suite-wide fixtures. Shared fixture modules live in tests/support/."""

import pytest

pytest_plugins = ["tests.support.s3_fixtures", "tests.support.model_fixtures"]


@pytest.fixture
def verdict_home(tmp_path, monkeypatch):
    """A private data directory and filesystem store for one test."""
    home = tmp_path / "verdict-home"
    monkeypatch.setenv("VERDICT_HOME", str(home))
    monkeypatch.delenv("VERDICT_STORE", raising=False)
    return home

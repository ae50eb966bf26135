"""Suite-wide fixtures. Shared fixture modules live in tests/support/."""

import pytest

pytest_plugins = ["tests.support.s3_fixtures", "tests.support.model_fixtures", "tests.support.browser"]


@pytest.fixture
def verdict_home(tmp_path, monkeypatch):
    """A private data directory and filesystem store for one test."""
    home = tmp_path / "verdict-home"
    monkeypatch.setenv("VERDICT_HOME", str(home))
    monkeypatch.delenv("VERDICT_STORE", raising=False)
    return home


LONGEST_FIRST = (
    "tests/deploy/test_terraform.py",
    "tests/gateway/test_http_faults.py",
    "tests/replay/test_rebuild_env.py",
    "tests/gateway/test_byo_end_to_end.py",
    "tests/gateway/test_cli_models.py",
    "tests/gateway/test_packaging.py",
    "tests/gateway/test_console.py",
)
"""The files that take longest (pytest --durations, each alone: 95-100 s for the
first three, 65-80 s for the others), started first.

Why: ``make test`` hands whole files to two workers (``--dist loadfile``) in
collection order, alphabetical by default; a two-minute file collected last
ran alone at the end while the other worker idled. Only the order of files
changes: each file's own tests keep their order (some must run last).
The first two go one to each worker: terraform first because its minute of
``terraform apply`` (the provider polling, idle) is when that worker trains
its reference model."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: files keep their order


def pytest_configure(config: pytest.Config) -> None:
    """Keep that order: pytest-xdist (3.x) otherwise re-sorts ``--dist loadfile`` work by tests
    per file (``--loadscope-reorder``, on by default), which sent the one-test
    test_rebuild_env.py to the very end."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False

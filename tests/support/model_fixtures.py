"""Real reference models, trained from the real data once per test session.

A pytest plugin (tests/conftest.py) so that every test directory shares one
instance: training is the suite's most expensive set-up, and a fixture
imported into several conftest files would run once per file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

__all__ = ["TrainedModels", "trained_dirs"]


class TrainedModels(Mapping[str, Path]):
    """Model directory by data set, trained on first use (Taiwan only where its data is present)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._dirs: dict[str, Path] = {}

    def _available(self) -> list[str]:
        from verdict.gateway.datasets import DATASETS

        return [
            name
            for name in ("german-credit", "taiwan-default")
            if name == "german-credit" or DATASETS[name].path().exists()
        ]

    def __getitem__(self, name: str) -> Path:
        if name not in self._available():
            raise KeyError(name)
        if name not in self._dirs:
            from verdict.gateway.training import train

            self._dirs[name] = train(name, self._root / name / "model").directory
        return self._dirs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._available())

    def __len__(self) -> int:
        return len(self._available())


@pytest.fixture(scope="session")
def trained_dirs(tmp_path_factory) -> TrainedModels:
    return TrainedModels(tmp_path_factory.mktemp("trained"))

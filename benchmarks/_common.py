"""Shared benchmark plumbing: a reference model in a throwaway store, and
interleaved timing so the baseline and the candidate see the same machine
noise (absolute times on these machines drift; ratios measured side by side
hold)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def reference_model(name: str = "german-credit"):
    """Train (deterministically, seconds) and register a reference model; return (registry, LoadedModel)."""
    from verdict.audit.stores import FilesystemStore
    from verdict.gateway.registry import Registry
    from verdict.gateway.runtime import load_model
    from verdict.gateway.training import train

    work = Path(tempfile.mkdtemp(prefix="verdict-bench-"))
    registry = Registry(FilesystemStore(work / "store"))
    manifest, _ = registry.register(train(name, work / "model").directory)
    registry.promote(name, manifest.version, by="benchmark")
    return registry, load_model(registry, name)


def interleaved(candidates: dict[str, Callable[[], int]], rounds: int = 7) -> dict[str, float]:
    """Run each candidate once per round, alternating; return median units/s per candidate.

    Each callable does a fixed amount of work and returns how many units it did.
    """
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            units = fn()
            rates[name].append(units / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}

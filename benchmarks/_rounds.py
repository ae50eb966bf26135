"""Side-by-side load rounds: each way measured in interleaved rounds, the ratio to a baseline
taken within each round (neighbours in time), the median and range over rounds printed."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Sample", "compare", "concurrencies", "warm_up"]

Sample = tuple[float, float, float, int]
"""One measurement: (requests/s, p50 ms, p99 ms, errors)."""


def warm_up(ways: dict[str, Callable[[int, float, str], Sample]], label: Callable[[str], str]) -> None:
    """Two seconds of each way at concurrency 16, discarded (models, explainers, caches load);
    refuses to go on if a way answers errors: the benchmark would measure refusals."""
    for name, run in ways.items():
        rate, _, _, errors = run(16, 2.0, f"warm-{label(name)}")
        if errors or rate <= 0:
            raise RuntimeError(f"{name}: {errors} error(s) in the warm-up; the benchmark would measure refusals")


def concurrencies(text: str | None) -> list[int]:
    """``--concurrency 16,64`` (the default) as numbers."""
    return [int(c) for c in (text or "16,64").split(",")]


def compare(
    ways: dict[str, Callable[[int, float, str], Sample]],
    baseline: str,
    concurrencies: list[int],
    rounds: int,
    seconds: float,
    target: float,
    label: Callable[[str], str],
) -> list[str]:
    """Print one table row per way and concurrency; return a verdict per (way, concurrency)
    against ``target`` (the median ratio way/baseline must be at least that)."""
    names = list(ways)
    print(
        f"{'concurrency':>11} {'variant':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs ' + baseline:>22}"
    )
    verdicts = []
    for concurrency in concurrencies:
        samples: dict[str, list[Sample]] = {n: [] for n in names}
        for round_no in range(rounds):
            shift = round_no % len(names)  # rotate the order: no way always runs first
            for name in names[shift:] + names[:shift]:
                samples[name].append(ways[name](concurrency, seconds, f"{label(name)}-{concurrency}-{round_no}"))
        for name in names:
            runs = samples[name]
            rate, p50, p99, _ = sorted(runs)[len(runs) // 2]
            ratios = sorted(a[0] / b[0] for a, b in zip(runs, samples[baseline], strict=True) if b[0] > 0)
            shown = "" if name == baseline else f"{ratios[len(ratios) // 2]:.2f}x [{ratios[0]:.2f}..{ratios[-1]:.2f}]"
            print(
                f"{concurrency:>11} {name:>10} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f} {sum(r[3] for r in runs):>7} {shown:>22}"
            )
            if name != baseline:
                met = ratios[len(ratios) // 2] >= target
                verdicts.append(f"{name} at {concurrency}: {shown} {'met' if met else 'MISSED'}")
    return verdicts

"""Bring-your-own-model packaging and serving, measured (issue 17).

1. Wall time of ``verdict.package`` (schema inference, export, metrics, herded
   background, manifest, and the full validation: graph contract, batch
   invariance, two fresh processes, additivity, sampled vs exact) for
   * a reference-sized model: the German credit data (20 attributes, 1,000 rows),
     an encoder from ``verdict.preprocessing`` and a small MLP;
   * a 100-attribute model (80 numbers, 20 categories) trained on 100,000 rows.
   Targets on the 2-core machine: under 60 s and under 5 min.
2. Serving throughput of the 100-attribute model through a real gateway
   (``verdict serve``, scoring, explanation and audit) against the German credit
   reference model in the same process, measured in interleaved rounds so machine
   noise hits both alike; the ratio is per round, median and range.

Run: .venv/bin/python benchmarks/package.py [--rows 100000] [--seconds 3] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import verdict  # noqa: E402
from tests.support.gateway_server import GatewayServer, prepare_home  # noqa: E402
from verdict.gateway.datasets import load_dataset  # noqa: E402
from verdict.preprocessing import TabularEncoder, encode_frame, heldout_mask, infer_schema  # noqa: E402

WIDE_NUMBERS, WIDE_CATEGORIES, WIDE_LEVELS = 80, 20, 5


class Scorer(nn.Module):
    """What a team brings: preprocessing in the graph, an MLP, a sigmoid."""

    def __init__(self, specs, hidden: tuple[int, ...] = (32, 16)) -> None:
        super().__init__()
        self.encode = TabularEncoder(specs)
        layers: list[nn.Module] = []
        width = self.encode.width
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.encode(x)).squeeze(-1))


def _fit(module: Scorer, frame: pd.DataFrame, target: str, epochs: int) -> None:
    """A few epochs of Adam on the encoded rows (deterministic: seeded, one thread)."""
    torch.manual_seed(7)
    train_rows = frame[~heldout_mask(frame)]  # the packager's held-out rows stay unseen: honest metrics
    specs = infer_schema(frame, target=target)
    x = torch.from_numpy(encode_frame(train_rows, specs))
    y = torch.from_numpy(train_rows[target].to_numpy(dtype=np.float32))
    module.encode.fit_to(x)
    optimiser = torch.optim.Adam(module.parameters(), lr=2e-3)
    loss = nn.BCELoss()
    for _ in range(epochs):
        for start in range(0, len(x), 512):
            optimiser.zero_grad()
            loss(module(x[start : start + 512]), y[start : start + 512]).backward()
            optimiser.step()
    module.eval()


def german_frame() -> pd.DataFrame:
    data = load_dataset("german-credit")
    frame = pd.DataFrame(data.rows)
    frame["bad_credit"] = data.labels.astype(int)
    return frame


def wide_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(20261130)
    columns: dict[str, np.ndarray] = {}
    logit = np.zeros(rows)
    for j in range(WIDE_NUMBERS):
        values = np.round(rng.normal(0, 1, rows) * (10 ** (j % 4)), 2)
        columns[f"x{j:02d}"] = values
        logit += rng.normal(0, 0.3) * values / (10 ** (j % 4))
    for j in range(WIDE_CATEGORIES):
        codes = rng.integers(0, WIDE_LEVELS, rows)
        columns[f"c{j:02d}"] = np.array([f"level_{c}" for c in codes])
        logit += rng.normal(0, 0.3, WIDE_LEVELS)[codes]
    frame = pd.DataFrame(columns)
    frame["outcome"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def package_timed(name: str, frame: pd.DataFrame, target: str, out: Path, epochs: int) -> tuple[Path, float, float]:
    """(directory, training seconds, package+validate seconds)."""
    started = time.perf_counter()
    module = Scorer(infer_schema(frame, target=target))
    _fit(module, frame, target, epochs)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    directory = verdict.package(
        module,
        frame,
        out=out,
        name=name,
        target=target,
        decision={"threshold": 0.5, "at_or_above": "refer", "below": "approve"},
        progress=lambda msg: print(f"    {name}: {msg}", flush=True),
    )
    return directory, trained, time.perf_counter() - started


async def _drive(
    url: str, token: str, model: str, rows: list[dict], concurrency: int, seconds: float, tag: str
) -> float:
    done = 0
    stop_at = time.monotonic() + seconds
    counter = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done, counter
        while time.monotonic() < stop_at:
            counter += 1
            body = {"model": model, "request_id": f"{tag}-{counter}", "attributes": rows[counter % len(rows)]}
            response = await client.post("/v1/decisions", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{model}: {response.status_code} {response.text[:300]}")
            done += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="verdict-bench-package-"))
    print(f"packaging (wall time of verdict.package, validation included) in {work}")
    german = german_frame()
    _, german_train, german_pkg = package_timed("german-byo", german, "bad_credit", work / "german-byo", epochs=20)
    wide = wide_frame(args.rows)
    wide_dir, wide_train, wide_pkg = package_timed("wide-100", wide, "outcome", work / "wide-100", epochs=1)
    print(f"{'model':<34} {'train s':>8} {'package+validate s':>19} {'target s':>9} {'of target':>10}")
    for label, train_s, pkg_s, target in (
        (f"reference-sized (20 attr, {len(german):,} rows)", german_train, german_pkg, 60.0),
        (f"wide (100 attr, {len(wide):,} rows)", wide_train, wide_pkg, 300.0),
    ):
        print(f"{label:<34} {train_s:>8.1f} {pkg_s:>19.1f} {target:>9.0f} {pkg_s / target:>9.0%}")

    # -- serving: the 100-attribute model beside the German credit reference model ------------
    from verdict.audit.stores import open_store
    from verdict.gateway.registry import Registry
    from verdict.gateway.training import train

    home = work / "home"
    tokens = prepare_home(home, train("german-credit", work / "german-credit").directory)
    registry = Registry(open_store((home / "store").as_uri()))
    registry.register(wide_dir)
    registry.promote("wide-100", "1.0.0", by="benchmark")
    attributes = {"german-credit": load_dataset("german-credit").rows}
    attributes["wide-100"] = wide.drop(columns=["outcome"]).head(2000).to_dict("records")
    server = GatewayServer(home).start()
    try:
        for model, rows in attributes.items():  # load models, explainers and caches
            asyncio.run(_drive(server.url, tokens["client"], model, rows, 4, 2.0, f"warm-{model}"))
        rates: dict[str, list[float]] = {model: [] for model in attributes}
        for round_no in range(args.rounds):
            order = list(attributes) if round_no % 2 == 0 else list(reversed(attributes))
            for model in order:
                rate = asyncio.run(
                    _drive(
                        server.url,
                        tokens["client"],
                        model,
                        attributes[model],
                        args.concurrency,
                        args.seconds,
                        f"r{round_no}-{model}",
                    )
                )
                rates[model].append(rate)
    finally:
        server.stop()
    ratios = sorted(w / g for w, g in zip(rates["wide-100"], rates["german-credit"], strict=True))
    print(
        f"\nserving through the gateway (scored, explained, audited), concurrency {args.concurrency}, "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s"
    )
    for model, values in rates.items():
        print(f"  {model:<14} {statistics.median(values):8.1f} decisions/s  [{min(values):.1f}..{max(values):.1f}]")
    print(
        f"  wide-100 / german-credit: {ratios[len(ratios) // 2]:.2f}x [{ratios[0]:.2f}x..{ratios[-1]:.2f}x] "
        f"(explanation cost grows with attributes: 100 vs 20)"
    )


if __name__ == "__main__":
    main()

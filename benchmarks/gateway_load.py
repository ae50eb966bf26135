"""Gateway throughput and latency over loopback, against its baselines.

Four real server processes, measured side by side in one run: each is
warmed up first (discarded), then measured in short rounds interleaved so
machine noise hits all of them alike. A ratio is taken within each round
(neighbours in time) and the median over rounds is reported, with its range;
rates are the median round's.
  full      - verdict serve: micro-batched scoring, explanation, audit (the product)
  no-audit  - the same with the audit append switched off (audit cost = full vs this)
  upper     - the same with explanation and audit switched off (upper bound)
  naive     - benchmarks/naive_app.py: a fresh shap explainer and a synchronous signed
              fsynced write per request, no batching
Targets (2-core machine, German credit): full >= 5x naive; audit costs <= 15% of
throughput (full vs no-audit); p99 <= 50 ms at concurrency 16.

Load comes from wrk (``apt-get install wrk``) in its own process when it is
installed (benchmarks/wrk_driver.py says why); otherwise from an httpx client
in this process, which on 2 cores competes with the servers and understates
them (the output says which driver ran).

Run: .venv/bin/python benchmarks/gateway_load.py [--seconds 4] [--rounds 5] [--concurrency 1,16,64] [--driver wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks import wrk_driver  # noqa: E402
from gateway.datasets import load_dataset  # noqa: E402
from tests.support.gateway_server import GatewayServer, prepare_home  # noqa: E402
from tests.support.moto_server import free_port  # noqa: E402

ROWS = load_dataset("german-credit").rows


def _train(work: Path) -> Path:
    from gateway.training import train

    return train("german-credit", work / "model").directory


class NaiveServer:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VERDICT_HOME": str(home)}
        self.process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "naive_app.py"), str(self.port),
                                         str(home / "naive-records")], env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("naive server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _drive(url: str, token: str, concurrency: int, seconds: float, prefix: str) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    counter = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal counter, errors
        while time.monotonic() < stop_at:
            counter += 1
            body = {"model": "german-credit", "request_id": f"{prefix}-{counter}", "attributes": ROWS[counter % len(ROWS)]}
            started = time.perf_counter()
            response = await client.post("/v1/decisions", json=body)
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return len(latencies), latencies, errors


def _run(driver: str, url: str, token: str, concurrency: int, seconds: float, prefix: str) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, errors) of one measurement."""
    if driver == "wrk":
        result = wrk_driver.drive(url, token, ROWS, concurrency, seconds, prefix)
        return result.rate, result.p50_ms, result.p99_ms, result.errors
    n, lat, err = asyncio.run(_drive(url, token, concurrency, seconds, prefix))
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    return n / seconds, p50, p99, err


def _first_decision(url: str, token: str) -> None:
    """One request, waited for: the naive baseline's first shap call compiles for ~10 s."""
    body = {"model": "german-credit", "request_id": "warmup-first", "attributes": ROWS[0]}
    response = httpx.post(url + "/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    response.raise_for_status()


def _paired(a: list[float], b: list[float], ratio, unit: str) -> str:  # noqa: ANN001
    """Median and range of ``ratio`` over rounds, each round's pair measured back to back."""
    values = sorted(ratio(x, y) for x, y in zip(a, b) if y > 0)
    if not values:
        return "n/a"
    median = values[len(values) // 2]
    show = (lambda v: f"{v:.1%}") if unit == "%" else (lambda v: f"{v:.2f}x")
    return f"{show(median)} [{show(values[0])}..{show(values[-1])}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--driver", choices=("wrk", "httpx"), default="wrk" if wrk_driver.available() else "httpx")
    args = parser.parse_args()
    if args.driver == "wrk" and not wrk_driver.available():
        parser.error("wrk is not installed (apt-get install wrk), use --driver httpx")
    print(f"load driver: {args.driver}" + ("" if args.driver == "wrk" else " (in-process; install wrk for figures not capped by the client)"))
    work = Path(tempfile.mkdtemp(prefix="verdict-load-"))
    model_dir = _train(work)
    servers, tokens = {}, {}
    variants = {"full": {}, "no-audit": {"VERDICT_AUDIT": "false"},
                "upper": {"VERDICT_AUDIT": "false", "VERDICT_EXPLAIN": "false"}}
    try:
        for name, env in variants.items():
            home = work / name
            tokens[name] = prepare_home(home, model_dir)["client"]
            servers[name] = GatewayServer(home, env={**env, "VERDICT_UNSAFE_BENCHMARK": "1"}).start()
        naive_home = work / "naive"
        prepare_home(naive_home, model_dir)
        servers["naive"] = NaiveServer(naive_home)
        tokens["naive"] = "-"
        for name, server in servers.items():  # first requests load models, explainers and caches
            _first_decision(server.url, tokens[name])
            _run(args.driver, server.url, tokens[name], 16, 2.0, f"{name}-warmup")
        print(f"{'concurrency':>11} {'variant':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            samples: dict[str, list[tuple[float, float, float, int]]] = {v: [] for v in servers}
            for round_no in range(args.rounds):
                for name, server in servers.items():
                    seconds = args.seconds if name != "naive" else max(2.0, args.seconds / 2)
                    samples[name].append(_run(args.driver, server.url, tokens[name], concurrency, seconds,
                                              f"{name}-{concurrency}-{round_no}"))
            for name, runs in samples.items():
                # The round with the median rate, reported whole (rate and its latencies).
                rate, p50, p99, _ = sorted(runs)[len(runs) // 2]
                print(f"{concurrency:>11} {name:>9} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f} {sum(r[3] for r in runs):>7}")
            rate = {name: [run[0] for run in runs] for name, runs in samples.items()}
            print(f"{'':>11} ratios (median of {args.rounds} rounds, range): "
                  f"full/naive {_paired(rate['full'], rate['naive'], lambda f, n: f / n, 'x')} (target >= 5), "
                  f"audit cost {_paired(rate['full'], rate['no-audit'], lambda f, n: 1 - f / n, '%')} (target <= 15%), "
                  f"full/upper {_paired(rate['full'], rate['upper'], lambda f, u: f / u, 'x')}")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()

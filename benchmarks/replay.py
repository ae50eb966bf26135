"""Replay throughput against the live gateway's, measured in the same run.

1. live: a real ``verdict serve`` (micro-batched scoring, explanation, durable
   signed audit) on loopback, driven at --concurrency until --decisions
   decisions are logged -> live decisions/s (that trail is what gets replayed);
2. the server is stopped (its final signed checkpoint covers every record);
3. replay, score only: ``verdict replay --all --score-only`` in-process
   (prove every record, re-score at the recorded bucket, verdicts, signed
   report stored as evidence, one access record per decision);
4. replay, full: the same with explanations (every contribution re-computed and judged).

Replay rates are end to end (trail scan and proofs, worker start-up, model
load, report signing and the trail records all included), decisions / wall s;
one untimed replay of a single decision first warms this process's imports.
Targets on the 2-core reference machine: score-only replay >= 2x live,
full replay >= live.

Run: .venv/bin/python benchmarks/replay.py [--decisions 10000] [--concurrency 64] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.gateway_server import GatewayServer, prepare_home  # noqa: E402
from verdict.gateway.datasets import load_dataset  # noqa: E402

ROWS = load_dataset("german-credit").rows


async def _drive(url: str, token: str, total: int, concurrency: int) -> tuple[int, float]:
    issued = 0
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued, errors
        while issued < total:
            i = issued
            issued += 1
            body = {"model": "german-credit", "request_id": f"bench-{i:06d}", "attributes": ROWS[i % len(ROWS)]}
            response = await client.post("/v1/decisions", json=body)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=120
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return errors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="replay worker processes (default: automatic)")
    args = parser.parse_args()

    from verdict.gateway.training import train

    work = Path(tempfile.mkdtemp(prefix="verdict-replay-bench-"))
    home = work / "home"
    os.environ["VERDICT_HOME"] = str(home)
    os.environ.pop("VERDICT_STORE", None)
    token = prepare_home(home, train("german-credit", work / "model").directory)["client"]

    server = GatewayServer(home).start()
    try:
        asyncio.run(_drive(server.url, token, min(500, args.decisions), args.concurrency))  # warm-up, also replayed
        errors, elapsed = asyncio.run(_drive(server.url, token, args.decisions, args.concurrency))
    finally:
        server.stop()
    live = args.decisions / elapsed
    print(
        f"live gateway: {args.decisions} decisions in {elapsed:.1f} s = {live:,.0f} decisions/s "
        f"(concurrency {args.concurrency}, explanation + audit, {errors} errors)",
        flush=True,
    )

    from verdict.replay.batch import ReplayJob, run_replay
    from verdict.replay.rescore import ReplayOptions
    from verdict.replay.trail import Selection

    # Warm-up, not timed: this process's first imports (torch, matplotlib, the gateway) and the page
    # cache, so that neither measured replay pays them for the other.
    run_replay(
        ReplayJob(
            store_url=(home / "store").as_uri(),
            selection=Selection(request_ids=["bench-000000"]),
            actor="benchmark warm-up",
        )
    )
    results = {}
    for scope in ("score_only", "full"):
        job = ReplayJob(
            store_url=(home / "store").as_uri(),
            selection=Selection(all=True),
            options=ReplayOptions(scope=scope),
            workers=args.workers,
            actor="benchmark",
        )
        started = time.perf_counter()
        outcome = run_replay(job)
        wall = time.perf_counter() - started
        s = outcome.report.summary
        results[scope] = s.decisions / wall
        print(
            f"replay {scope:<10}: {s.decisions} decisions in {wall:.1f} s = {results[scope]:,.0f} decisions/s "
            f"({outcome.report.timing.workers} workers; {s.identical} identical, {s.within_tolerance} within, "
            f"{s.out_of_tolerance} out, {s.cannot_replay} cannot_replay)",
            flush=True,
        )
        if not s.passed or s.identical != s.decisions:
            print("  FAILED: every decision of the live trail must replay identical", flush=True)
            return 1

    print()
    print(f"{'':<22}{'decisions/s':>12}{'x live':>9}{'target':>9}")
    print(f"{'live gateway':<22}{live:>12,.0f}{1.0:>9.2f}{'':>9}")
    ok = True
    for scope, target in (("score_only", 2.0), ("full", 1.0)):
        ratio = results[scope] / live
        ok &= ratio >= target
        print(
            f"{'replay ' + scope:<22}{results[scope]:>12,.0f}{ratio:>9.2f}{'>= ' + str(target):>9}"
            + ("" if ratio >= target else "  MISSED")
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What operability costs: JSON logs and exported traces on, against both off.

Two real gateways, each its own data directory, measured side by side in
interleaved rounds (benchmarks/_rounds.py) with wrk on ``/v1/decisions``:
  off - access lines off (VERDICT_LOG_LEVEL=warning), no tracing
  logs - JSON logs with one access line per request, no tracing
  on  - JSON logs with one access line per request (VERDICT_LOG_FORMAT=json,
        VERDICT_LOG_LEVEL=info) and every span exported over OTLP/HTTP to a
        real receiver on loopback (tests/support/otlp_receiver.py, in this
        process: it decodes each export as a collector would)
Target: at most 3% of decisions/s (on/off >= 0.97).

Run: .venv/bin/python benchmarks/gateway_load.py --observability [--concurrency 16,64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx

from benchmarks import wrk_driver
from benchmarks._rounds import Sample, compare, concurrencies, warm_up
from benchmarks.protocol_load import model_rows
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.otlp_receiver import OtlpReceiver

__all__ = ["observability_main"]

TARGET = 0.97


def observability_main(args: argparse.Namespace, model_dir: Path, work: Path) -> None:
    receiver = OtlpReceiver()
    variants = {
        "off": {"VERDICT_LOG_LEVEL": "warning"},
        "logs": {"VERDICT_LOG_FORMAT": "json", "VERDICT_LOG_LEVEL": "info"},
        "on": {"VERDICT_LOG_FORMAT": "json", "VERDICT_LOG_LEVEL": "info", "VERDICT_OTLP_ENDPOINT": receiver.endpoint},
    }
    servers: dict[str, GatewayServer] = {}
    tokens: dict[str, str] = {}
    with receiver:
        try:
            for name, env in variants.items():
                tokens[name] = prepare_home(work / name, model_dir)["client"]
                servers[name] = GatewayServer(work / name, env=env).start()
            metadata = httpx.get(
                f"{servers['off'].url}/v2/models/german-credit",
                headers={"Authorization": f"Bearer {tokens['off']}"},
                timeout=60,
            )
            rows = model_rows(metadata.json()["inputs"])

            def way(name: str):
                def run(concurrency: int, seconds: float, prefix: str) -> Sample:
                    result = wrk_driver.drive(servers[name].url, tokens[name], rows, concurrency, seconds, prefix)
                    return result.rate, result.p50_ms, result.p99_ms, result.errors

                return run

            ways = {name: way(name) for name in variants}
            warm_up(ways, str)
            print(
                f"observability: 3 gateways (off = no access lines, no tracing; logs = JSON access lines; on = JSON access "
                f"lines and every span exported over OTLP/HTTP to a receiver on loopback, decoding in this process on the "
                f"same cores); {args.rounds} interleaved rounds of {args.seconds:g} s"
            )
            verdicts = compare(ways, "off", concurrencies(args.concurrency), args.rounds, args.seconds, TARGET, str)
            print(f"target (on >= {TARGET:.2f}x off, i.e. at most 3% of decisions/s): " + "; ".join(verdicts))
            print(f"spans received by the OTLP receiver: {len(receiver.spans):,}")
        finally:
            for server in servers.values():
                server.stop()

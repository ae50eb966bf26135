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

Witnessing (issue 15), with ``--witnesses 0,1,3``: instead of the above, one
gateway per count, each with its own data directory: 0 = witnessing off (the
trust root's own policy, no witness), n = a trust policy naming n witness
processes on loopback (each its own state directory and port; quorum n). All
checkpoint every second (VERDICT_CHECKPOINT_INTERVAL_S=1) so checkpoints are
cosigned all through the load. Measured side by side like the above, at
concurrency 16 and 64 by default; target: witnessing costs < 2% of decisions/s
(it runs in a background thread, never on a decision's path). Then how many
checkpoints each witness cosigned (the store's cosigned/ objects, verified).

Run: .venv/bin/python benchmarks/gateway_load.py [--seconds 4] [--rounds 5] [--concurrency 1,16,64] [--driver wrk|httpx]
     .venv/bin/python benchmarks/gateway_load.py --witnesses 0,1,3 [--concurrency 16,64]
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

from benchmarks import _witnesses, wrk_driver  # noqa: E402
from tests.support.gateway_server import GatewayServer, prepare_home  # noqa: E402
from tests.support.moto_server import free_port  # noqa: E402
from verdict.gateway.datasets import load_dataset  # noqa: E402

ROWS = load_dataset("german-credit").rows


def _train(work: Path) -> Path:
    from verdict.gateway.training import train

    return train("german-credit", work / "model").directory


class NaiveServer:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VERDICT_HOME": str(home)}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "naive_app.py"), str(self.port), str(home / "naive-records")],
            env=env,
            cwd=ROOT,
        )
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
            body = {
                "model": "german-credit",
                "request_id": f"{prefix}-{counter}",
                "attributes": ROWS[counter % len(ROWS)],
            }
            started = time.perf_counter()
            response = await client.post("/v1/decisions", json=body)
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return len(latencies), latencies, errors


def _run(
    driver: str, url: str, token: str, concurrency: int, seconds: float, prefix: str
) -> tuple[float, float, float, int]:
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


def _paired(a: list[float], b: list[float], ratio, unit: str) -> str:
    """Median and range of ``ratio`` over rounds, each round's pair measured back to back."""
    values = sorted(ratio(x, y) for x, y in zip(a, b, strict=True) if y > 0)
    if not values:
        return "n/a"
    median = values[len(values) // 2]
    show = (lambda v: f"{v:.1%}") if unit == "%" else (lambda v: f"{v:.2f}x")
    return f"{show(median)} [{show(values[0])}..{show(values[-1])}]"


WITNESS_CHAIN = "gateway-0"
WITNESS_ENV = {"VERDICT_CHECKPOINT_INTERVAL_S": "1", "VERDICT_CHAIN_ID": WITNESS_CHAIN}


def _witness_label(count: int) -> str:
    return "off" if count == 0 else f"{count} witness" + ("es" if count > 1 else "")


def witnessing_main(args: argparse.Namespace, counts: list[int]) -> None:
    """One gateway per witness count, interleaved rounds; decisions/s and the ratio on/off."""
    from verdict.audit import layout
    from verdict.audit.signing import FileKeyStore
    from verdict.audit.stores import open_store
    from verdict.audit.trust import RootKey

    work = Path(tempfile.mkdtemp(prefix="verdict-load-witness-"))
    model_dir = _train(work)
    servers: dict[str, GatewayServer] = {}
    tokens: dict[str, str] = {}
    homes: dict[str, Path] = {}
    witnesses: dict[str, list[_witnesses.WitnessProcess]] = {}
    try:
        for count in counts:
            name = _witness_label(count)
            home = homes[name] = work / f"witnesses-{count}"
            tokens[name] = prepare_home(home, model_dir)["client"]
            env = dict(WITNESS_ENV)
            witnesses[name] = []
            if count:
                # As tests/gateway/test_http_witnessing.py: the signing key and the root exist before the
                # gateway starts, so the witnesses know the log's key and the policy names the root.
                signer, _ = FileKeyStore(home / "keys").init()
                root, _ = RootKey.load_or_create(home / "trust" / "root.pem")
                logs = {f"verdict/{WITNESS_CHAIN}": [signer.public_key_document.vkey]}
                witnesses[name] = _witnesses.start_witnesses(
                    work / f"witness-state-{count}", f"load-{count}w", count, logs
                )
                policy = root.policy().with_witnesses([w.entry() for w in witnesses[name]], count)
                (home / "policy.json").write_bytes(policy.encode())
                env["VERDICT_TRUST_POLICY"] = str(home / "policy.json")
            servers[name] = GatewayServer(home, env=env).start()
        for name, server in servers.items():  # first requests load models, explainers and caches
            _first_decision(server.url, tokens[name])
            _run(args.driver, server.url, tokens[name], 16, 2.0, f"w{name.split()[0]}-warmup")
        names = list(servers)
        print(
            f"witnessing: {len(names)} gateways ({', '.join(names)}), checkpoint every 1 s, "
            f"{args.rounds} interleaved rounds of {args.seconds:g} s"
        )
        print(f"{'concurrency':>11} {'witnessing':>12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for concurrency in [int(c) for c in (args.concurrency or "16,64").split(",")]:
            samples: dict[str, list[tuple[float, float, float, int]]] = {v: [] for v in names}
            for round_no in range(args.rounds):
                shift = round_no % len(names)  # rotate the order: no variant always runs first
                for name in names[shift:] + names[:shift]:
                    samples[name].append(
                        _run(
                            args.driver,
                            servers[name].url,
                            tokens[name],
                            concurrency,
                            args.seconds,
                            f"w{name.split()[0]}-{concurrency}-{round_no}",
                        )
                    )
            for name, runs in samples.items():
                rate, p50, p99, _ = sorted(runs)[len(runs) // 2]
                print(f"{concurrency:>11} {name:>12} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f} {sum(r[3] for r in runs):>7}")
            rate = {name: [run[0] for run in runs] for name, runs in samples.items()}
            if "off" in rate:
                ratios = [
                    f"{name} {_paired(rate[name], rate['off'], lambda w, o: w / o, 'x')}"
                    for name in names
                    if name != "off"
                ]
                print(
                    f"{'':>11} on/off (median of {args.rounds} rounds, range; target: within 2%): " + ", ".join(ratios)
                )
        for server in servers.values():  # the shutdown checkpoint is submitted too
            server.stop()
        for name in names:
            store = open_store((homes[name] / "store").as_uri())
            head = _witnesses.latest_checkpoint(store, WITNESS_CHAIN)
            checkpoints = sum(1 for _ in store.list_keys(layout.checkpoints_prefix(WITNESS_CHAIN)))
            line = f"{name}: {checkpoints} checkpoints written, latest at size {head:,}"
            if witnesses[name]:
                cosigned, largest = _witnesses.cosigned_counts(store, [WITNESS_CHAIN], witnesses[name])
                line += f"; largest cosigned size {largest:,}; cosigned per witness: " + ", ".join(
                    f"{w} {c}" for w, c in cosigned.items()
                )
            print(line)
    finally:
        for server in servers.values():
            server.stop()
        for group in witnesses.values():
            _witnesses.stop_all(group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default=None, help="default 1,16,64 (16,64 with --witnesses)")
    parser.add_argument("--driver", choices=("wrk", "httpx"), default="wrk" if wrk_driver.available() else "httpx")
    parser.add_argument(
        "--witnesses",
        default=None,
        metavar="COUNTS",
        help="e.g. 0,1,3: compare gateways with that many witness processes (0 = witnessing off) "
        "instead of the default variants",
    )
    args = parser.parse_args()
    if args.driver == "wrk" and not wrk_driver.available():
        parser.error("wrk is not installed (apt-get install wrk), use --driver httpx")
    counts: list[int] = []
    if args.witnesses is not None:
        try:
            counts = [int(c) for c in args.witnesses.split(",") if c.strip()]
        except ValueError:
            parser.error("--witnesses takes counts, e.g. 0,1,3")
        if not counts or min(counts) < 0 or len(set(counts)) != len(counts):
            parser.error("--witnesses takes distinct counts >= 0, e.g. 0,1,3")
    print(
        f"load driver: {args.driver}"
        + ("" if args.driver == "wrk" else " (in-process; install wrk for figures not capped by the client)")
    )
    if args.witnesses is not None:
        witnessing_main(args, counts)
        return
    work = Path(tempfile.mkdtemp(prefix="verdict-load-"))
    model_dir = _train(work)
    servers, tokens = {}, {}
    variants = {
        "full": {},
        "no-audit": {"VERDICT_AUDIT": "false"},
        "upper": {"VERDICT_AUDIT": "false", "VERDICT_EXPLAIN": "false"},
    }
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
        for concurrency in [int(c) for c in (args.concurrency or "1,16,64").split(",")]:
            samples: dict[str, list[tuple[float, float, float, int]]] = {v: [] for v in servers}
            for round_no in range(args.rounds):
                for name, server in servers.items():
                    seconds = args.seconds if name != "naive" else max(2.0, args.seconds / 2)
                    samples[name].append(
                        _run(
                            args.driver,
                            server.url,
                            tokens[name],
                            concurrency,
                            seconds,
                            f"{name}-{concurrency}-{round_no}",
                        )
                    )
            for name, runs in samples.items():
                # The round with the median rate, reported whole (rate and its latencies).
                rate, p50, p99, _ = sorted(runs)[len(runs) // 2]
                print(f"{concurrency:>11} {name:>9} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f} {sum(r[3] for r in runs):>7}")
            rate = {name: [run[0] for run in runs] for name, runs in samples.items()}
            print(
                f"{'':>11} ratios (median of {args.rounds} rounds, range): "
                f"full/naive {_paired(rate['full'], rate['naive'], lambda f, n: f / n, 'x')} (target >= 5), "
                f"audit cost {_paired(rate['full'], rate['no-audit'], lambda f, n: 1 - f / n, '%')} (target <= 15%), "
                f"full/upper {_paired(rate['full'], rate['upper'], lambda f, u: f / u, 'x')}"
            )
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()

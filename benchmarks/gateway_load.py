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

Sealing (spec §3a), with ``--sealing``: instead of the above, two gateways,
each with its own data directory (and so its own data keyring): ``clear``
(VERDICT_SEAL=false: v1 records with the inputs in clear) and ``sealed`` (the
default: each batch's data keys assigned in one keyring transaction, each
record's personal data sealed with AES-256-GCM). Measured side by side like
the above, at concurrency 16 and 64 by default, once per way of sending
subject ids (``--subjects``, default ``pool:10000,distinct``): ``pool:N`` =
each request's subject_id drawn at random from N subjects (a key is created
the first time a subject is seen, reused after), ``distinct`` = a new
subject_id per request (the worst case: a new data key per decision). Both
gateways get the same kind of requests. Target: sealing costs at most 5% of
decisions/s (sealed/clear >= 0.95).

Protocols (issue 19), with ``--protocols``: /v1 against the Open Inference Protocol v2 (REST
JSON, REST binary tensors, gRPC) on one gateway: benchmarks/protocol_load.py. With
``--observability``: JSON logs and OTLP tracing on against both off: benchmarks/observability_load.py.

Run: .venv/bin/python benchmarks/gateway_load.py [--seconds 4] [--rounds 5] [--concurrency 1,16,64] [--driver wrk|httpx]
     .venv/bin/python benchmarks/gateway_load.py --witnesses 0,1,3 [--concurrency 16,64]
     .venv/bin/python benchmarks/gateway_load.py --sealing [--subjects pool:10000,distinct] [--concurrency 16,64]
     .venv/bin/python benchmarks/gateway_load.py --protocols [--concurrency 16,64]
     .venv/bin/python benchmarks/gateway_load.py --observability [--concurrency 16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks import _witnesses, wrk_driver  # noqa: E402
from benchmarks.observability_load import observability_main  # noqa: E402
from benchmarks.protocol_load import protocols_main  # noqa: E402
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


async def _drive(
    url: str, token: str, concurrency: int, seconds: float, prefix: str, subject: Callable[[str], str] | None = None
) -> tuple[int, list[float], int]:
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
            if subject is not None:
                body["subject_id"] = subject(body["request_id"])
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
    driver: str, url: str, token: str, concurrency: int, seconds: float, prefix: str, subjects: str | None = None
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, errors) of one measurement. ``subjects``: None (no subject_id),
    ``pool:N`` or ``distinct`` (see the module doc)."""
    if driver == "wrk":
        if subjects is None:
            result = wrk_driver.drive(url, token, ROWS, concurrency, seconds, prefix)
        else:
            result = _wrk_with_subjects(url, token, concurrency, seconds, prefix, subjects)
        return result.rate, result.p50_ms, result.p99_ms, result.errors
    n, lat, err = asyncio.run(_drive(url, token, concurrency, seconds, prefix, _subject_maker(subjects)))
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    return n / seconds, p50, p99, err


def _pool_size(subjects: str) -> int | None:
    """N of ``pool:N``; None for ``distinct``."""
    return None if subjects == "distinct" else int(subjects.removeprefix("pool:"))


def _subject_maker(subjects: str | None) -> Callable[[str], str] | None:
    """For the httpx driver: request id -> subject id."""
    if subjects is None:
        return None
    pool = _pool_size(subjects)
    if pool is None:
        return lambda request_id: f"subject-{request_id}"
    rng = random.Random(1)
    return lambda _request_id: f"subject-{rng.randrange(pool)}"


def _wrk_with_subjects(
    url: str, token: str, concurrency: int, seconds: float, prefix: str, subjects: str
) -> wrk_driver.WrkResult:
    pool = _pool_size(subjects)
    chosen = "prefix .. '-' .. thread_id .. '-' .. counter" if pool is None else f"math.random(0, {pool - 1})"
    return wrk_driver.drive(url, token, ROWS, concurrency, seconds, prefix, subject=chosen)


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


SEAL_TARGET = 0.95


def sealing_main(args: argparse.Namespace, modes: list[str]) -> None:
    """Two gateways, clear (VERDICT_SEAL=false) and sealed (the default), interleaved rounds per
    concurrency and way of sending subject ids; decisions/s and the ratio sealed/clear."""
    work = Path(tempfile.mkdtemp(prefix="verdict-load-sealing-"))
    model_dir = _train(work)
    variants = {"clear": {"VERDICT_SEAL": "false", "VERDICT_UNSAFE_BENCHMARK": "1"}, "sealed": {}}
    servers: dict[str, GatewayServer] = {}
    tokens: dict[str, str] = {}
    try:
        for name, env in variants.items():
            home = work / name  # its own store and keyring ($VERDICT_HOME/keyring)
            tokens[name] = prepare_home(home, model_dir)["client"]
            servers[name] = GatewayServer(home, env=env).start()
        for name, server in servers.items():  # first requests load models, explainers and caches
            _first_decision(server.url, tokens[name])
            _run(args.driver, server.url, tokens[name], 16, 2.0, f"s{name}-warmup", modes[0])
        names = list(servers)
        print(
            f"sealing: 2 gateways (clear = VERDICT_SEAL=false, sealed = default), each its own data directory "
            f"and keyring; {args.rounds} interleaved rounds of {args.seconds:g} s"
        )
        for mode in modes:
            pool = _pool_size(mode)
            print(
                f"  subjects {mode}: "
                + (
                    f"each request's subject_id drawn at random from {pool:,} subjects (a data key made on a "
                    f"subject's first decision, reused after)"
                    if pool is not None
                    else "a new subject_id per request (worst case: a new data key per decision)"
                )
            )
        print(
            f"{'concurrency':>11} {'subjects':>12} {'variant':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7}"
        )
        verdicts: list[str] = []
        for concurrency in [int(c) for c in (args.concurrency or "16,64").split(",")]:
            samples: dict[tuple[str, str], list[tuple[float, float, float, int]]] = {
                (m, v): [] for m in modes for v in names
            }
            for round_no in range(args.rounds):
                shift = round_no % len(names)  # rotate the order: no variant always runs first
                for mode in modes:
                    for name in names[shift:] + names[:shift]:
                        samples[(mode, name)].append(
                            _run(
                                args.driver,
                                servers[name].url,
                                tokens[name],
                                concurrency,
                                args.seconds,
                                f"s{name}-{mode.replace(':', '')}-{concurrency}-{round_no}",
                                mode,
                            )
                        )
            for mode in modes:
                for name in names:
                    runs = samples[(mode, name)]
                    rate, p50, p99, _ = sorted(runs)[len(runs) // 2]
                    print(
                        f"{concurrency:>11} {mode:>12} {name:>8} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f} "
                        f"{sum(r[3] for r in runs):>7}"
                    )
                sealed = [r[0] for r in samples[(mode, "sealed")]]
                clear = [r[0] for r in samples[(mode, "clear")]]
                paired = _paired(sealed, clear, lambda a, b: a / b, "x")
                ratios = sorted(a / b for a, b in zip(sealed, clear, strict=True) if b > 0)
                met = bool(ratios) and ratios[len(ratios) // 2] >= SEAL_TARGET
                print(
                    f"{'':>11} {mode:>12} sealed/clear (median of {args.rounds} rounds, range): {paired} "
                    f"(target >= {SEAL_TARGET:.2f}: {'met' if met else 'MISSED'})"
                )
                verdicts.append(f"concurrency {concurrency}, subjects {mode}: {paired} {'met' if met else 'MISSED'}")
        print("sealing cost target (sealed/clear >= 0.95, i.e. at most 5% of decisions/s): " + "; ".join(verdicts))
        for name, server in servers.items():
            server.stop()
            files = list((work / name / "keyring").glob("keyring.sqlite*"))  # the database and its WAL
            size = sum(f.stat().st_size for f in files) / 1e6
            print(f"{name}: keyring " + (f"{size:,.2f} MB" if files else "none (sealing off)"))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default=None, help="default 1,16,64 (16,64 with --witnesses, --sealing)")
    parser.add_argument("--driver", choices=("wrk", "httpx"), default="wrk" if wrk_driver.available() else "httpx")
    parser.add_argument(
        "--witnesses",
        default=None,
        metavar="COUNTS",
        help="e.g. 0,1,3: compare gateways with that many witness processes (0 = witnessing off) "
        "instead of the default variants",
    )
    parser.add_argument(
        "--sealing",
        action="store_true",
        help="compare a gateway with sealing off (VERDICT_SEAL=false) and one with it on, instead of the "
        "default variants",
    )
    parser.add_argument(
        "--protocols",
        action="store_true",
        help="compare /v1 with the Open Inference Protocol (REST JSON, REST binary, gRPC) on one gateway "
        "(benchmarks/protocol_load.py), instead of the default variants",
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="compare a gateway with JSON access logs and OTLP tracing on with one with both off "
        "(benchmarks/observability_load.py), instead of the default variants",
    )
    parser.add_argument(
        "--subjects",
        default="pool:10000,distinct",
        help="with --sealing: how requests name their subject, of pool:N (drawn from N subjects) and distinct "
        "(a new one per request); default pool:10000,distinct",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.subjects.split(",") if m.strip()]
    for mode in modes:
        if mode != "distinct" and not (mode.startswith("pool:") and mode[5:].isdigit() and int(mode[5:]) >= 1):
            parser.error(f"--subjects: {mode!r} is neither pool:N (N >= 1) nor distinct")
    if not modes:
        parser.error("--subjects: name at least one of pool:N, distinct")
    if args.sealing and args.witnesses is not None:
        parser.error("--sealing and --witnesses are separate comparisons: run one at a time")
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
    if args.sealing:
        sealing_main(args, modes)
        return
    if args.protocols or args.observability:
        work = Path(tempfile.mkdtemp(prefix="verdict-load-"))
        try:
            (protocols_main if args.protocols else observability_main)(args, _train(work), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
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

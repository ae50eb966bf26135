"""Audit trail throughput: durable appends with group commit vs one record at a
time, on the filesystem store and on S3 (moto server over HTTP on loopback),
side by side in one run; then the verifier over what was written.

Targets (2-core machine): >= 5,000 records/s appended to the filesystem store
with group commit (batch 64); verification >= 5,000 records/s. Group commit
is measured with one producer and with two appending at once (as the
gateway's two commit threads do).

Records are realistic decision records (~2 KB: 20 attributes, 20
contributions, 4 reasons), signed with Ed25519.

Run: .venv/bin/python benchmarks/audit_append.py [--records 6400]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit import records as rec  # noqa: E402
from audit.chain import ChainWriter  # noqa: E402
from audit.signing import Ed25519Signer  # noqa: E402
from audit.stores import FilesystemStore  # noqa: E402
from audit.verifier import verify_store  # noqa: E402

_rng = random.Random(1)


def _hex() -> str:
    return hashlib.sha256(str(_rng.random()).encode()).hexdigest()


MODEL_SHA, ENV_SHA = _hex(), _hex()


def decision(i: int, prefix: str) -> rec.DecisionBody:
    now = rec.utc_now()
    names = [f"attribute_{j:02d}" for j in range(20)]
    return rec.DecisionBody(
        request_id=f"{prefix}-{i:08d}", request_sha256=_hex(), received_at=now, decided_at=now,
        model=rec.ModelRef(name="german-credit", version="1.0.0", sha256=MODEL_SHA), environment_sha256=ENV_SHA,
        runtime=rec.Runtime(device="cpu", dtype="float32", bucket=64, threads=1),
        inputs=rec.PlainInputs(attributes={n: (_rng.randint(0, 100) if j % 3 else f"A{j}{_rng.randint(1, 5)}") for j, n in enumerate(names)}),
        score=_rng.random(), decision="approve",
        explanation=rec.Explanation(method="permutation", output_space="probability", base_value=0.3033569480570345,
                                    contributions={n: _rng.gauss(0, 0.05) for n in names}, seed=_rng.randint(0, 2**53 - 1),
                                    budget={"evaluations": 2560, "bucket": 4096}),
        reasons=[rec.Reason(attribute=n, label=f"Attribute {j}", value=f"value {j}", direction="increased_risk",
                            text=f"Attribute {j}: value {j} — increased risk") for j, n in enumerate(names[:4])],
    )


def append_rate(store, chain_id: str, n: int, batch: int, producers: int = 1) -> float:
    """Durable records/s. With several producers, batches are appended from that
    many threads at once, as the gateway's commit threads do: the writer
    overlaps one batch's index round with the next batch's segment round."""
    signer = Ed25519Signer.from_seed(bytes(32), "2026-01-01T00:00:00.000000Z")
    bodies = [decision(i, chain_id) for i in range(n)]
    writer = ChainWriter.open(store, chain_id, signer)
    batches = [bodies[i : i + batch] for i in range(0, n, batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=producers) as pool:
        for _ in pool.map(writer.append_batch, batches):
            pass
    elapsed = time.perf_counter() - started
    writer.close()
    return n / elapsed


def s3_store(workdir: Path):  # noqa: ANN201
    import boto3

    from audit.stores.s3 import S3ObjectLockStore, create_audit_bucket
    from tests.support.moto_server import MotoServer

    for var, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(var, value)
    server = MotoServer(workdir / "moto").start()
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    create_audit_bucket(client, "bench-trail", 1)
    return server, S3ObjectLockStore.from_url(f"s3://bench-trail/t?endpoint_url={server.endpoint_url}&region=us-east-1&retention_days=1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=6400)
    args = parser.parse_args()
    n = args.records
    workdir = Path(tempfile.mkdtemp(prefix="verdict-audit-bench-"))
    fs = FilesystemStore(workdir / "fs-store")
    server, s3 = s3_store(workdir)
    try:
        plans = [("filesystem", fs, 64, 1, n), ("filesystem", fs, 64, 2, n), ("filesystem", fs, 1, 1, n // 8),
                 ("s3 (moto)", s3, 64, 1, n // 4), ("s3 (moto)", s3, 64, 2, n // 4), ("s3 (moto)", s3, 1, 1, n // 32)]
        rates: dict[tuple[str, int, int], list[float]] = {}
        for round_no in range(2):  # interleaved rounds: every variant sees the same machine noise
            for name, store, batch, producers, count in plans:
                rate = append_rate(store, f"bench-{batch}-{producers}-{round_no}", count, batch, producers)
                rates.setdefault((name, batch, producers), []).append(rate)
        print(f"{'store':>12} {'batch':>6} {'producers':>10} {'records/s':>12}")
        for (name, batch, producers), values in rates.items():
            print(f"{name:>12} {batch:>6} {producers:>10} {max(values):>12,.0f}")
        for name in ("filesystem", "s3 (moto)"):
            one = max(rates[(name, 1, 1)])
            print(f"{name}: group commit (64) / one at a time = {max(rates[(name, 64, 1)]) / one:.1f}x; "
                  f"with 2 producers {max(rates[(name, 64, 2)]) / one:.1f}x")
        print(f"filesystem group commit target >= 5,000 records/s: {max(rates[('filesystem', 64, 1)]):,.0f} "
              f"(2 producers: {max(rates[('filesystem', 64, 2)]):,.0f})")
        verified: dict[int, list[float]] = {}
        for workers in (1, 2, 1, 2):  # interleaved, best of two, like the appends
            report = verify_store(fs, workers=workers)
            assert report.ok, report.first_failure
            verified.setdefault(workers, []).append(report.records_per_second)
        for workers, values in verified.items():
            print(f"verify filesystem store, {workers} worker(s): {report.records:,} records, "
                  f"{max(values):,.0f} records/s (target >= 5,000)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

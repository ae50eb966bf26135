"""Audit trail throughput: durable appends with group commit vs one record at a
time, on the filesystem store and on S3 (moto server over HTTP on loopback),
side by side in one run; then the verifier over what was written.

Targets (2-core machine): >= 5,000 records/s appended to the filesystem store
with group commit (batch 64); verification >= 5,000 records/s. Group commit
is measured with one producer and with two appending at once (as the
gateway's two commit threads do).

Records are realistic decision records (~2 KB: 20 attributes, 20
contributions, 4 reasons), signed with Ed25519.

Witnessing (issue 15): the same filesystem group commit with checkpoints every
256 records, without witnessing vs with the gateway's background submitter
(audit.witnessing.CheckpointWitnessing, held checkpoints kept as the gateway
keeps them) and 1 or 3 real witness processes on loopback, in interleaved
rounds; target: witnessing is not on the append path (< 2% difference). Then
how many checkpoints each witness cosigned (the store's cosigned/ objects,
each cosignature verified).

Verify with trust policy: the verifier over a chain certified by a trust root
(ChainWriter.open(root=...)), unanchored vs verify_store(trust=policy),
interleaved; target: anchored >= 90% of unanchored.

Sealing (spec §3a): filesystem group commit (batch 64) of the same kind of
decision bodies, each with a subject_id, clear (appended as they are, v1) vs
sealed (``PersonalData.seal_all`` on each batch before it is appended, as the
gateway does: one keyring transaction for the batch's data keys, then
AES-256-GCM per record; the keyring in the benchmark's temp dir, keys wrapped
by a local KEK file), in interleaved rounds, with one producer and with two.
Sealed twice over: subjects drawn from a pool of 10,000 (one keyring shared by
every round, so later rounds mostly reuse keys), and a new subject per record
(worst case: a new data key per record).

Run: .venv/bin/python benchmarks/audit_append.py [--records 6400] [--rounds 7] [--only appends,witnessing,trust,sealing]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _witnesses  # noqa: E402
from verdict.audit import layout  # noqa: E402
from verdict.audit import records as rec  # noqa: E402
from verdict.audit.chain import ChainWriter, default_origin  # noqa: E402
from verdict.audit.personal_data import PersonalData, configured_keyring  # noqa: E402
from verdict.audit.signing import Ed25519Signer  # noqa: E402
from verdict.audit.stores import FilesystemStore  # noqa: E402
from verdict.audit.trust import RootKey  # noqa: E402
from verdict.audit.verifier import verify_store  # noqa: E402
from verdict.audit.witnessing import CheckpointWitnessing  # noqa: E402

_rng = random.Random(1)


def _hex() -> str:
    return hashlib.sha256(str(_rng.random()).encode()).hexdigest()


MODEL_SHA, ENV_SHA = _hex(), _hex()


def decision(i: int, prefix: str, subject_id: str | None = None) -> rec.DecisionBody:
    now = rec.utc_now()
    names = [f"attribute_{j:02d}" for j in range(20)]
    return rec.DecisionBody(
        request_id=f"{prefix}-{i:08d}",
        request_sha256=_hex(),
        received_at=now,
        decided_at=now,
        model=rec.ModelRef(name="german-credit", version="1.0.0", sha256=MODEL_SHA),
        environment_sha256=ENV_SHA,
        runtime=rec.Runtime(device="cpu", dtype="float32", bucket=64, threads=1),
        inputs=rec.PlainInputs(
            attributes={
                n: (_rng.randint(0, 100) if j % 3 else f"A{j}{_rng.randint(1, 5)}") for j, n in enumerate(names)
            }
        ),
        score=_rng.random(),
        decision="approve",
        explanation=rec.Explanation(
            method="permutation",
            output_space="probability",
            base_value=0.3033569480570345,
            contributions={n: _rng.gauss(0, 0.05) for n in names},
            seed=_rng.randint(0, 2**53 - 1),
            budget={"evaluations": 2560, "bucket": 4096},
        ),
        reasons=[
            rec.Reason(
                attribute=n,
                label=f"Attribute {j}",
                value=f"value {j}",
                direction="increased_risk",
                text=f"Attribute {j}: value {j} — increased risk",
            )
            for j, n in enumerate(names[:4])
        ],
        subject_id=subject_id,
    )


def bench_signer() -> Ed25519Signer:
    return Ed25519Signer.from_seed(bytes(32), "2026-01-01T00:00:00.000000Z")


def append_rate(
    store,
    chain_id: str,
    n: int,
    batch: int,
    producers: int = 1,
    *,
    cpu: dict[str, float] | None = None,
    other_pids: Sequence[int] = (),
    subject_of: Callable[[int], str] | None = None,
    personal: PersonalData | None = None,
    **open_options,
) -> float:
    """Durable records/s. With several producers, batches are appended from that
    many threads at once, as the gateway's commit threads do: the writer
    overlaps one batch's index round with the next batch's segment round.
    ``open_options`` go to ChainWriter.open (checkpoint_every, on_checkpoint, root).
    ``cpu``, if given, gets the CPU seconds used while appending by this process
    ("self", all its threads) and by ``other_pids`` ("others").
    ``subject_of(i)``: record i's subject_id (None: no subject ids). ``personal``: each
    batch is sealed with it (``seal_all``) just before it is appended, inside the timing."""
    signer = bench_signer()
    bodies = [decision(i, chain_id, subject_of(i) if subject_of else None) for i in range(n)]
    writer = ChainWriter.open(store, chain_id, signer, **open_options)
    batches = [bodies[i : i + batch] for i in range(0, n, batch)]

    def sealed_append(bodies: list[rec.DecisionBody]) -> object:
        assert personal is not None
        return writer.append_batch(personal.seal_all(bodies, now=rec.utc_now()))

    append = writer.append_batch if personal is None else sealed_append
    cpu_self, cpu_others = time.process_time(), _witnesses.process_cpu_seconds(other_pids)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=producers) as pool:
        for _ in pool.map(append, batches):
            pass
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu["self"] = time.process_time() - cpu_self
        cpu["others"] = _witnesses.process_cpu_seconds(other_pids) - cpu_others
    writer.close()
    return n / elapsed


def s3_store(workdir: Path):
    import boto3

    from tests.support.moto_server import MotoServer
    from verdict.audit.stores.s3 import S3ObjectLockStore, create_audit_bucket

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(var, value)
    server = MotoServer(workdir / "moto").start()
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    create_audit_bucket(client, "bench-trail", 1)
    return server, S3ObjectLockStore.from_url(
        f"s3://bench-trail/t?endpoint_url={server.endpoint_url}&region=us-east-1&retention_days=1"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2]
        if len(ordered) % 2
        else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    )


def _paired(on: list[float], off: list[float]) -> str:
    """Median and range over rounds of on/off, each round's pair measured back to back."""
    ratios = sorted(a / b for a, b in zip(on, off, strict=True))
    return f"{_median(ratios):.3f} [{ratios[0]:.3f}..{ratios[-1]:.3f}]"


def appends_section(workdir: Path, n: int) -> FilesystemStore:
    fs = FilesystemStore(workdir / "fs-store")
    server, s3 = s3_store(workdir)
    try:
        plans = [
            ("filesystem", fs, 64, 1, n),
            ("filesystem", fs, 64, 2, n),
            ("filesystem", fs, 1, 1, n // 8),
            ("s3 (moto)", s3, 64, 1, n // 4),
            ("s3 (moto)", s3, 64, 2, n // 4),
            ("s3 (moto)", s3, 1, 1, n // 32),
        ]
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
            print(
                f"{name}: group commit (64) / one at a time = {max(rates[(name, 64, 1)]) / one:.1f}x; "
                f"with 2 producers {max(rates[(name, 64, 2)]) / one:.1f}x"
            )
        print(
            f"filesystem group commit target >= 5,000 records/s: {max(rates[('filesystem', 64, 1)]):,.0f} "
            f"(2 producers: {max(rates[('filesystem', 64, 2)]):,.0f})"
        )
        verified: dict[int, list[float]] = {}
        for workers in (1, 2, 1, 2):  # interleaved, best of two, like the appends
            report = verify_store(fs, workers=workers)
            assert report.ok, report.first_failure
            verified.setdefault(workers, []).append(report.records_per_second)
        for workers, values in verified.items():
            print(
                f"verify filesystem store, {workers} worker(s): {report.records:,} records, "
                f"{max(values):,.0f} records/s (target >= 5,000)"
            )
    finally:
        server.stop()
    return fs


WITNESS_CHECKPOINT_EVERY = 256
WITNESS_BATCH = 64


def witnessing_section(workdir: Path, n: int, rounds: int, producers: int) -> None:
    """Group commit without witnessing vs with the background submitter and 0, 1 or 3 witness
    processes, interleaved rounds (the order rotates each round)."""
    store = FilesystemStore(workdir / "witness-store")
    log_vkey = bench_signer().public_key_document.vkey
    # variant -> witness processes; None: no on_checkpoint hook at all (today's writer). With 0 the
    # submitter only keeps the held checkpoint (as a gateway whose policy names no witness does).
    counts: dict[str, int | None] = {"off": None, "held only": 0, "1 witness": 1, "3 witnesses": 3}
    # Every chain of every round (round 0 is the warm-up) is known up front: each witness is told its origins.
    chains = {v: [f"wit-{v.split()[0]}-{r}" for r in range(rounds + 1)] for v in counts}
    witnesses: dict[str, list[_witnesses.WitnessProcess]] = {v: [] for v in counts}
    submitters: dict[str, list[CheckpointWitnessing]] = {v: [] for v in counts}
    try:
        for variant, count in counts.items():
            if count:
                logs = {default_origin(c): [log_vkey] for c in chains[variant]}
                witnesses[variant] = _witnesses.start_witnesses(workdir / "witnesses", f"bench-{count}w", count, logs)

        def run(variant: str, round_no: int, cpu: dict[str, float]) -> float:
            chain_id = chains[variant][round_no]
            group = witnesses[variant]
            options = {"checkpoint_every": WITNESS_CHECKPOINT_EVERY, "cpu": cpu, "other_pids": _witnesses.pids(group)}
            if counts[variant] is None:
                return append_rate(store, chain_id, n, WITNESS_BATCH, producers, **options)
            # As gateway/service.py builds it: the policy's witnesses and quorum, held checkpoints in a data dir.
            submitter = CheckpointWitnessing(
                store,
                chain_id,
                [w.entry() for w in group],
                quorum=len(group),
                held_dir=workdir / "held" / variant.split()[0],
            )
            try:
                return append_rate(
                    store,
                    chain_id,
                    n,
                    WITNESS_BATCH,
                    producers,
                    on_checkpoint=submitter.checkpointed,
                    on_leaves=submitter.appended,
                    **options,
                )
            finally:
                submitter.close()  # after the timing: the shutdown checkpoint gets cosigned too
                submitters[variant].append(submitter)

        names = list(counts)
        for variant in names:
            run(variant, 0, {})  # warm-up, discarded
        rates: dict[str, list[float]] = {v: [] for v in names}
        cpu: dict[str, list[dict[str, float]]] = {v: [] for v in names}
        for round_no in range(1, rounds + 1):
            shift = (round_no - 1) % len(names)  # rotate the order: no variant always runs first
            for variant in names[shift:] + names[:shift]:
                cpu[variant].append({})
                rates[variant].append(run(variant, round_no, cpu[variant][-1]))

        def cpu_ms(variant: str, what: str) -> float:  # per 1,000 records appended, median of rounds
            return _median([c[what] * 1000 * 1000 / n for c in cpu[variant]])

        print(
            f"\nwitnessing: filesystem group commit (batch {WITNESS_BATCH}, {producers} producer(s)), "
            f"{n:,} records per run, checkpoint every {WITNESS_CHECKPOINT_EVERY}, {rounds} interleaved rounds"
        )
        print(
            f"{'witnessing':>12} {'records/s':>10} {'on/off: median [range] of rounds':>34} {'best/best':>9} "
            f"{'CPU ms per 1k records: appender':>32} {'witnesses':>9}"
        )
        for variant in names:
            paired = "" if variant == "off" else _paired(rates[variant], rates["off"])
            best = "" if variant == "off" else f"{max(rates[variant]) / max(rates['off']):.3f}"
            print(
                f"{variant:>12} {_median(rates[variant]):>10,.0f} {paired:>34} {best:>9} "
                f"{cpu_ms(variant, 'self'):>32.1f} {cpu_ms(variant, 'others'):>9.1f}"
            )
        off = _median(rates["off"])
        print(
            f"noise: the off rounds alone range {min(rates['off']) / off:.3f}..{max(rates['off']) / off:.3f} "
            "of their median"
        )
        for variant in names[1:]:
            diff = _median([a / b for a, b in zip(rates[variant], rates["off"], strict=True)]) - 1
            extra = cpu_ms(variant, "self") / cpu_ms("off", "self") - 1
            print(
                f"{variant}: {diff:+.1%} records/s vs off (target: within 2%, witnessing not on the append path); "
                f"appender CPU per record {extra:+.1%}"
            )
        for variant in names[2:]:
            done = submitters[variant]
            cosigned, largest = _witnesses.cosigned_counts(store, chains[variant], witnesses[variant])
            written = sum(1 for c in chains[variant] for _ in store.list_keys(layout.checkpoints_prefix(c)))
            failures = {name: why for s in done for name, why in s.failures.items()}
            print(
                f"{variant}: {written} checkpoints written over {len(chains[variant])} chains, "
                f"{sum(s.submitted for s in done)} submitted (the newest pending each time), quorum reached up to "
                f"size {max(s.witnessed_size for s in done):,} (largest cosigned {largest:,}); cosigned per witness: "
                + ", ".join(f"{name} {count}" for name, count in cosigned.items())
                + (f"; last failures: {failures}" if failures else "")
            )
    finally:
        for group in witnesses.values():
            _witnesses.stop_all(group)


def trust_section(workdir: Path, n: int, rounds: int) -> None:
    """The verifier unanchored vs with the trust policy, over a chain certified by a root."""
    store = FilesystemStore(workdir / "trust-store")
    root, _ = RootKey.load_or_create(workdir / "trust" / "root.pem")
    policy = root.policy()
    append_rate(store, "anchored", n, 64, 1, root=root)
    variants = [(workers, trusted) for workers in (1, 2) for trusted in (False, True)]
    rates: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
    records = 0
    for round_no in range(rounds + 1):  # round 0: warm-up (page cache, worker start), discarded
        for workers, trusted in variants:
            report = verify_store(store, workers=workers, trust=policy if trusted else None)
            assert report.ok, report.first_failure
            assert report.anchored == trusted, report.anchored
            records = report.records
            if round_no:
                rates[(workers, trusted)].append(report.records_per_second)
    print(
        f"\nverify with trust policy: one chain certified by a root (ChainWriter.open(root=...)), "
        f"{records:,} records, {rounds} interleaved rounds"
    )
    for workers in (1, 2):
        plain, anchored = rates[(workers, False)], rates[(workers, True)]
        print(
            f"verify, {workers} worker(s): unanchored {_median(plain):,.0f} records/s, "
            f"trust=policy {_median(anchored):,.0f} records/s, anchored/unanchored {_paired(anchored, plain)} "
            f"(target >= 0.90)"
        )


SEAL_POOL = 10_000
SEAL_BATCH = 64


def sealing_section(workdir: Path, n: int, rounds: int) -> None:
    """Filesystem group commit, clear vs sealed (seal_all per batch), interleaved rounds."""
    store = FilesystemStore(workdir / "sealing-store")
    personal = PersonalData(configured_keyring(str(workdir / "sealing-keyring"), "local"))
    pool = random.Random(3)
    variants: dict[str, tuple[Callable[[str], Callable[[int], str]], PersonalData | None]] = {
        "clear": (lambda chain: lambda i: f"subject-{pool.randrange(SEAL_POOL)}", None),
        "sealed pool": (lambda chain: lambda i: f"subject-{pool.randrange(SEAL_POOL)}", personal),
        "sealed distinct": (lambda chain: lambda i: f"{chain}-subject-{i}", personal),
    }
    names = list(variants)

    def run(variant: str, producers: int, round_no: int) -> float:
        chain_id = f"seal-{variant.replace(' ', '-')}-{producers}-{round_no}"
        subjects, sealer = variants[variant]
        return append_rate(store, chain_id, n, SEAL_BATCH, producers, subject_of=subjects(chain_id), personal=sealer)

    for producers in (1, 2):
        for variant in names:
            run(variant, producers, 0)  # warm-up, discarded (also creates the pool's first keys)
    rates: dict[tuple[str, int], list[float]] = {(v, p): [] for v in names for p in (1, 2)}
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(names)  # rotate the order: no variant always runs first
        for producers in (1, 2):
            for variant in names[shift:] + names[:shift]:
                rates[(variant, producers)].append(run(variant, producers, round_no))

    def line_bytes(variant: str) -> float:
        prefix = layout.segments_prefix(f"seal-{variant.replace(' ', '-')}-1-1")
        keys = list(store.list_keys(prefix))
        return sum(len(store.get(k)) for k in keys) / sum(len(rec.iter_lines(store.get(k))) for k in keys)

    print(
        f"\nsealing: filesystem group commit (batch {SEAL_BATCH}), {n:,} records per run, {rounds} interleaved "
        f"rounds; subjects: 'pool' = drawn from {SEAL_POOL:,} (one keyring for every round: keys made on first "
        f"use, reused after), 'distinct' = a new subject (and data key) per record"
    )
    print(
        f"{'variant':>16} {'producers':>9} {'records/s':>10} {'sealed/clear: median [range] of rounds':>40} "
        f"{'bytes/record':>12}"
    )
    for producers in (1, 2):
        for variant in names:
            values = rates[(variant, producers)]
            paired = "" if variant == "clear" else _paired(values, rates[("clear", producers)])
            print(f"{variant:>16} {producers:>9} {_median(values):>10,.0f} {paired:>40} {line_bytes(variant):>12,.0f}")
    personal.keyring.close()


SECTIONS = ("appends", "witnessing", "trust", "sealing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=6400, help="records per append run (default 6400)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="interleaved rounds of the witnessing, trust and sealing sections (default 7)",
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=2,
        help="appending threads in the witnessing section (default 2, as the gateway's commit threads)",
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run, of {','.join(SECTIONS)} (default all)"
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(only) - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.rounds < 1 or args.records < 64:
        parser.error("--rounds must be >= 1 and --records >= 64")
    n = args.records
    workdir = Path(tempfile.mkdtemp(prefix="verdict-audit-bench-"))
    if "appends" in only:
        appends_section(workdir, n)
    if "witnessing" in only:
        witnessing_section(workdir, n, args.rounds, args.producers)
    if "trust" in only:
        trust_section(workdir, n, args.rounds)
    if "sealing" in only:
        sealing_section(workdir, n, args.rounds)


if __name__ == "__main__":
    main()

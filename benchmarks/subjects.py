"""Subject access (GDPR Art. 15) at scale: one subject's decisions found through the
subject index vs by scanning the whole trail, side by side in one run.

The trail: one gateway chain of ``--records`` sealed decisions (default
1,000,000), of which ``--subject-decisions`` (default 1,000) belong to the
measured subject, spread evenly through the trail; the others belong to a pool
of other subjects (default one per 4 decisions). It is built directly, not
through HTTP (1M decisions through the gateway would take hours here), but on
the real write path: realistic decision bodies (the reference model's own
decisions, scored and explained by the engine, then given fresh request ids,
subjects and times), sealed by ``PersonalData.seal_all`` (so the keyring's
subject index is filled by the real code) and appended by ``ChainWriter`` to a
filesystem store in batches of ``--batch`` (default 64, the gateway's
max_batch, so segments are the size the gateway writes), with checkpoints
every 1,000 records as the gateway's default.

Measured, in interleaved rounds (a warm-up first, discarded; the trail is in
the page cache for all of them alike):
  index     SubjectRights.file(subject): the keyring's subject index, each request
            id checked against the store's request index
  read      index + read_decision(prove=False) of each decision (record hash,
            canonical form, index match, Ed25519 signature) + PersonalData.open
  scan      the baseline: every segment of the trail read; each record holding the
            subject's key ref decoded, hashed, its signature verified, and opened
Target: index + read (the subject's export) under 1 s at 1,000,000 records.

Then, once: the export as ``verdict subjects export`` does it
(LookupService.subject_decisions: verify without the per-record inclusion
proof, open, explain with adverse-action reasons, one access record per
decision), and for comparison one lookup *with* its inclusion proof, which
reads the whole chain (O(trail length)).

Run: .venv/bin/python benchmarks/subjects.py [--records 1000000] [--subject-decisions 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from verdict.audit import layout  # noqa: E402
from verdict.audit import records as rec  # noqa: E402
from verdict.audit.chain import ChainWriter  # noqa: E402
from verdict.audit.personal_data import PersonalData, configured_keyring  # noqa: E402
from verdict.audit.reader import read_decision  # noqa: E402
from verdict.audit.signing import (  # noqa: E402
    Ed25519Signer,
    check_key_document,
    decode_key_document,
    verify_record_signature,
)
from verdict.audit.stores import FilesystemStore  # noqa: E402

CHAIN = "gateway-0"
MODEL = "german-credit"
TEMPLATES = 256
TARGET_RECORDS = 1_000_000
TARGET_DECISIONS = 1000
TARGET_S = 1.0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _templates(store: FilesystemStore, work: Path) -> list[rec.DecisionBody]:
    """Clear decision bodies as the gateway makes them: the reference model registered in
    ``store``, ``TEMPLATES`` dataset rows validated, scored, explained and worded by the engine."""
    from verdict.gateway.datasets import load_dataset
    from verdict.gateway.decisions import PendingDecision
    from verdict.gateway.engine import Engine, decide_rows, decision_body
    from verdict.gateway.explanation import seed_for
    from verdict.gateway.registry import Registry
    from verdict.gateway.schema import validate_attributes
    from verdict.gateway.training import train

    registry = Registry(store)
    manifest, _ = registry.register(train(MODEL, work / "model").directory)
    registry.promote(manifest.name, manifest.version, by="benchmark")
    loaded = Engine(registry).loaded(manifest.name, manifest.version)
    rows = load_dataset(MODEL).rows
    attributes = [validate_attributes(manifest.inputs, rows[k % len(rows)]) for k in range(TEMPLATES)]
    ids = [f"template-{k}" for k in range(TEMPLATES)]
    decided = decide_rows(loaded.runtime, attributes, [seed_for(i) for i in ids], explainer=loaded.explainer)
    now = rec.utc_now()
    environment = hashlib.sha256(b"benchmark environment").hexdigest()
    return [
        decision_body(
            PendingDecision(i, None, manifest.name, manifest.version, a, hashlib.sha256(i.encode()).hexdigest(), now),
            loaded.runtime,
            outcome,
            decided,
            decided_at=now,
            environment_sha256=environment,
            manifest_sha256=loaded.manifest_sha256,
        )
        for i, a, outcome in zip(ids, attributes, decided.outcomes, strict=True)
    ]


def _subject_of(i: int, n: int, mine: int, others: int, rng: random.Random, subject: str) -> str:
    every = n // mine
    if i % every == every // 2 and i // every < mine:
        return subject
    return f"other-{rng.randrange(others):07d}"


def build_trail(
    store: FilesystemStore,
    personal: PersonalData,
    templates: list[rec.DecisionBody],
    *,
    n: int,
    mine: int,
    others: int,
    batch: int,
    subject: str,
) -> tuple[float, int]:
    """Append ``n`` sealed decisions; returns (seconds, decisions of ``subject`` written)."""
    signer = Ed25519Signer.from_seed(bytes(32), "2026-01-01T00:00:00.000000Z")
    writer = ChainWriter.open(store, CHAIN, signer, checkpoint_every=1000)
    rng = random.Random(7)
    counted = 0

    def batches():  # clear bodies, built in the caller's thread (the rng is not shared)
        nonlocal counted
        for start in range(0, n, batch):
            now = rec.utc_now()
            bodies = []
            for i in range(start, min(n, start + batch)):
                who = _subject_of(i, n, mine, others, rng, subject)
                counted += who == subject
                rid = f"req-{i:09d}"
                bodies.append(
                    msgspec.structs.replace(
                        templates[i % len(templates)],
                        request_id=rid,
                        request_sha256=hashlib.sha256(rid.encode()).hexdigest(),
                        subject_id=who,
                        received_at=now,
                        decided_at=now,
                    )
                )
            yield bodies

    def commit(bodies: list[rec.DecisionBody]) -> int:  # as the gateway: seal (keys durable first), append
        writer.append_batch(personal.seal_all(bodies, now=rec.utc_now()))
        return len(bodies)

    started = time.perf_counter()
    done, step = 0, max(n // 10, 1)
    # Two commit threads, as the gateway's: one batch's fsyncs overlap the next batch's CPU work.
    # (Executor.map would build every batch up front: at 1M records, gigabytes of bodies.)
    with ThreadPoolExecutor(max_workers=2) as pool:
        in_flight: deque[Future[int]] = deque()
        for bodies in batches():
            in_flight.append(pool.submit(commit, bodies))
            if len(in_flight) < 4:
                continue
            before, done = done, done + in_flight.popleft().result()
            if done // step != before // step:
                rate = done / (time.perf_counter() - started)
                _say(f"  built {done:,} / {n:,} records ({rate:,.0f}/s, about {(n - done) / rate:,.0f} s to go)")
        for future in in_flight:
            done += future.result()
    writer.close()
    return time.perf_counter() - started, counted


class Measures:
    """The three ways to a subject's decisions, each returning how many it found."""

    def __init__(self, store: FilesystemStore, personal: PersonalData, subject: str) -> None:
        from verdict.gateway.subjects import SubjectRights

        self.store, self.personal, self.subject = store, personal, subject
        self.rights = SubjectRights(store, personal, log=None)  # type: ignore[arg-type] # file() appends nothing

    def index(self) -> int:
        return len(self.rights.file(self.subject).request_ids)

    def read(self) -> int:
        found = self.rights.file(self.subject)
        for request_id in found.request_ids:
            opened = self.personal.open(read_decision(self.store, request_id, prove=False).body)
            assert opened.subject_id == self.subject, request_id
        return len(found.request_ids)

    def scan(self) -> int:
        """Every segment read; only records under the subject's key (found in the keyring,
        as a scan would need too) decoded, verified and opened: the cheapest honest scan."""
        key_refs = [k.encode() for k in self.personal.keyring.subject_file(self.subject).key_refs]
        keys: dict[str, object] = {}
        found = 0
        for key in self.store.list_keys(layout.segments_prefix(CHAIN)):
            for line in rec.iter_lines(self.store.get(key)):
                if not any(k in line for k in key_refs):
                    continue
                raw, signature = rec.split_line(line)
                record = rec.decode_record(raw)
                if record.key_id not in keys:
                    doc = decode_key_document(self.store.get(layout.public_key_key(record.key_id)))
                    keys[record.key_id] = check_key_document(doc)
                digest = hashlib.sha256(raw).digest()
                assert verify_record_signature(keys[record.key_id], digest, signature)
                assert isinstance(record.body, rec.DecisionBody)
                opened = self.personal.open(record.body)
                assert opened.subject_id == self.subject
                found += 1
        return found


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    found = fn()
    return time.perf_counter() - started, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=TARGET_RECORDS, help="decisions in the trail (default 1M)")
    parser.add_argument(
        "--subject-decisions", type=int, default=TARGET_DECISIONS, help="of them, the measured subject's (default 1000)"
    )
    parser.add_argument("--other-subjects", type=int, default=None, help="subjects of the rest (default records/4)")
    parser.add_argument("--batch", type=int, default=64, help="records per segment (default 64, the gateway's)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (its path is printed)")
    args = parser.parse_args()
    n, mine = args.records, args.subject_decisions
    if not 1 <= mine <= n // 2 or args.rounds < 1 or args.batch < 1:
        parser.error("need 1 <= --subject-decisions <= --records/2, --rounds >= 1, --batch >= 1")
    others = args.other_subjects or max(1, n // 4)
    work = Path(tempfile.mkdtemp(prefix="verdict-bench-subjects-"))
    os.environ["VERDICT_HOME"] = str(work / "home")  # signing keys and roots made here, never in ./var
    subject = "applicant-measured-0001"
    try:
        store = FilesystemStore(work / "store")
        personal = PersonalData(configured_keyring(str(work / "keyring"), "local"))
        _say(f"working in {work}; training and registering the reference model ...")
        templates = _templates(store, work)
        _say(f"building a trail of {n:,} sealed decisions ...")
        built_s, counted = build_trail(
            store, personal, templates, n=n, mine=mine, others=others, batch=args.batch, subject=subject
        )
        assert counted == mine, (counted, mine)
        segments = sum(1 for _ in store.list_keys(layout.segments_prefix(CHAIN)))
        trail_bytes = sum(
            (work / "store" / key).stat().st_size for key in store.list_keys(layout.segments_prefix(CHAIN))
        )
        print(
            f"trail: {n:,} sealed decisions ({trail_bytes / n:,.0f} bytes per record line), {segments:,} segments "
            f"of {args.batch}, subject index over {others:,} other subjects + the measured one "
            f"({mine:,} decisions, spread evenly); built in {built_s:,.0f} s ({n / built_s:,.0f} records/s, "
            f"seal_all + ChainWriter, 2 commit threads)"
        )
        if n != TARGET_RECORDS or mine != TARGET_DECISIONS:
            print(
                f"NOTE: measured at {mine:,} decisions in {n:,} records, not the target's {TARGET_DECISIONS:,} in "
                f"{TARGET_RECORDS:,} (see the projections below)"
            )

        m = Measures(store, personal, subject)
        candidates = {"index": m.index, "read": m.read, "scan": m.scan}
        for fn in candidates.values():  # warm-up, discarded
            assert fn() == mine
        times: dict[str, list[float]] = {name: [] for name in candidates}
        names = list(candidates)
        for round_no in range(args.rounds):
            shift = round_no % len(names)  # rotate the order: no variant always runs first
            for name in names[shift:] + names[:shift]:
                seconds, found = _timed(candidates[name])
                assert found == mine, (name, found)
                times[name].append(seconds)
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"\nsubject with {mine:,} decisions in {n:,} records, {args.rounds} interleaved rounds (median [range])")
        labels = {
            "index": "SubjectRights.file (subject index + request index)",
            "read": "export: index + read_decision(prove=False) + open",
            "scan": "baseline: full trail scan, matching records verified + opened",
        }
        for name in names:
            print(f"  {labels[name]:<64} {med[name]:>9.3f} s  [{min(times[name]):.3f}..{max(times[name]):.3f}]")
        ratios = sorted(s / r for s, r in zip(times["scan"], times["read"], strict=True))
        print(
            f"  baseline scan time / export time (per round, median [range]): {statistics.median(ratios):,.1f}x "
            f"[{ratios[0]:,.1f}x..{ratios[-1]:,.1f}x]"
        )
        per_decision = (med["read"] - med["index"]) / mine
        print(
            f"  export target < {TARGET_S:g} s: {med['read']:.3f} s measured at {n:,} records "
            f"({'met' if med['read'] < TARGET_S else 'MISSED'}); {per_decision * 1000:.2f} ms per decision "
            f"(each: one request-index object and one segment of {args.batch} read, whatever the trail's length)"
        )
        at_target = n == TARGET_RECORDS and mine == TARGET_DECISIONS
        if not at_target:
            print(
                f"  projection to {TARGET_DECISIONS:,} decisions in {TARGET_RECORDS:,} records (not measured): "
                f"export about {med['index'] + per_decision * TARGET_DECISIONS:.2f} s (per-decision cost as "
                f"measured); scan grows with the trail, about {med['scan'] * TARGET_RECORDS / n:,.1f} s"
            )

        # The export as the CLI and GET /v1/subjects/{id}/decisions run it: verified without the
        # per-record inclusion proof (status signature_verified), explained, one access record each.
        seconds, found = _timed(lambda: _lookup_export(store, personal, subject))
        assert found == mine, found
        print(
            f"\nexport as `verdict subjects export` runs it (LookupService.subject_decisions: verify + open + "
            f"explain + adverse-action reasons + {found:,} access records on the subjects chain):\n"
            f"  {seconds:,.2f} s for {found:,} decisions at {n:,} records (target < {TARGET_S:g} s for the read; "
            f"the access records are one signed append)"
        )
        # For comparison: one decision looked up WITH its inclusion proof (GET .../explanation),
        # which reads the whole chain (O(trail length)); why the bulk export does not prove each.
        started = time.perf_counter()
        assert read_decision(store, m.rights.file(subject).request_ids[0]).inclusion is not None
        print(f"  one lookup with its inclusion proof: {time.perf_counter() - started:.3f} s at {n:,} records")
    finally:
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _lookup_export(store: FilesystemStore, personal: PersonalData, subject: str) -> int:
    """LookupService.subject_decisions as ``verdict subjects export`` builds it (unanchored)."""
    from verdict.gateway.engine import Engine
    from verdict.gateway.lookups import EventAccessLog, LookupService
    from verdict.gateway.registry import Registry
    from verdict.gateway.registry_log import RegistryLog
    from verdict.gateway.subjects import SUBJECTS_CHAIN, SubjectRights

    log = RegistryLog.local(store, create_root=True, chain_id=SUBJECTS_CHAIN)
    rights = SubjectRights(store, personal, log)
    lookups = LookupService(store, EventAccessLog(log), Engine(Registry(store)), personal=personal, subjects=rights)
    return len(lookups.subject_decisions(subject, "benchmark").decisions)


if __name__ == "__main__":
    main()

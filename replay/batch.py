"""Running a replay: select, prove, re-score in worker processes, resume, report.

The steps of one replay (one request id or a quarter of decisions):

1. **select and prove** the records (replay.trail): signature, chain position,
   inclusion in the latest signed checkpoint; a record that fails is a
   ``cannot_replay`` verdict with the reader's reason code;
2. **fix the bounds**: each model's tolerance from its registered manifest,
   tightened if asked, never widened (replay.verdicts.effective_tolerance);
3. **fetch the recorded environments** and check their hashes;
4. **re-score** the proven decisions, grouped by model and recorded runtime
   and cut into chunks of whole buckets, in several worker processes
   (replay.rescore, the gateway's own code path);
5. after every chunk, **append its verdicts to a progress file**, so an
   interrupted replay resumes where it stopped (``resume=<replay id>``);
6. **report**: JSON signed and stored as evidence in the trail, an access
   record per replayed decision and an evidence record on the replay chain,
   HTML for the examiner (replay.report).

Everything is plain functions on :class:`ReplayJob`; the CLI, the HTTP
service and the benchmark all call :func:`run_replay`.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import msgspec

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.config import data_dir
from verdict.audit.data_keys import DataKeyErased, DataKeyMissing
from verdict.audit.personal_data import PersonalData, existing_personal_data
from verdict.audit.records import DecisionBody, decode_record, is_sealed, utc_now
from verdict.audit.sealing import SealError
from verdict.audit.stores import ObjectMissing, StoreError, WormStore, open_store
from verdict.audit.trust import TrustPolicy
from verdict.gateway.manifest import ManifestError, decode_manifest
from verdict.replay import environment as envs
from verdict.replay import report as reports
from verdict.replay.rebuild import replay_in_rebuilt_environments
from verdict.replay.report import ReplayOutcome
from verdict.replay.rescore import ReplayOptions, Rescorer, RuntimeKey, init_worker, runtime_key, warm, work
from verdict.replay.trail import Selection, Target, resolve
from verdict.replay.verdicts import (
    DecisionResult,
    Tolerance,
    ToleranceError,
    cannot_replay,
    effective_tolerance,
    erased,
)

__all__ = [
    "DEFAULT_REPLAY_CHAIN",
    "ModelTolerance",
    "ProgressFn",
    "ReplayError",
    "ReplayInterrupted",
    "ReplayJob",
    "ReplayOutcome",
    "new_replay_id",
    "replays_dir",
    "run_replay",
]

DEFAULT_REPLAY_CHAIN = "replay-0"
CHUNK_DECISIONS = 512
"""Decisions per unit of work (rounded up to whole buckets): big enough to fill
the explainer's forward passes, small enough for a fine-grained progress file."""
IN_PROCESS_BELOW = 256
"""Replays of fewer decisions run in this process: starting workers (torch import,
model load) costs more than it saves."""

ProgressFn = Callable[[str, int, int], None]
"""progress(phase, done, total); phases: "verifying", "replaying"."""


class ReplayError(Exception):
    """The replay cannot start (usage error: bad selection, widened tolerance, ...)."""


class ReplayInterrupted(Exception):
    """Stopped before the end; verdicts so far are in the progress file."""

    def __init__(self, replay_id: str, done: int, total: int) -> None:
        self.replay_id, self.done, self.total = replay_id, done, total
        super().__init__(
            f"replay {replay_id} interrupted after {done} of {total} decisions; resume it with --resume {replay_id}"
        )


class ReplayJob(msgspec.Struct, frozen=True, omit_defaults=True):
    """Everything that defines a replay (saved with its progress, so a resume is the same replay)."""

    store_url: str
    selection: Selection
    options: ReplayOptions = ReplayOptions()
    require_checkpoint: bool = True
    actor: str = "cli"
    """Who asked: an API key id, or cli:<user>."""
    purpose: str | None = None
    replay_chain: str = DEFAULT_REPLAY_CHAIN
    record: bool = True
    """Store the signed report as evidence and log the replay on the replay chain."""
    workers: int | None = None
    """Worker processes; None: one per CPU for large replays, none for small ones."""
    rebuild_env: bool = False
    trust: TrustPolicy | None = None
    """The trust policy records are verified against (spec §5b); None: unanchored (the CLI says so)."""


class ModelTolerance(msgspec.Struct, frozen=True):
    model: str
    manifest: Tolerance
    """as fixed at registration"""
    effective: Tolerance
    """what this replay applied (tightened if asked)"""


def replays_dir() -> Path:
    return data_dir() / "replays"


def new_replay_id() -> str:
    return "rpl-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


# --- progress file -----------------------------------------------------------------------------


class _Saved(msgspec.Struct):
    job: ReplayJob
    replay_id: str
    started_at: str
    targets: list[tuple[str, str | None]]
    """(request id, record hash) of every selected decision, in order."""
    resumed: int = 0


class _ProgressLine(msgspec.Struct):
    results: list[DecisionResult]
    fingerprints: dict[str, str] = {}
    """sha256 -> fingerprint JSON text"""


class _Progress:
    """``<data_dir>/replays/<id>/``: job.json (the job and its selection) and
    progress.jsonl (one line of verdicts per finished chunk, flushed and fsynced).
    A torn last line (killed mid-write) is ignored on resume."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    @property
    def job_file(self) -> Path:
        return self.directory / "job.json"

    @property
    def lines_file(self) -> Path:
        return self.directory / "progress.jsonl"

    @property
    def done_file(self) -> Path:
        return self.directory / "done.json"

    def create(self, saved: _Saved) -> None:
        self.directory.mkdir(parents=True, exist_ok=False)
        self._write(self.job_file, msgspec.json.encode(saved))

    def update(self, saved: _Saved) -> None:
        tmp = self.job_file.with_suffix(".tmp")
        self._write(tmp, msgspec.json.encode(saved))
        os.replace(tmp, self.job_file)

    def load(self) -> _Saved:
        return msgspec.json.decode(self.job_file.read_bytes(), type=_Saved)

    def record(self, results: list[DecisionResult], fingerprints: dict[str, bytes]) -> None:
        """One finished unit of work: its verdicts and the replay fingerprints they used."""
        self.append(_ProgressLine(results, {k: v.decode() for k, v in fingerprints.items()}))

    def append(self, line: _ProgressLine) -> None:
        data = msgspec.json.encode(line) + b"\n"
        with self._lock, open(self.lines_file, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def done_results(self) -> tuple[dict[str, DecisionResult], dict[str, bytes]]:
        results: dict[str, DecisionResult] = {}
        fingerprints: dict[str, bytes] = {}
        if not self.lines_file.exists():
            return results, fingerprints
        decoder = msgspec.json.Decoder(_ProgressLine)
        for raw in self.lines_file.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            try:
                line = decoder.decode(raw)
            except msgspec.DecodeError:
                continue  # torn write of the last chunk: it is replayed again
            for r in line.results:
                results[r.request_id] = r
            fingerprints.update({k: v.encode() for k, v in line.fingerprints.items()})
        return results, fingerprints

    def finish(self, summary: dict[str, Any]) -> None:
        self._write(self.done_file, msgspec.json.encode(summary))

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def find_resumable(replay_id: str, work_dir: Path | None = None) -> Path:
    base = work_dir or replays_dir()
    if replay_id == "latest":
        candidates = sorted(
            (p for p in base.glob("rpl-*") if (p / "job.json").exists() and not (p / "done.json").exists()),
            key=lambda p: p.stat().st_mtime,
        )
        if not candidates:
            raise ReplayError(f"no unfinished replay in {base}")
        return candidates[-1]
    path = base / replay_id
    if not (path / "job.json").exists():
        raise ReplayError(f"no replay {replay_id!r} in {base}")
    if (path / "done.json").exists():
        raise ReplayError(f"replay {replay_id} already finished (see {path / 'done.json'})")
    return path


# --- the replay ------------------------------------------------------------------------------------


def run_replay(
    job: ReplayJob | None = None,
    *,
    resume: str | None = None,
    progress: ProgressFn | None = None,
    replay_id: str | None = None,
    stop: threading.Event | None = None,
    signer: Any = None,
    keyring: Any = None,
    html_path: Path | None = None,
    json_path: Path | None = None,
    default_outputs: bool = False,
    pool: WorkerPool | None = None,
    root: Any = None,
    work_dir: Path | None = None,
    personal: PersonalData | None = None,
) -> ReplayOutcome:
    """Run (or resume) a replay to its report. Raises ReplayError for usage errors
    before any work, ReplayInterrupted if ``stop`` is set or the process is interrupted.
    ``work_dir`` holds the resumable progress files (default ``<data dir>/replays``: the
    CLI's; an in-process caller passes its own home's). ``personal``: the data keyring that
    opens sealed decisions (spec §3a), default the one configured here (``VERDICT_KEYRING`` or
    the data directory's), if any; without one, sealed decisions are ``cannot_replay``
    (``inputs_sealed``), and erased ones are ``erased`` only with it (it holds the tombstones)."""
    started = time.perf_counter()
    personal = personal if personal is not None else existing_personal_data()
    if resume is not None:
        directory = find_resumable(resume, work_dir)
        store_progress = _Progress(directory)
        saved = store_progress.load()
        saved.resumed += 1
        store_progress.update(saved)
        job, replay_id = saved.job, saved.replay_id
    else:
        if job is None:
            raise ReplayError("run_replay needs a job or resume=")
        replay_id = replay_id or new_replay_id()
        saved = None
        store_progress = _Progress((work_dir or replays_dir()) / replay_id)
    store = open_store(job.store_url)
    kept = pool is not None and pool.store_url == job.store_url and job.workers != 0 and not job.rebuild_env
    own = None if kept else _early_pool(store, job)
    try:
        return _run(
            job,
            store,
            saved,
            store_progress,
            replay_id,
            started,
            pool if kept else own,
            progress,
            stop,
            signer,
            keyring,
            html_path,
            json_path,
            default_outputs,
            closable=own is not None,
            root=root,
            personal=personal,
        )
    finally:
        if own is not None:
            own.close()


def _early_pool(store: WormStore, job: ReplayJob) -> WorkerPool | None:
    """Start workers now when the replay will use them (explicit --workers, or a
    scan of a trail large enough to be worth it)."""
    if job.rebuild_env or job.workers == 0:
        return None
    if job.workers is not None:
        return WorkerPool(job.store_url, job.workers)
    if not job.selection.is_scan() or job.options.scope == "score_only":
        return None

    for decisions, _ in enumerate(store.list_keys(layout.INDEX_PREFIX), start=1):
        if decisions >= IN_PROCESS_BELOW:
            return WorkerPool(job.store_url, _workers(job, decisions))
    return None


def _run(
    job: ReplayJob,
    store: WormStore,
    saved: _Saved | None,
    store_progress: _Progress,
    replay_id: str,
    started: float,
    pool: WorkerPool | None,
    progress: ProgressFn | None,
    stop: threading.Event | None,
    signer: Any,
    keyring: Any,
    html_path: Path | None,
    json_path: Path | None,
    default_outputs: bool,
    closable: bool = True,
    root: Any = None,
    personal: PersonalData | None = None,
) -> ReplayOutcome:
    targets, notes = _select(store, job, progress)
    if saved is not None:
        wanted = {rid for rid, _ in saved.targets}
        targets = [t for t in targets if t.request_id in wanted]
        found = {t.request_id for t in targets}
        targets += [
            Target(
                request_id=rid,
                problem=("not_found", f"decision {rid!r} selected when the replay started is no longer found"),
            )
            for rid, _ in saved.targets
            if rid not in found
        ]
    tolerances = _tolerances(store, job, targets)
    if saved is None:
        saved = _Saved(
            job=job, replay_id=replay_id, started_at=utc_now(), targets=[(t.request_id, t.record_hash) for t in targets]
        )
        store_progress.create(saved)

    results: dict[str, DecisionResult] = {}
    fingerprints: dict[str, bytes] = {}
    env_status = _recorded_environments(store, targets, results)
    previously, old_prints = store_progress.done_results()
    for t in targets:  # reuse verdicts of the interrupted run only for the very same verified record
        old = previously.get(t.request_id)
        if t.problem is None and old is not None and old.record_hash == t.record_hash and t.request_id not in results:
            results[t.request_id] = old
    fingerprints.update(old_prints)
    for t in targets:
        if t.problem is not None:
            results[t.request_id] = cannot_replay(
                t.request_id,
                t.problem[0],
                t.problem[1],
                chain_id=t.chain_id,
                seq=t.seq,
                record_hash=t.record_hash,
                decided_at=t.decided_at,
                model=t.model,
            )
    todo = _opened(store, [t for t in targets if t.request_id not in results], personal, results)
    rebuilt = None
    if job.rebuild_env and todo:
        rebuilt = replay_in_rebuilt_environments(
            store,
            job,
            todo,
            env_status,
            results,
            fingerprints,
            store_progress,
            progress,
            workers_for=lambda n: _workers(job, n),
        )
    workers = 0
    if todo and not job.rebuild_env:
        if pool is not None and closable and job.workers is None and len(todo) < IN_PROCESS_BELOW:
            pool.close(wait=False)  # a small selection from a large trail: this process is quicker
            pool = None
        workers = _rescore_all(
            job, todo, results, fingerprints, store_progress, progress, stop, len(targets), replay_id, pool
        )
    elapsed = time.perf_counter() - started

    ordered = [_with_proof(results[t.request_id], t) for t in targets]
    report = reports.build_report(
        replay_id=replay_id,
        job=job,
        results=ordered,
        notes=notes,
        tolerances=tolerances,
        recorded_environments=env_status,
        replay_fingerprints=fingerprints,
        started_at=saved.started_at,
        elapsed_s=elapsed,
        workers=workers,
        resumed=saved.resumed,
        replayed_now=len(todo),
        rebuilt=rebuilt,
        store=store,
    )
    if default_outputs:
        html_path = html_path or store_progress.directory / "report.html"
        json_path = json_path or store_progress.directory / "report.json"
    outcome = reports.finish(
        store, job, report, signer=signer, keyring=keyring, html_path=html_path, json_path=json_path, root=root
    )
    outcome.replay_id = replay_id
    outcome.html_path = str(html_path) if html_path else None
    outcome.json_path = str(json_path) if json_path else None
    store_progress.finish(
        {
            "replay_id": replay_id,
            "summary": msgspec.to_builtins(report.summary),
            "report": outcome.stored.object_key if outcome.stored else None,
            "html": outcome.stored.html_key if outcome.stored else None,
        }
    )
    return outcome


def _opened(
    store: WormStore, todo: list[Target], personal: PersonalData | None, results: dict[str, DecisionResult]
) -> list[Target]:
    """Open the sealed decisions among ``todo`` with the data keyring (spec §3a); the ones
    that cannot be opened get their verdict here: ``erased`` when their subject's key was
    destroyed by an erasure, ``cannot_replay`` otherwise. The rest, to re-score."""
    kept = []
    for t in todo:
        body = t.body or decode_record(t.record).body
        if not isinstance(body, DecisionBody) or not is_sealed(body):
            kept.append(t)
            continue
        known: dict[str, Any] = {
            "chain_id": t.chain_id,
            "seq": t.seq,
            "record_hash": t.record_hash,
            "decided_at": t.decided_at,
            "model": t.model,
        }
        if personal is None:
            results[t.request_id] = cannot_replay(
                t.request_id, "inputs_sealed", "the decision is sealed and this replay has no data keyring", **known
            )
            continue
        try:
            t.opened = canonical_bytes(personal.open(body))
        except DataKeyErased as exc:
            e = exc.erasure
            results[t.request_id] = erased(
                t.request_id,
                e.as_dict(),
                **known,
            )
            continue
        except DataKeyMissing as exc:
            results[t.request_id] = cannot_replay(t.request_id, "inputs_sealed", str(exc), **known)
            continue
        except SealError as exc:
            results[t.request_id] = cannot_replay(t.request_id, "sealed_tampered", str(exc), **known)
            continue
        except Exception as exc:  # noqa: BLE001 - the keyring or its KMS failed: a verdict, never a crash
            results[t.request_id] = cannot_replay(
                t.request_id, "store_error", f"the data keyring could not be read: {exc}", **known
            )
            continue
        kept.append(t)
    return kept


def _with_proof(result: DecisionResult, target: Target) -> DecisionResult:
    """Attach how the record was proven (the trail check ran in this process)."""
    if target.verification and result.verification is None:
        return msgspec.structs.replace(result, verification=target.verification)
    return result


def _select(store: WormStore, job: ReplayJob, progress: ProgressFn | None) -> tuple[list[Target], list[str]]:
    tick = (lambda done, total: progress("verifying", done, total)) if progress else None
    return resolve(store, job.selection, require_checkpoint=job.require_checkpoint, progress=tick, trust=job.trust)


def _tolerances(store: WormStore, job: ReplayJob, targets: list[Target]) -> list[ModelTolerance]:
    """Each selected model's registered tolerance and the one applied; refuse widening."""
    out = []
    for ref in sorted({t.model for t in targets if t.model and t.problem is None}):
        name, _, version = ref.partition(":")
        try:
            manifest = decode_manifest(store.get(manifest_key(name, version)))
        except (ObjectMissing, StoreError, ManifestError):
            continue  # those decisions get cannot_replay (manifest_missing/invalid) from the rescorer
        fixed = Tolerance(manifest.tolerance.absolute, manifest.tolerance.relative)
        try:
            applied = effective_tolerance(fixed, job.options.tighten_absolute, job.options.tighten_relative, model=ref)
        except ToleranceError as exc:
            raise ReplayError(str(exc)) from None
        out.append(ModelTolerance(model=ref, manifest=fixed, effective=applied))
    return out


def manifest_key(name: str, version: str) -> str:
    """gateway.registry.manifest_key, without importing the registry (which imports
    torch and the training code) into the process that only proves records and
    writes the report; tests/replay check the two agree."""
    return f"models/manifests/{name}/{version}.json"


def _recorded_environments(
    store: WormStore, targets: list[Target], results: dict[str, DecisionResult]
) -> list[envs.RecordedEnvironment]:
    """Fetch every environment manifest the decisions name; a decision whose
    manifest is missing or altered cannot be replayed (its environment is unknown)."""
    by_sha: dict[str, list[Target]] = {}
    for t in targets:
        if t.problem is None:
            body = t.body or decode_record(t.record).body
            assert isinstance(body, DecisionBody)
            by_sha.setdefault(body.environment_sha256, []).append(t)
    out = []
    for sha, members in sorted(by_sha.items()):
        entry = envs.RecordedEnvironment(sha256=sha, decisions=len(members))
        try:
            envs.fetch(store, sha)
        except envs.EnvironmentProblem as exc:
            entry.status = (
                "missing"
                if exc.reason == "environment_missing"
                else "altered"
                if exc.reason == "environment_altered"
                else "unreadable"
            )
            entry.problem = str(exc)
            reason = exc.reason if exc.reason in ("environment_missing", "environment_altered") else "store_error"
            for t in members:
                results[t.request_id] = cannot_replay(
                    t.request_id,
                    reason,
                    str(exc),
                    chain_id=t.chain_id,
                    seq=t.seq,
                    record_hash=t.record_hash,
                    decided_at=t.decided_at,
                    model=t.model,
                    environment_sha256=sha,
                )
        out.append(entry)
    return out


def _workers(job: ReplayJob, n: int) -> int:
    """Explicit --workers wins. Otherwise: score-only replays run in this process
    (re-scoring 10,000 decisions takes about a second, starting a worker with
    torch several); full replays of IN_PROCESS_BELOW decisions or more use one
    worker per CPU (explanations dominate)."""
    if job.workers is not None:
        return max(0, job.workers)
    if job.options.scope == "score_only" or n < IN_PROCESS_BELOW:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def chunk_decisions() -> int:
    """Decisions per chunk: CHUNK_DECISIONS, or ``VERDICT_REPLAY_CHUNK`` (finer progress files)."""
    try:
        return max(1, int(os.environ.get("VERDICT_REPLAY_CHUNK", CHUNK_DECISIONS)))
    except ValueError:
        return CHUNK_DECISIONS


def plan_chunks(targets: list[Target]) -> list[list[Target]]:
    """Group by model and recorded runtime (so forward passes are shared), then cut
    each group into chunks of whole buckets."""
    groups: dict[RuntimeKey, list[Target]] = {}
    for t in targets:
        body = t.body or decode_record(t.record).body
        assert isinstance(body, DecisionBody)
        groups.setdefault(runtime_key(body), []).append(t)
    chunks = []
    for key, members in groups.items():
        bucket = max(1, key.score_bucket)
        size = -(-chunk_decisions() // bucket) * bucket
        chunks += [members[i : i + size] for i in range(0, len(members), size)]
    return chunks


def _rescore_all(
    job: ReplayJob,
    todo: list[Target],
    results: dict[str, DecisionResult],
    fingerprints: dict[str, bytes],
    store_progress: _Progress,
    progress: ProgressFn | None,
    stop: threading.Event | None,
    total: int,
    replay_id: str,
    pool: WorkerPool | None = None,
) -> int:
    chunks = plan_chunks(todo)
    done = total - len(todo)
    if progress:
        progress("replaying", done, total)

    def record(chunk_results: list[DecisionResult], prints: dict[str, bytes]) -> None:
        nonlocal done
        new_prints = {k: v for k, v in prints.items() if k not in fingerprints}
        fingerprints.update(prints)
        store_progress.append(_ProgressLine(chunk_results, {k: v.decode() for k, v in new_prints.items()}))
        for r in chunk_results:
            results[r.request_id] = r
        done += len(chunk_results)
        if progress:
            progress("replaying", done, total)

    workers = pool.workers if pool is not None else _workers(job, len(todo))
    try:
        if workers == 0:
            rescorer = Rescorer(job.store_url, job.options)
            for chunk in chunks:
                if stop is not None and stop.is_set():
                    raise ReplayInterrupted(replay_id, done, total)
                record(
                    rescorer.rescore([t.record for t in chunk], [t.opened for t in chunk]), rescorer.fingerprints_seen
                )
        else:
            results_iter = (
                pool.run(chunks, stop, job.options, replay_id)
                if pool is not None
                else _in_workers(job, chunks, workers, stop)
            )
            for chunk_results, prints in results_iter:
                record(chunk_results, prints)
            if done < total:  # the pool stopped early: asked to stop
                raise ReplayInterrupted(replay_id, done, total)
    except KeyboardInterrupt:
        raise ReplayInterrupted(replay_id, done, total) from None
    return workers


class WorkerPool:
    """Worker processes from a fresh interpreter ("spawn": torch and its thread pools
    are never forked). Started before the trail is scanned, so their start-up
    (torch, the gateway, the explainer) overlaps with proving the records; each
    worker then loads each model version once. A long-lived owner (the replay
    service) can keep one pool for many replays of the same store."""

    def __init__(self, store_url: str, workers: int) -> None:
        self.store_url = store_url
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker, initargs=(store_url,)
        )
        self._warm = [self._pool.submit(warm) for _ in range(workers)]

    def run(
        self,
        chunks: list[list[Target]],
        stop: threading.Event | None,
        options: ReplayOptions,
        replay_id: str | None = None,
    ) -> Iterator[tuple[list[DecisionResult], dict[str, bytes]]]:
        replay_id = replay_id or new_replay_id()

        encoded = msgspec.msgpack.encode(options)
        decoder = msgspec.msgpack.Decoder(list[DecisionResult])
        pending: set[Future] = set()
        queue = list(enumerate(chunks))
        queue.reverse()
        try:
            while queue or pending:
                while queue and len(pending) < self.workers * 2:
                    chunk_id, chunk = queue.pop()
                    pending.add(
                        self._pool.submit(
                            work, chunk_id, [t.record for t in chunk], encoded, replay_id, [t.opened for t in chunk]
                        )
                    )
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    _, data, prints = future.result()
                    yield decoder.decode(data), prints
                if stop is not None and stop.is_set():
                    return
        finally:
            for future in pending:
                future.cancel()
            wait(pending)  # a kept pool must not carry this replay's chunks into the next one

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


def _in_workers(
    job: ReplayJob, chunks: list[list[Target]], workers: int, stop: threading.Event | None
) -> Iterator[tuple[list[DecisionResult], dict[str, bytes]]]:
    pool = WorkerPool(job.store_url, workers)
    try:
        yield from pool.run(chunks, stop, job.options)
    finally:
        pool.close()

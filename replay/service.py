"""The examiner API behind ``POST /v1/replays`` and ``GET /v1/replays/{id}``.

The HTTP layer (gateway.app, scope ``replay``) calls two functions and returns
their msgspec Structs as JSON::

    status = service.start_replay(ReplayRequest(...), actor_key_id=key.key_id)   # 202 + status
    status = service.replay_status(replay_id)                                     # 200 + status (+ report when finished)
    data   = service.report_json(replay_id)   # the signed report (application/json), or None
    page   = service.report_html(replay_id)   # the examiner's HTML, or None

Errors, all :class:`~verdict.gateway.service_errors.ServiceError` (the HTTP
layer alone turns them into problems): :class:`ReplayRequestError` names the
``field`` and ``rule`` broken, :class:`UnknownReplay` the replay id no one
knows, :class:`ReplayBusy` a full queue (with a ``retry_after_s`` hint: the
queue is bounded). Replays run one at a time on a background
thread of this process, with worker processes for large ones; every replay is
recorded in the trail exactly like a CLI replay (one ``access`` record per
replayed decision naming the API key, then an ``evidence`` record pointing at
the signed report) on this service's replay chain -- give each gateway replica
its own (e.g. ``replay-<ordinal>``): one writer per chain.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from typing import Any, Literal

import msgspec

from verdict.audit.config import store_url as configured
from verdict.audit.layout import LayoutError, check_chain_id
from verdict.audit.records import utc_now
from verdict.audit.stores import open_store
from verdict.gateway.manifest import NAME_RE, VERSION_RE
from verdict.gateway.registry import Registry
from verdict.gateway.service_errors import ServiceError
from verdict.replay.batch import (
    DEFAULT_REPLAY_CHAIN,
    ReplayError,
    ReplayInterrupted,
    ReplayJob,
    WorkerPool,
    new_replay_id,
    replays_dir,
    run_replay,
)
from verdict.replay.report import Summary
from verdict.replay.rescore import ReplayOptions
from verdict.replay.trail import Selection, SelectionError, parse_time_bound
from verdict.replay.verdicts import Tolerance, ToleranceError, effective_tolerance

__all__ = [
    "ReplayBusy",
    "ReplayRequest",
    "ReplayRequestError",
    "ReplayService",
    "ReplayStatus",
    "UnknownReplay",
    "default_service",
    "replay_status",
    "start_replay",
]

_log = logging.getLogger(__name__)

State = Literal["queued", "running", "finished", "failed", "interrupted"]


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Body of ``POST /v1/replays``: one request id, several, or a filter."""

    request_id: str | None = None
    request_ids: list[str] = []
    since: str | None = None
    """decided at or after (2025-01-31 or ISO 8601)"""
    until: str | None = None
    model: str | None = None
    """NAME or NAME:VERSION"""
    chain: str | None = None
    all: bool = False
    scope: Literal["full", "score_only"] = "full"
    tighten_absolute: float | None = None
    """May only tighten the manifest's tolerance."""
    tighten_relative: float | None = None
    require_checkpoint: bool = True
    purpose: str | None = None


class ReplayStatus(msgspec.Struct, omit_defaults=True):
    """Body of the replay resource."""

    replay_id: str
    state: State
    selection: str
    scope: str
    actor: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    phase: str | None = None
    done: int = 0
    total: int = 0
    summary: Summary | None = None
    passed: bool | None = None
    report_object_key: str | None = None
    report_sha256: str | None = None
    html_object_key: str | None = None
    replay_chain: str | None = None
    evidence_seq: int | None = None
    signed_by: str | None = None
    error: str | None = None


class ReplayRequestError(ServiceError, ValueError):
    """The request cannot start a replay; ``field`` and ``rule`` name what is wrong."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field, self.rule = field, rule


class UnknownReplay(ServiceError):
    """No replay with this id (or none the asking key may read: the same answer, so ids cannot be probed)."""

    def __init__(self, replay_id: str, detail: str | None = None) -> None:
        super().__init__(detail or f"no replay {replay_id!r}")
        self.replay_id = replay_id


class ReplayBusy(ServiceError, RuntimeError):
    """The bounded replay queue is full (or the service is stopping); try again after ``retry_after_s``."""

    def __init__(self, detail: str, retry_after_s: int = 60) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class ReplayService:
    """Runs replays in the background and keeps their status (finished ones also on disk)."""

    def __init__(
        self,
        store_url: str | None = None,
        *,
        replay_chain: str = DEFAULT_REPLAY_CHAIN,
        workers: int | None = None,
        max_queued: int = 8,
        signer: Any = None,
        keyring: Any = None,
        trust: Any = None,
        root: Any = None,
        personal: Any = None,
    ) -> None:
        self.store_url = configured(store_url)
        self.personal = personal  # audit.personal_data.PersonalData: opens sealed decisions (spec §3a)
        self.replay_chain = check_chain_id(replay_chain)
        self.workers, self.max_queued, self.signer, self.keyring = workers, max_queued, signer, keyring
        self.trust, self.root = trust, root  # audit.trust.TrustPolicy / RootKey: verify against, certify with
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix="verdict-replay"
        )  # one at a time: one chain writer, the CPUs
        self._pool = None  # replay.batch.WorkerPool, when workers are used
        self._lock = threading.Lock()
        self._status: dict[str, ReplayStatus] = {}
        self._stops: dict[str, threading.Event] = {}
        self._html: dict[str, str] = {}
        self._closed = False

    # -- the two calls the HTTP layer makes ----------------------------------------------------

    def start_replay(self, request: ReplayRequest, actor_key_id: str) -> ReplayStatus:
        """Validate, queue and return the new replay's status (state "queued")."""
        job = self._job(request, actor_key_id)
        with self._lock:
            if self._closed:
                raise ReplayBusy("the replay service is shutting down")
            active = sum(s.state in ("queued", "running") for s in self._status.values())
            if active >= self.max_queued:
                raise ReplayBusy(f"{active} replays are queued or running; try again later")
            replay_id = new_replay_id()
            status = ReplayStatus(
                replay_id=replay_id,
                state="queued",
                selection=job.selection.describe(),
                scope=job.options.scope,
                actor=actor_key_id,
                created_at=utc_now(),
                replay_chain=self.replay_chain,
            )
            self._status[replay_id] = status
            self._stops[replay_id] = threading.Event()
            queued = self._copy(status)
        self._thread.submit(self._run, replay_id, job)
        return queued

    def replay_status(self, replay_id: str) -> ReplayStatus:
        with self._lock:
            status = self._status.get(replay_id)
            if status is not None:
                return self._copy(status)
        return self._from_disk(replay_id)

    def statuses(self, limit: int = 20) -> list[ReplayStatus]:
        """The newest ``limit`` replays, this process's and earlier ones' from their
        directories (newest first): the console lists them."""
        with self._lock:
            found = {s.replay_id: self._copy(s) for s in self._status.values()}
        try:
            earlier = sorted((p.name for p in replays_dir().iterdir() if p.name not in found), reverse=True)
        except OSError:
            earlier = []
        for replay_id in earlier[: max(0, limit - len(found))]:
            with contextlib.suppress(UnknownReplay):
                found[replay_id] = self._from_disk(replay_id)
        return sorted(found.values(), key=lambda s: s.created_at, reverse=True)[:limit]

    # -- reports ---------------------------------------------------------------------------------------

    def report_json(self, replay_id: str) -> bytes | None:
        """The signed report envelope as stored in the trail (None until finished)."""
        status = self.replay_status(replay_id)
        if status.report_object_key is None:
            return None

        return open_store(self.store_url).get(status.report_object_key)

    def report_html(self, replay_id: str) -> str | None:
        status = self.replay_status(replay_id)
        if replay_id in self._html:
            return self._html[replay_id]
        if status.html_object_key is None:
            return None

        return open_store(self.store_url).get(status.html_object_key).decode("utf-8")

    def cancel(self, replay_id: str) -> ReplayStatus:
        """Stop a queued or running replay after its current chunk (it can be resumed from the CLI)."""
        self.replay_status(replay_id)
        event = self._stops.get(replay_id)
        if event is not None:
            event.set()
        return self.replay_status(replay_id)

    def wait(self, replay_id: str, timeout: float = 600.0) -> ReplayStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.replay_status(replay_id)
            if status.state in ("finished", "failed", "interrupted") or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def close(self) -> None:
        """Stop accepting replays, ask running ones to stop, wait for the thread and the workers."""
        with self._lock:
            self._closed = True
            for event in self._stops.values():
                event.set()
        self._thread.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _worker_pool(self):  # noqa: ANN202 - WorkerPool | None
        """Worker processes kept across replays (models stay loaded; their bytes are
        re-verified by every replay), started on the first replay that wants them."""
        if not self.workers:
            return None
        if self._pool is None:
            self._pool = WorkerPool(self.store_url, self.workers)
        return self._pool

    # -- internals ----------------------------------------------------------------------------------------

    def _job(self, request: ReplayRequest, actor: str) -> ReplayJob:
        ids = list(request.request_ids)
        if request.request_id:
            ids.insert(0, request.request_id)
        name = version = None
        if request.model is not None:
            name, _, version = request.model.partition(":")
            if not NAME_RE.fullmatch(name) or (":" in request.model and not VERSION_RE.fullmatch(version)):
                raise ReplayRequestError(
                    "model",
                    "format",
                    f"model {request.model!r} must be NAME or NAME:VERSION "
                    f"(NAME: {NAME_RE.pattern}, VERSION: {VERSION_RE.pattern})",
                )
        if request.chain is not None:
            try:
                check_chain_id(request.chain)
            except LayoutError as exc:
                raise ReplayRequestError("chain", "format", str(exc)) from None
        try:
            since = parse_time_bound(request.since, "since")
        except SelectionError as exc:
            raise ReplayRequestError("since", "format", str(exc)) from None
        try:
            until = parse_time_bound(request.until, "until")
        except SelectionError as exc:
            raise ReplayRequestError("until", "format", str(exc)) from None
        try:
            selection = Selection(
                request_ids=ids,
                since=since,
                until=until,
                model=name,
                version=version or None,
                chain=request.chain,
                all=request.all,
            ).check()
        except SelectionError as exc:
            raise ReplayRequestError("request_id" if ids else "all", "selection", str(exc)) from None
        self._check_tighten(request, name, version or None)
        options = ReplayOptions(
            scope=request.scope, tighten_absolute=request.tighten_absolute, tighten_relative=request.tighten_relative
        )
        return ReplayJob(
            store_url=self.store_url,
            selection=selection,
            options=options,
            require_checkpoint=request.require_checkpoint,
            actor=actor,
            purpose=request.purpose,
            replay_chain=self.replay_chain,
            workers=self.workers,
            trust=self.trust,
        )

    def _check_tighten(self, request: ReplayRequest, name: str | None, version: str | None) -> None:
        """Refuse a widening tolerance up front against every manifest it could meet
        (run_replay checks again against the models actually selected)."""
        if request.tighten_absolute is None and request.tighten_relative is None:
            return

        registry = Registry(open_store(self.store_url))
        names = [name] if name else registry.names()
        for n in names:
            for v in [version] if version else registry.versions(n):
                try:
                    manifest = registry.manifest(n, v)
                except Exception as exc:  # noqa: BLE001 - unknown models are reported by the replay itself
                    _log.debug("tolerance of %s:%s not checked up front: %s", n, v, exc)
                    continue
                try:
                    effective_tolerance(
                        Tolerance(manifest.tolerance.absolute, manifest.tolerance.relative),
                        request.tighten_absolute,
                        request.tighten_relative,
                        model=manifest.ref,
                    )
                except ToleranceError as exc:
                    field = "tighten_absolute" if "absolute" in str(exc) else "tighten_relative"
                    raise ReplayRequestError(field, "may_only_tighten", str(exc)) from None

    def _update(self, replay_id: str, **changes: Any) -> None:
        with self._lock:
            status = self._status[replay_id]
            for key, value in changes.items():
                setattr(status, key, value)

    def _run(self, replay_id: str, job: ReplayJob) -> None:
        stop = self._stops[replay_id]
        if stop.is_set():
            self._update(replay_id, state="interrupted", finished_at=utc_now(), error="cancelled before it started")
            return
        self._update(replay_id, state="running", started_at=utc_now())

        def progress(phase: str, done: int, total: int) -> None:
            if not phase.startswith("rebuild:"):
                self._update(replay_id, phase=phase, done=done, total=total)

        try:
            outcome = run_replay(
                job,
                replay_id=replay_id,
                progress=progress,
                stop=stop,
                signer=self.signer,
                keyring=self.keyring,
                root=self.root,
                pool=self._worker_pool(),
                personal=self.personal,
            )
        except ReplayInterrupted as exc:
            self._update(replay_id, state="interrupted", finished_at=utc_now(), error=str(exc))
            return
        except ReplayError as exc:
            self._update(replay_id, state="failed", finished_at=utc_now(), error=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a failed replay is reported, never lost
            if isinstance(exc, BrokenExecutor) and self._pool is not None:
                self._pool.close(wait=False)
                self._pool = None  # a worker died: the next replay starts fresh ones
            self._update(replay_id, state="failed", finished_at=utc_now(), error=f"{type(exc).__name__}: {exc}")
            return
        stored = outcome.stored
        self._html[replay_id] = outcome.html
        self._update(
            replay_id,
            state="finished",
            finished_at=utc_now(),
            summary=outcome.report.summary,
            passed=outcome.report.summary.passed,
            report_object_key=stored.object_key if stored else None,
            report_sha256=stored.sha256 if stored else None,
            html_object_key=stored.html_key if stored else None,
            evidence_seq=stored.evidence_seq if stored else None,
            signed_by=stored.key_id if stored else None,
        )

    @staticmethod
    def _copy(status: ReplayStatus) -> ReplayStatus:
        return msgspec.structs.replace(status)

    def _from_disk(self, replay_id: str) -> ReplayStatus:
        """A replay of an earlier process (or the CLI) from its directory."""
        if not re.fullmatch(r"rpl-[0-9TZ]+-[0-9a-f]{8}", replay_id):
            raise UnknownReplay(replay_id)
        directory = replays_dir() / replay_id
        try:
            saved = msgspec.json.decode((directory / "job.json").read_bytes())
        except (OSError, msgspec.DecodeError):
            raise UnknownReplay(replay_id) from None
        job = saved.get("job", {})
        base: dict[str, Any] = {
            "replay_id": replay_id,
            "selection": msgspec.convert(job.get("selection", {}), Selection).describe(),
            "scope": job.get("options", {}).get("scope", "full"),
            "actor": job.get("actor", "?"),
            "created_at": saved.get("started_at", ""),
            "replay_chain": job.get("replay_chain"),
            "total": len(saved.get("targets", [])),
        }
        try:
            done = msgspec.json.decode((directory / "done.json").read_bytes())
        except (OSError, msgspec.DecodeError):
            return ReplayStatus(
                state="interrupted",
                error=f"not finished by the process that ran it; resume it with `verdict replay --resume {replay_id}`",
                **base,
            )
        summary = msgspec.convert(done.get("summary"), Summary) if done.get("summary") else None
        key = done.get("report")
        return ReplayStatus(
            state="finished",
            summary=summary,
            passed=summary.passed if summary else None,
            report_object_key=key,
            report_sha256=key.rsplit("/", 1)[-1] if key else None,
            html_object_key=done.get("html"),
            done=base["total"],
            **base,
        )


_default: ReplayService | None = None
_default_lock = threading.Lock()


def default_service() -> ReplayService:
    """A process-wide service on the configured store (VERDICT_STORE / VERDICT_HOME)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ReplayService()
        return _default


def start_replay(request: ReplayRequest, actor_key_id: str, service: ReplayService | None = None) -> ReplayStatus:
    return (service or default_service()).start_replay(request, actor_key_id)


def replay_status(replay_id: str, service: ReplayService | None = None) -> ReplayStatus:
    return (service or default_service()).replay_status(replay_id)

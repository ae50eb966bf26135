"""The one decision pipeline, and the one cache of loaded models and explainers.

Why one: the gateway decides with this code and replay re-runs this very code
to prove a logged decision. If replay assembled its own pipeline (its own
loading, scoring, explaining, reasons), a replay would only prove that two
copies agree, not that the decision can be reproduced (design.md, "Replay").
So both call:

* :class:`Engine` to get a loaded runtime (gateway.model_runtime.ModelRuntime)
  and an explainer at a given explain bucket, from one process-wide cache keyed
  by everything that decides their bits;
* :func:`decide_rows` to turn validated rows into scored, explained, decided and
  worded outcomes at a given score bucket and explain bucket;
* :func:`decision_body` (gateway only) to put one outcome on an audit record.

Why one model can never take the others down (design.md, "Isolation"): the
serving path (:meth:`Engine.loaded`) remembers a version that fails to load,
whatever the reason, as unready by name and answers requests for it with
ModelUnavailable until a retry (at most every ``load_retry_s``) loads it;
other versions are untouched. A revoked version never serves, but replay
(which uses :meth:`Engine.runtime` and :meth:`Engine.explainer`, not
``loaded``) still re-runs its decisions. And :func:`decide_rows` refuses a
score outside the manifest's output space before anything is explained or
recorded.

A new kind of model is a class implementing the runtime protocol, passed as
``kind``; nothing here knows torch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from verdict.audit import records as rec
from verdict.audit.stores import StoreError
from verdict.gateway import determinism
from verdict.gateway.explanation import AdditivityError, Explainer, ExplanationResult
from verdict.gateway.fidelity import to_record
from verdict.gateway.manifest import Manifest, ManifestError
from verdict.gateway.model_runtime import ModelRuntime
from verdict.gateway.reasons import Reason, reasons
from verdict.gateway.registry import (
    NoProductionVersion,
    Registry,
    RegistryError,
    StatusEvent,
    TamperedBlob,
    UnknownModel,
    VersionRevoked,
)
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.schema import encode_rows
from verdict.gateway.service_errors import (
    ModelNotPromoted,
    ModelOutputInvalid,
    ModelUnavailable,
    ModelVersionRevoked,
    ServiceError,
)

__all__ = [
    "ALIAS_TTL_S",
    "LOAD_RETRY_S",
    "Decided",
    "Engine",
    "ExplainKey",
    "LoadFailure",
    "LoadKey",
    "LoadedVersion",
    "Outcome",
    "RuntimeCache",
    "check_outputs",
    "decide_rows",
    "decision_body",
]

_log = logging.getLogger(__name__)

ALIAS_TTL_S = 5.0
"""How long a resolved production alias (and a version's revocation status) is
trusted: a promotion or a revocation takes effect without a restart, and a
request does not pay a store read."""

LOAD_RETRY_S = 30.0
"""How long a version that failed to load stays unready before the next attempt.
Why retry at all: a store that did not answer for a moment must not make a model
unready for the life of the process; a deterministic failure (a broken
artifact) just fails again, at the cost of one attempt per interval."""

_REASON_CHARS = 600

Additivity = Literal["fail", "flag"]


# -- the cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadKey:
    """What decides a loaded runtime's bits: the runtime kind, the artifact's bytes
    (by sha256; name and version for messages and listing), the device and dtype."""

    kind: str
    name: str
    version: str
    artifact_sha256: str
    device: str
    dtype: str


@dataclass(frozen=True)
class ExplainKey:
    """What decides an explainer's bits besides its runtime: the background bytes, the
    explain bucket its evaluations (and its cached base value) run at, the thread count."""

    runtime: LoadKey
    background_sha256: str
    explain_bucket: int
    threads: int


def _kind_name(kind: type[ModelRuntime]) -> str:
    return str(getattr(kind, "kind", f"{kind.__module__}.{kind.__qualname__}"))


class RuntimeCache:
    """Loaded runtimes and explainers of this process.

    Why process-wide: loading an artifact (torch.export) takes about a second and
    building an explainer evaluates the whole background; the gateway's requests,
    every replay in a worker process and an in-process replay beside the gateway
    all reuse them. Safe to share across stores because the key holds the sha256
    of the bytes, checked here before anything is loaded; callers still decide
    how often the store's bytes are re-verified (a replay does it once per replay).
    """

    def __init__(self) -> None:
        self._runtimes: dict[LoadKey, ModelRuntime] = {}
        self._explainers: dict[ExplainKey, Explainer] = {}
        self._lock = threading.Lock()

    def runtime(
        self, key: LoadKey, kind: type[ModelRuntime], manifest: Manifest, artifact: Callable[[], bytes]
    ) -> ModelRuntime:
        """The runtime for ``key``, loading ``artifact()`` (called only on a miss) with ``kind``."""
        with self._lock:
            found = self._runtimes.get(key)
            if found is None:
                data = artifact()
                actual = hashlib.sha256(data).hexdigest()
                if actual != key.artifact_sha256:
                    raise TamperedBlob(
                        f"artifact of {key.name}:{key.version} hashes to {actual}, not {key.artifact_sha256}; "
                        f"refusing to load it"
                    )
                found = self._runtimes[key] = kind.load(manifest, data, key.device)
            return found

    def explainer(self, key: ExplainKey, runtime: ModelRuntime, background: Callable[[], bytes]) -> Explainer:
        """The explainer for ``key``, built over ``background()`` (called only on a miss)."""
        with self._lock:
            found = self._explainers.get(key)
            if found is None:
                found = self._explainers[key] = Explainer(runtime, background(), explain_bucket=key.explain_bucket)
            return found


_CACHE = RuntimeCache()


@dataclass(frozen=True)
class LoadedVersion:
    """A model version ready to serve: its runtime, its explainer at the manifest's
    explain bucket, and the manifest hash every decision pins (audit-format §3)."""

    runtime: ModelRuntime
    explainer: Explainer
    manifest_sha256: str | None = None


@dataclass(frozen=True)
class LoadFailure:
    """Why a version could not be loaded on this replica, when that was last tried
    (``time.monotonic()``), and how many attempts have failed in a row."""

    reason: str
    at: float
    attempts: int


@dataclass(frozen=True)
class _Route:
    """What the production alias of a model says, as cached: a version, a revoked one,
    or no promoted version at all (the registry's words)."""

    version: str | None = None
    revoked: StatusEvent | None = None
    not_promoted: str | None = None


def _revoked(event: StatusEvent) -> ModelVersionRevoked:
    return ModelVersionRevoked(event.name, event.version, event.by, event.at, event.note)


class Engine:
    """Models of one registry, loaded through the process-wide cache.

    The gateway holds one (it is the gateway's model cache: aliases, manifests,
    loaded versions, and the versions that failed to load); replay makes one per
    replay over the store it replays. ``device``: the device policy (``cpu``,
    ``cuda``, ``auto``; None: $VERDICT_DEVICE or auto). ``kind``: the ModelRuntime
    class that loads this registry's artifacts. ``load_retry_s``: how long a version
    that failed to load is refused before it is tried again. ``on_load_failure``:
    called with (name, version, reason) after every failed attempt (metrics).
    """

    def __init__(
        self,
        registry: Registry,
        device: str | None = None,
        *,
        kind: type[ModelRuntime] = LoadedModel,
        cache: RuntimeCache | None = None,
        load_retry_s: float = LOAD_RETRY_S,
        on_load_failure: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.kind = kind
        self.load_retry_s = load_retry_s
        self._device = device
        self._cache = _CACHE if cache is None else cache
        self._on_load_failure = on_load_failure
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._aliases: dict[str, tuple[float, _Route]] = {}
        self._revocations: dict[tuple[str, str], tuple[float, StatusEvent | None]] = {}
        self._loaded: dict[tuple[str, str], LoadedVersion] = {}
        self._failures: dict[tuple[str, str], LoadFailure] = {}
        self._lock = threading.Lock()

    # -- versions and manifests ------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> str:
        """``version``, or (None) the version the production alias points at. Raises
        ModelNotPromoted (no production version: requests must pin one) and
        ModelVersionRevoked (the alias points at a revoked version); both are cached
        like the alias itself."""
        if version is not None:
            return version
        cached = self._aliases.get(name)
        if cached is None or time.monotonic() - cached[0] >= ALIAS_TTL_S:
            try:
                route = _Route(version=self.registry.resolve_default_version(name))
            except VersionRevoked as exc:
                route = _Route(revoked=exc.event)
            except NoProductionVersion as exc:
                route = _Route(not_promoted=str(exc))
            cached = self._aliases[name] = (time.monotonic(), route)
        route = cached[1]
        if route.revoked is not None:
            raise _revoked(route.revoked)
        if route.not_promoted is not None:
            raise ModelNotPromoted(name, route.not_promoted)
        assert route.version is not None
        return route.version

    def revocation(self, name: str, version: str) -> StatusEvent | None:
        """The version's revocation event (None: it may serve), read at most every
        ALIAS_TTL_S; a revocation is final, so once seen it is kept."""
        key = (name, version)
        cached = self._revocations.get(key)
        if cached is not None and (cached[1] is not None or time.monotonic() - cached[0] < ALIAS_TTL_S):
            return cached[1]
        event = self.registry.revocation(name, version)
        self._revocations[key] = (time.monotonic(), event)
        return event

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        """A version's manifest (None: the production version's), revoked or not (a logged
        decision's explanation needs it). A stored manifest that no longer decodes makes
        the version unready: ModelUnavailable."""
        version = self.resolve(name, version)
        key = (name, version)
        found = self._manifests.get(key)
        if found is None:
            try:
                found = self.registry.manifest(name, version)
            except ManifestError as exc:
                raise self._failed(key, exc) from None
            self._manifests[key] = found
        return found

    def serving_manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of the version a decision request is served by, refusing up front
        what :meth:`loaded` would refuse: a revoked version (ModelVersionRevoked), one that
        failed to load and is not due for a retry (ModelUnavailable)."""
        version = self.resolve(name, version)
        event = self.revocation(name, version)
        if event is not None:
            raise _revoked(event)
        self._refuse_unready((name, version))
        return self.manifest(name, version)

    # -- loading -------------------------------------------------------------------------------
    def resolve_device(self, policy: str | None = None) -> str:
        """The device a policy means on this machine (``policy`` None: this engine's)."""
        return str(determinism.select_device(self._device if policy is None else policy))

    def _load_key(self, manifest: Manifest, device: str) -> LoadKey:
        return LoadKey(
            kind=_kind_name(self.kind),
            name=manifest.name,
            version=manifest.version,
            artifact_sha256=manifest.artifact_sha256,
            device=device,
            dtype=manifest.runtime.dtype,
        )

    def runtime(self, manifest: Manifest, device: str | None = None, *, artifact: bytes | None = None) -> ModelRuntime:
        """``manifest``'s runtime on ``device`` (a policy; None: this engine's). ``artifact``:
        bytes the caller has just verified (else the registry reads and verifies them on a miss)."""
        key = self._load_key(manifest, self.resolve_device(device))
        load = (lambda: artifact) if artifact is not None else (lambda: self.registry.artifact(manifest))
        return self._cache.runtime(key, self.kind, manifest, load)

    def explainer(
        self,
        runtime: ModelRuntime,
        explain_bucket: int | None = None,
        threads: int | None = None,
        *,
        background: bytes | None = None,
    ) -> Explainer:
        """The explainer of ``runtime`` at ``explain_bucket`` (None: the manifest's), for a
        process running ``threads`` (None: the manifest's). ``background``: bytes the
        caller has just verified (else the registry reads and verifies them on a miss)."""
        manifest = runtime.manifest
        key = ExplainKey(
            runtime=self._load_key(manifest, str(runtime.device)),
            background_sha256=manifest.explainer.background_sha256,
            explain_bucket=manifest.runtime.explain_bucket if explain_bucket is None else explain_bucket,
            threads=manifest.runtime.threads if threads is None else threads,
        )
        load = (lambda: background) if background is not None else (lambda: self.registry.background(manifest))
        return self._cache.explainer(key, runtime, load)

    def loaded(self, name: str, version: str) -> LoadedVersion:
        """A version as the gateway serves it, loaded on first use (the serving path only:
        replay loads through :meth:`runtime` and :meth:`explainer`, revoked or not).

        Raises ModelVersionRevoked for a revoked version; ModelUnavailable when the
        version cannot be loaded (remembered: :meth:`unready`; tried again at most every
        ``load_retry_s``); UnknownModel when no such version is registered."""
        key = (name, version)
        event = self.revocation(name, version)
        if event is not None:
            self._failures.pop(key, None)  # it will not serve again: not "unready"
            raise _revoked(event)
        found = self._loaded.get(key)
        if found is not None:  # no lock: a version loading for another request never holds this one up
            return found
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            self._refuse_unready(key)
            try:
                manifest = self.manifest(name, version)
                runtime = self.runtime(manifest)
                explainer = self.explainer(runtime)
                # Hashed once per loaded version; the object is write-once, so it is the
                # manifest the model was just loaded from.
                manifest_sha256 = self.registry.manifest_sha256(name, version)
            except (UnknownModel, ServiceError):
                raise  # nothing registered under that name (not a load failure), or already recorded
            except Exception as exc:  # whatever stops this version stops only this version
                raise self._failed(key, exc) from exc
            self._failures.pop(key, None)
            found = self._loaded[key] = LoadedVersion(runtime, explainer, manifest_sha256)
            return found

    def _refuse_unready(self, key: tuple[str, str]) -> None:
        """ModelUnavailable if ``key`` failed to load less than ``load_retry_s`` ago."""
        failure = self._failures.get(key)
        if failure is not None:
            wait = failure.at + self.load_retry_s - time.monotonic()
            if wait > 0:
                raise ModelUnavailable(key[0], key[1], failure.reason, max(1, math.ceil(wait)))

    def _failed(self, key: tuple[str, str], exc: BaseException) -> ModelUnavailable:
        """Remember that ``key`` failed to load, say so (an ERROR line when the reason is
        new), and return the error its requests get until a retry loads it."""
        name, version = key
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        # The store's URL (a path, a bucket) is for operators, not for every API client.
        reason = re.sub(rf"(?:the store )?{re.escape(self.registry.store.url)}", "the model store", text)[
            :_REASON_CHARS
        ]
        previous = self._failures.get(key)
        self._failures[key] = LoadFailure(reason, time.monotonic(), 1 + (previous.attempts if previous else 0))
        if previous is None or previous.reason != reason:
            _log.error(
                "model %s version %s cannot be served, other models are unaffected: %s (tried again at most every %gs)",
                name,
                version,
                reason,
                self.load_retry_s,
            )
        if self._on_load_failure is not None:
            self._on_load_failure(name, version, reason)
        return ModelUnavailable(name, version, reason, max(1, math.ceil(self.load_retry_s)))

    def unready(self) -> dict[str, str]:
        """``{"name:version": reason}`` of every version this engine failed to load and has
        not loaded since (a revoked one is dropped: it will not serve again)."""
        return {f"{name}:{version}": failure.reason for (name, version), failure in sorted(self._failures.items())}

    def failures(self) -> dict[tuple[str, str], LoadFailure]:
        return dict(self._failures)

    def retry_unready(self) -> list[tuple[str, str]]:
        """Try again to load each unready version that is due and that the production
        alias still points at (a revoked one is forgotten); returns those now loaded. Why not wait for a request: a
        replica whose only model failed at start-up is not ready, so no request would
        ever come to retry it. A version only pinned requests use is retried by them."""
        recovered = []
        for (name, version), failure in sorted(self._failures.items()):
            if time.monotonic() - failure.at < self.load_retry_s:
                continue
            try:
                if self.revocation(name, version) is not None:
                    self._failures.pop((name, version), None)  # it will not serve again: not "unready"
                    continue
                if self.resolve(name, None) != version:
                    continue
                self.loaded(name, version)
            except (ServiceError, RegistryError, StoreError) as exc:
                _log.debug("model %s version %s still not loaded: %s", name, version, exc)  # _failed said why
                continue
            recovered.append((name, version))
        return recovered

    def loaded_versions(self) -> list[tuple[str, str]]:
        return sorted(self._loaded)

    def device(self) -> str:
        """The device models run on (the one the environment manifest records)."""
        for loaded in self._loaded.values():
            return str(loaded.runtime.device)
        return self.resolve_device()


# -- the pipeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One row through the pipeline: what a decision record holds, and (replay only,
    ``additivity="flag"``) why its explanation cannot be trusted."""

    score: float
    decision: str
    explanation: ExplanationResult | None
    reasons: list[Reason] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class Decided:
    """Outcomes in row order, with the buckets they were computed at (they go on the record)."""

    outcomes: list[Outcome]
    score_bucket: int
    explain_bucket: int | None
    """None when no row was explained."""


def decide_rows(
    runtime: ModelRuntime,
    rows: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    *,
    score_bucket: int | None = None,
    explainer: Explainer | None = None,
    explain: Sequence[bool] | None = None,
    additivity: Additivity = "fail",
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> Decided:
    """Score validated attribute ``rows`` at ``score_bucket`` (None: the manifest's),
    explain them with ``explainer`` (at its explain bucket; None: not explained;
    ``explain``: which rows, default all) seeded by ``seeds``, decide and word the
    principal reasons.

    ``additivity``: "fail" raises AdditivityError if any explanation does not add up to
    its score (the gateway fails closed); "flag" explains the others anyway and gives
    the failing row its raw contributions and a ``problem`` (replay judges it).

    Raises ModelOutputInvalid, before anything is explained, if a score is outside the
    manifest's output space (:func:`check_outputs`).

    ``stage``: wraps the ``"score"`` and ``"explain"`` steps (the gateway times them and
    opens a span for each); None: nothing around them."""
    manifest = runtime.manifest
    timed = stage if stage is not None else _untimed
    with timed("score"):
        x = encode_rows(manifest.inputs, rows)
        scores, used = runtime.score_matrix(x, manifest.runtime.score_bucket if score_bucket is None else score_bucket)
    check_outputs(manifest, scores)
    explanations: list[ExplanationResult | None] = [None] * len(rows)
    problems: list[str | None] = [None] * len(rows)
    wanted = [] if explainer is None else [k for k in range(len(rows)) if explain is None or explain[k]]
    explain_bucket: int | None = None
    if explainer is not None and wanted:
        subset = wanted if len(wanted) < len(rows) else slice(None)
        with timed("explain"):
            got, issues = _explain(explainer, x[subset], scores[subset], [int(seeds[k]) for k in wanted], additivity)
        for k, explained, issue in zip(wanted, got, issues, strict=True):
            explanations[k], problems[k] = explained, issue
        explain_bucket = explainer.explain_bucket
    outcomes = []
    for k, row in enumerate(rows):
        score, result = float(scores[k]), explanations[k]
        worded = [] if result is None else reasons(manifest, row, result, top=manifest.explainer.top_reasons)
        outcomes.append(Outcome(score, runtime.decide(score), result, worded, problems[k]))
    return Decided(outcomes, used, explain_bucket)


def _untimed(_: str) -> AbstractContextManager[object]:
    return nullcontext()


def check_outputs(manifest: Manifest, scores: np.ndarray) -> None:
    """Fail closed on a score outside the manifest's output space: a ``probability``
    outside [0, 1], NaN or infinity in any space. Why here, in the one pipeline: a
    logits model registered as a probability model would otherwise be decided,
    explained, signed and served ("score": 6.1); raising before the record exists
    means nothing is written. Raises ModelOutputInvalid naming every such row."""
    space = manifest.output.space
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(scores)
        if space == "probability":
            valid &= (scores >= 0.0) & (scores <= 1.0)
    if not valid.all():
        rows = [(int(k), float(scores[k])) for k in np.flatnonzero(~valid)]
        raise ModelOutputInvalid(manifest.name, manifest.version, space, rows)


def _explain(
    explainer: Explainer, x: np.ndarray, scores: np.ndarray, seeds: list[int], additivity: Additivity
) -> tuple[list[ExplanationResult], list[str | None]]:
    try:
        return explainer.explain(x, scores, seeds), [None] * len(seeds)
    except AdditivityError:
        if additivity == "fail":
            raise
    results: list[ExplanationResult] = []
    problems: list[str | None] = []
    for k in range(len(seeds)):
        try:
            results += explainer.explain(x[k : k + 1], scores[k : k + 1], seeds[k : k + 1])
            problems.append(None)
        except AdditivityError as exc:
            phi, fidelity = explainer.estimate(x[k : k + 1], seeds[k : k + 1])
            results.append(
                ExplanationResult(
                    method=explainer.method,
                    output_space=explainer.manifest.explainer.output_space,
                    base_value=explainer.base_value,
                    contributions=dict(zip(explainer.names, (float(v) for v in phi[0]), strict=True)),
                    seed=seeds[k],
                    evaluations=fidelity[0].evaluations,
                    bucket=explainer.explain_bucket,
                    additivity_error=abs(exc.total - exc.score),
                    fidelity=fidelity[0],
                )
            )
            problems.append(
                f"the replayed explanation does not add up to the replayed score "
                f"(|difference| {abs(exc.total - exc.score)!r} > epsilon {exc.epsilon!r})"
            )
    return results, problems


# -- the record ----------------------------------------------------------------------------


class Request(Protocol):
    """What a decision record needs to know about the request (gateway.decisions.PendingDecision).

    Read-only properties: a frozen dataclass (or any object with these attributes) matches."""

    @property
    def request_id(self) -> str: ...
    @property
    def subject_id(self) -> str | None: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...
    @property
    def request_sha256(self) -> str: ...
    @property
    def received_at(self) -> str: ...


def decision_body(
    request: Request,
    runtime: ModelRuntime,
    outcome: Outcome,
    decided: Decided,
    *,
    decided_at: str,
    environment_sha256: str,
    manifest_sha256: str | None,
) -> rec.DecisionBody:
    """The audit record body of one outcome (audit-format §3 ``decision``): the score
    bucket and, for an explained decision, the explain bucket go on ``runtime`` and its
    fidelity on ``explanation``; a decision made without an explanation says so with
    ``rec.NOT_EXPLAINED``."""
    manifest = runtime.manifest
    result = outcome.explanation
    if result is None:
        explanation = rec.Explanation(
            method=rec.NOT_EXPLAINED, output_space=manifest.output.space, base_value=0.0, contributions={}, seed=0
        )
    else:
        explanation = rec.Explanation(
            method=result.method,
            output_space=result.output_space,
            base_value=result.base_value,
            contributions=dict(result.contributions),
            seed=result.seed,
            budget={"evaluations": result.evaluations},
            additivity_error=result.additivity_error,
            fidelity=to_record(result.fidelity),
        )
    return rec.DecisionBody(
        request_id=request.request_id,
        request_sha256=request.request_sha256,
        received_at=request.received_at,
        decided_at=decided_at,
        model=rec.ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.artifact_sha256),
        environment_sha256=environment_sha256,
        runtime=rec.Runtime(
            device=str(runtime.device),
            dtype=manifest.runtime.dtype,
            bucket=decided.score_bucket,
            threads=manifest.runtime.threads,
            explain_bucket=None if result is None else result.bucket,
        ),
        inputs=rec.PlainInputs(attributes=dict(request.attributes)),
        score=outcome.score,
        decision=outcome.decision,
        explanation=explanation,
        reasons=[
            rec.Reason(attribute=r.attribute, label=r.label, value=r.value, direction=r.direction, text=r.text)
            for r in outcome.reasons
        ],
        subject_id=request.subject_id,
        manifest_sha256=manifest_sha256,
    )

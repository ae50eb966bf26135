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

A new kind of model is a class implementing the runtime protocol, passed as
``kind``; nothing here knows torch.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from verdict.audit import records as rec
from verdict.gateway import determinism
from verdict.gateway.explanation import AdditivityError, Explainer, ExplanationResult
from verdict.gateway.manifest import Manifest
from verdict.gateway.model_runtime import ModelRuntime
from verdict.gateway.reasons import Reason, reasons
from verdict.gateway.registry import Registry, TamperedBlob
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.schema import encode_rows

__all__ = [
    "ALIAS_TTL_S",
    "Decided",
    "Engine",
    "ExplainKey",
    "LoadKey",
    "LoadedVersion",
    "Outcome",
    "RuntimeCache",
    "decide_rows",
    "decision_body",
]

ALIAS_TTL_S = 5.0
"""How long a resolved production alias is trusted: a promotion takes effect
without a restart, and a request does not pay a store read."""

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


class Engine:
    """Models of one registry, loaded through the process-wide cache.

    The gateway holds one (it is the gateway's model cache: aliases, manifests,
    loaded versions); replay makes one per replay over the store it replays.
    ``device``: the device policy (``cpu``, ``cuda``, ``auto``; None: $VERDICT_DEVICE
    or auto). ``kind``: the ModelRuntime class that loads this registry's artifacts.
    """

    def __init__(
        self,
        registry: Registry,
        device: str | None = None,
        *,
        kind: type[ModelRuntime] = LoadedModel,
        cache: RuntimeCache | None = None,
    ) -> None:
        self.registry = registry
        self.kind = kind
        self._device = device
        self._cache = _CACHE if cache is None else cache
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._aliases: dict[str, tuple[float, str]] = {}
        self._loaded: dict[tuple[str, str], LoadedVersion] = {}
        self._lock = threading.Lock()

    # -- versions and manifests ------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> str:
        if version is not None:
            return version
        cached = self._aliases.get(name)
        if cached and time.monotonic() - cached[0] < ALIAS_TTL_S:
            return cached[1]
        resolved = self.registry.resolve_default_version(name)
        self._aliases[name] = (time.monotonic(), resolved)
        return resolved

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        version = self.resolve(name, version)
        key = (name, version)
        if key not in self._manifests:
            self._manifests[key] = self.registry.manifest(name, version)
        return self._manifests[key]

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
        """A version as the gateway serves it, loaded on first use."""
        key = (name, version)
        with self._lock:
            if key not in self._loaded:
                manifest = self.manifest(name, version)
                runtime = self.runtime(manifest)
                explainer = self.explainer(runtime)
                # Hashed once per loaded version; the object is write-once, so it is the
                # manifest the model was just loaded from.
                self._loaded[key] = LoadedVersion(runtime, explainer, self.registry.manifest_sha256(name, version))
            return self._loaded[key]

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
) -> Decided:
    """Score validated attribute ``rows`` at ``score_bucket`` (None: the manifest's),
    explain them with ``explainer`` (at its explain bucket; None: not explained;
    ``explain``: which rows, default all) seeded by ``seeds``, decide and word the
    principal reasons.

    ``additivity``: "fail" raises AdditivityError if any explanation does not add up to
    its score (the gateway fails closed); "flag" explains the others anyway and gives
    the failing row its raw contributions and a ``problem`` (replay judges it)."""
    manifest = runtime.manifest
    x = encode_rows(manifest.inputs, rows)
    scores, used = runtime.score_matrix(x, manifest.runtime.score_bucket if score_bucket is None else score_bucket)
    explanations: list[ExplanationResult | None] = [None] * len(rows)
    problems: list[str | None] = [None] * len(rows)
    wanted = [] if explainer is None else [k for k in range(len(rows)) if explain is None or explain[k]]
    explain_bucket: int | None = None
    if explainer is not None and wanted:
        subset = wanted if len(wanted) < len(rows) else slice(None)
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
            phi, _ = explainer.contributions(x[k : k + 1], seeds[k : k + 1])
            results.append(
                ExplanationResult(
                    method=explainer.method,
                    output_space=explainer.manifest.explainer.output_space,
                    base_value=explainer.base_value,
                    contributions=dict(zip(explainer.names, (float(v) for v in phi[0]), strict=True)),
                    seed=seeds[k],
                    evaluations=0,
                    bucket=explainer.explain_bucket,
                    additivity_error=abs(exc.total - exc.score),
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
    bucket and, for an explained decision, the explain bucket go on ``runtime``; a
    decision made without an explanation says so with ``rec.NOT_EXPLAINED``."""
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

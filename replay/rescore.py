"""Re-scoring and re-explaining logged decisions through the gateway's own code.

The decision path of the gateway (gateway.decisions.DecisionService._score_and_explain)
is: validate/encode the attributes (gateway.schema.encode_rows) -> score at the
fixed bucket (LoadedModel.score_matrix) -> explain (Explainer.explain, seeded
per request) -> decide (LoadedModel.decide) -> word the reasons
(gateway.reasons.reasons). A replay calls exactly those functions, loaded
exactly as the gateway loads them (gateway.runtime.load_model, the registry's
sha256-verified artifact and background), with the settings the record names:
device, dtype, score bucket, explanation bucket, thread count and seed. Nothing
here computes a score or a contribution itself; it only compares.

Why group by runtime settings: ``score_matrix`` is bit-for-bit batch invariant
at a fixed bucket, so the rows of many decisions with the same recorded bucket
are packed into every forward pass (full buckets) and still give the bits each
decision got alone. The explainer likewise packs the masked rows of many
requests at the explain bucket.

A :class:`Rescorer` lives in each worker process (or in the replaying process
for small replays); it caches loaded models per version and runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from verdict.audit.canonical import CanonicalEncodingError
from verdict.audit.records import DecisionBody, PlainInputs, Record, decode_record, record_bytes
from verdict.audit.stores import StoreError, open_store
from verdict.replay.verdicts import DecisionResult, Tolerance, cannot_replay, effective_tolerance, judge

__all__ = ["ReplayOptions", "Rescorer", "RuntimeKey", "runtime_key"]

Scope = Literal["full", "score_only"]
NOT_EXPLAINED = "none"
"""Explanation method on records made with explanations switched off (gateway.decisions)."""


class ReplayOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """How decisions are re-run (never *whether* they pass: that is the manifest's tolerance)."""

    scope: Scope = "full"
    """full: score, base value, every contribution, decision and reasons; score_only: score and decision."""
    tighten_absolute: float | None = None
    tighten_relative: float | None = None
    override_score_bucket: int | None = None
    """Counterfactual: score at this bucket instead of the recorded one (a sensitivity test, flagged in the report)."""
    override_explain_bucket: int | None = None
    override_threads: int | None = None

    def overrides(self) -> dict[str, int]:
        out = {}
        if self.override_score_bucket is not None:
            out["score_bucket"] = self.override_score_bucket
        if self.override_explain_bucket is not None:
            out["explain_bucket"] = self.override_explain_bucket
        if self.override_threads is not None:
            out["threads"] = self.override_threads
        return out


@dataclass(frozen=True)
class RuntimeKey:
    """Decisions that can share forward passes: same model bytes, same recorded runtime."""

    name: str
    version: str
    sha256: str
    device: str
    dtype: str
    score_bucket: int
    explain_bucket: int
    threads: int


def runtime_key(body: DecisionBody) -> RuntimeKey:
    budget = body.explanation.budget or {}
    explain_bucket = budget.get("bucket")
    return RuntimeKey(
        name=body.model.name,
        version=body.model.version,
        sha256=body.model.sha256,
        device=body.runtime.device,
        dtype=body.runtime.dtype,
        score_bucket=body.runtime.bucket,
        explain_bucket=int(explain_bucket)
        if isinstance(explain_bucket, int) and not isinstance(explain_bucket, bool)
        else 0,
        threads=body.runtime.threads,
    )


class _ModelProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class _AtExplainBucket:
    """The loaded model, with explanation evaluations at another bucket than its
    manifest's (a record made at another explain bucket, or a counterfactual).
    Evaluations still go through LoadedModel.score_matrix."""

    def __init__(self, model: Any, bucket: int) -> None:
        self._model = model
        self.manifest = model.manifest
        self.explain_bucket = bucket

    def evaluate_for_explanation(self, x: np.ndarray) -> np.ndarray:
        return self._model.score_matrix(x, self.explain_bucket)[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


_LOADED: dict[tuple[str, str, str, str], Any] = {}
"""Loaded programs by (name, version, device, artifact sha256), shared by the Rescorers of
one process; reused only after the Rescorer has re-verified the stored artifact bytes."""
_EXPLAINERS: dict[tuple, Any] = {}


class Rescorer:
    """Re-runs decisions and judges them. One per replay (in each worker); not thread-safe.
    Everything it learns about the store (manifests, problems) lives as long as the replay."""

    def __init__(self, store_url: str, options: ReplayOptions) -> None:
        from verdict.gateway.registry import Registry

        self.store = open_store(store_url)
        self.registry = Registry(self.store)
        self.options = options
        self._manifests: dict[tuple[str, str], Any] = {}
        self._models: dict[tuple[str, str, str], Any] = {}
        self._explainers: dict[tuple[str, str, str, int], Any] = {}
        self._problems: dict[tuple, _ModelProblem] = {}
        self._fingerprints: dict[tuple[str, int], tuple[str, bytes]] = {}
        self.fingerprints_seen: dict[str, bytes] = {}

    # -- loading (as gateway.models_cache.ModelCache.loaded does) ---------------------------

    def manifest(self, name: str, version: str) -> Any:
        from verdict.gateway.manifest import ManifestError
        from verdict.gateway.registry import UnknownModel

        key = (name, version)
        if key not in self._manifests:
            try:
                self._manifests[key] = self.registry.manifest(name, version)
            except UnknownModel as exc:
                self._manifests[key] = _ModelProblem("manifest_missing", str(exc))
            except ManifestError as exc:
                self._manifests[key] = _ModelProblem("manifest_invalid", f"manifest of {name}:{version}: {exc}")
            except StoreError as exc:
                self._manifests[key] = _ModelProblem("store_error", f"manifest of {name}:{version}: {exc}")
        found = self._manifests[key]
        if isinstance(found, _ModelProblem):
            raise found
        return found

    def _device(self, recorded: str) -> str:
        from verdict.gateway.determinism import DeterminismError, select_device

        policy = "cuda" if recorded.startswith("cuda") else "cpu" if recorded == "cpu" else recorded
        try:
            return str(select_device(policy))  # another CUDA ordinal: the fingerprint diff shows the GPU
        except DeterminismError as exc:
            raise _ModelProblem("environment_cannot_run", f"the decision ran on {recorded}: {exc}") from None

    def model(self, key: RuntimeKey) -> Any:
        from verdict.gateway.registry import RegistryError, TamperedBlob, blob_key
        from verdict.gateway.runtime import load_model

        manifest = self.manifest(key.name, key.version)
        if manifest.artifact_sha256 != key.sha256:
            raise _ModelProblem(
                "manifest_mismatch",
                f"the record names artifact sha256:{key.sha256}, the registered manifest of {key.name}:{key.version} "
                f"names sha256:{manifest.artifact_sha256}",
            )
        if key.dtype != manifest.runtime.dtype:
            raise _ModelProblem(
                "environment_cannot_run", f"the record says dtype {key.dtype}, the model runs {manifest.runtime.dtype}"
            )
        device = self._device(key.device)
        cache_key = (key.name, key.version, device)
        if cache_key in self._problems:
            raise self._problems[cache_key]
        if cache_key not in self._models:
            try:
                if not self.store.exists(blob_key(key.sha256)):
                    raise _ModelProblem(
                        "artifact_missing",
                        f"model artifact {blob_key(key.sha256)} ({key.name}:{key.version}) is missing from {self.store.url}",
                    )
                try:
                    # Verified on every replay (a Rescorer lives for one replay): the bytes in the
                    # store must still hash to the record's address, even if a long-lived worker
                    # already holds the loaded program from an earlier replay.
                    self.registry.artifact(manifest)
                    shared = (key.name, key.version, device, key.sha256)
                    if shared not in _LOADED:
                        _LOADED[shared] = load_model(self.registry, key.name, key.version, device=device)
                    self._models[cache_key] = _LOADED[shared]
                except TamperedBlob as exc:
                    raise _ModelProblem("artifact_altered", str(exc)) from None
                except RegistryError as exc:
                    raise _ModelProblem("artifact_missing", str(exc)) from None
                except StoreError as exc:
                    raise _ModelProblem("store_error", str(exc)) from None
                except Exception as exc:  # noqa: BLE001 - torch cannot load/run it here: that is the verdict
                    raise _ModelProblem(
                        "environment_cannot_run",
                        f"loading {key.name}:{key.version} failed here: {type(exc).__name__}: {exc}",
                    ) from None
            except _ModelProblem as problem:
                self._problems[cache_key] = problem
                raise
        return self._models[cache_key]

    def explainer(self, key: RuntimeKey, model: Any, explain_bucket: int) -> Any:
        from verdict.gateway.explanation import Explainer, ExplainerConfigError
        from verdict.gateway.registry import RegistryError, TamperedBlob

        cache_key = (key.name, key.version, str(model.device), explain_bucket)
        if cache_key in self._problems:
            raise self._problems[cache_key]
        if cache_key not in self._explainers:
            try:
                try:
                    background = self.registry.background(model.manifest)
                except TamperedBlob as exc:
                    raise _ModelProblem("background_altered", str(exc)) from None
                except RegistryError as exc:
                    raise _ModelProblem("background_missing", str(exc)) from None
                subject = model if explain_bucket == model.explain_bucket else _AtExplainBucket(model, explain_bucket)
                shared = (*cache_key, model.manifest.artifact_sha256, model.manifest.explainer.background_sha256)
                try:
                    if shared not in _EXPLAINERS:
                        _EXPLAINERS[shared] = Explainer(subject, background)
                    self._explainers[cache_key] = _EXPLAINERS[shared]
                except ExplainerConfigError as exc:
                    raise _ModelProblem(
                        "environment_cannot_run", f"the explainer of {key.name}:{key.version} cannot run here: {exc}"
                    ) from None
            except _ModelProblem as problem:
                self._problems[cache_key] = problem
                raise
        return self._explainers[cache_key]

    def fingerprint(self, device: str, threads: int) -> str:
        """This process's environment fingerprint as it scores (after the determinism switch)."""
        key = (device, threads)
        if key not in self._fingerprints:
            from verdict.replay.environment import current_fingerprint

            _, sha, data = current_fingerprint(device)
            self._fingerprints[key] = (sha, data)
            self.fingerprints_seen[sha] = data
        return self._fingerprints[key][0]

    # -- replaying ------------------------------------------------------------------------------

    def rescore(self, records: Sequence[bytes]) -> list[DecisionResult]:
        """Verdicts for verified record bytes (already proven by replay.trail), in order."""
        results: list[DecisionResult | None] = [None] * len(records)
        groups: dict[RuntimeKey, list[tuple[int, Record, DecisionBody]]] = {}
        self._digests: dict[int, str] = {}
        for i, raw in enumerate(records):
            record = decode_record(raw)
            body = record.body
            assert isinstance(body, DecisionBody)
            self._digests[id(record)] = hashlib.sha256(raw).hexdigest()
            # The canonical-form check of audit.reader.read_decision, done here so that it
            # runs in the worker processes (re-encoding a record costs ~0.4 ms).
            try:
                canonical = record_bytes(record) == raw
            except CanonicalEncodingError:
                canonical = False
            if not canonical:
                results[i] = cannot_replay(
                    body.request_id,
                    "not_canonical",
                    f"record {record.chain_id}/{record.seq} is not in canonical form",
                    **self._known(record, body),
                )
                continue
            groups.setdefault(runtime_key(body), []).append((i, record, body))
        for key, members in groups.items():
            for i, result in self._group(key, members):
                results[i] = result
        return [r for r in results if r is not None]

    def _known(self, record: Record, body: DecisionBody) -> dict[str, Any]:
        return dict(
            chain_id=record.chain_id,
            seq=record.seq,
            record_hash=self._digests.get(id(record)),
            decided_at=body.decided_at,
            model=f"{body.model.name}:{body.model.version}",
            model_sha256=body.model.sha256,
            environment_sha256=body.environment_sha256,
        )

    def _group(
        self, key: RuntimeKey, members: list[tuple[int, Record, DecisionBody]]
    ) -> list[tuple[int, DecisionResult]]:
        from verdict.gateway import determinism
        from verdict.gateway.schema import InputValidationError, validate_attributes

        out: list[tuple[int, DecisionResult]] = []
        try:
            model = self.model(key)
            manifest = model.manifest
            tolerance = effective_tolerance(
                Tolerance(manifest.tolerance.absolute, manifest.tolerance.relative),
                self.options.tighten_absolute,
                self.options.tighten_relative,
                model=manifest.ref,
            )
            threads = self.options.override_threads or key.threads
            score_bucket = self.options.override_score_bucket or key.score_bucket
            explain_bucket = self.options.override_explain_bucket or key.explain_bucket or model.explain_bucket
            try:
                determinism.enable(threads=threads)
            except determinism.DeterminismError as exc:
                raise _ModelProblem("environment_cannot_run", f"cannot run with {threads} thread(s): {exc}") from None
            explainer = None
            if self.options.scope == "full":
                explainer = self.explainer(key, model, explain_bucket)
        except _ModelProblem as problem:
            return [
                (i, cannot_replay(body.request_id, problem.reason, str(problem), **self._known(record, body)))
                for i, record, body in members
            ]
        replay_env = self.fingerprint(str(model.device), threads)
        runtime = {
            "device": str(model.device),
            "dtype": manifest.runtime.dtype,
            "score_bucket": score_bucket,
            "explain_bucket": explain_bucket,
            "threads": threads,
        }
        rows: list[dict[str, Any]] = []
        kept: list[tuple[int, Record, DecisionBody]] = []
        for i, record, body in members:
            known = self._known(record, body)
            if not isinstance(body.inputs, PlainInputs):
                out.append(
                    (
                        i,
                        cannot_replay(
                            body.request_id,
                            "inputs_sealed",
                            "the applicant's inputs are encrypted in the record; replay needs the key",
                            **known,
                        ),
                    )
                )
                continue
            try:
                rows.append(validate_attributes(manifest.inputs, body.inputs.attributes))
            except InputValidationError as exc:
                out.append(
                    (
                        i,
                        cannot_replay(
                            body.request_id, "inputs_invalid", f"logged inputs do not validate: {exc}", **known
                        ),
                    )
                )
                continue
            kept.append((i, record, body))
        if not kept:
            return out
        try:
            out += self._score(model, manifest, explainer, tolerance, score_bucket, runtime, replay_env, rows, kept)
        except Exception as exc:  # noqa: BLE001 - a crash in re-scoring is a verdict, never a silent pass
            out += [
                (
                    i,
                    cannot_replay(
                        body.request_id,
                        "replay_failed",
                        f"re-scoring failed: {type(exc).__name__}: {exc}",
                        **self._known(record, body),
                    ),
                )
                for i, record, body in kept
            ]
        return out

    def _score(self, model, manifest, explainer, tolerance, score_bucket, runtime, replay_env, rows, kept):  # noqa: ANN001, ANN202
        from verdict.gateway.schema import encode_rows

        x = encode_rows(manifest.inputs, rows)
        scores, _ = model.score_matrix(x, score_bucket)
        explanations: list[Any] = [None] * len(kept)
        problems: list[str | None] = [None] * len(kept)
        explained = [k for k, (_, _, body) in enumerate(kept) if body.explanation.method != NOT_EXPLAINED]
        if explainer is not None and explained:
            # A decision logged without an explanation (the gateway's explain=false benchmark mode)
            # has none to reproduce: its contributions are reported not_replayed.
            got, issues = self._explain(
                explainer, x[explained], scores[explained], [kept[k][2].explanation.seed for k in explained]
            )
            for k, result, issue in zip(explained, got, issues):
                explanations[k], problems[k] = result, issue
        out = []
        for k, (i, record, body) in enumerate(kept):
            score = float(scores[k])
            result = explanations[k]
            known = self._known(record, body)
            known.update(runtime=runtime, replay_environment_sha256=replay_env, seed=body.explanation.seed)
            problems_here: list[str] = [problems[k]] if problems[k] else []
            reasons_match = None
            replayed_contributions = None
            replayed_base = None
            if result is not None:
                replayed_contributions = dict(result.contributions)
                replayed_base = float(result.base_value)
                reasons_match = self._reasons_match(manifest, rows[k], result, body)
                if result.method != body.explanation.method or result.output_space != body.explanation.output_space:
                    problems_here.append(
                        f"explanation method {result.method}/{result.output_space} differs from the logged "
                        f"{body.explanation.method}/{body.explanation.output_space}"
                    )
            verdict = judge(
                body.request_id,
                logged_score=body.score,
                replayed_score=score,
                tolerance=tolerance,
                logged_decision=body.decision,
                replayed_decision=model.decide(score),
                logged_base=body.explanation.base_value if result is not None else None,
                replayed_base=replayed_base,
                logged_contributions=body.explanation.contributions,
                replayed_contributions=replayed_contributions,
                reasons_match=reasons_match,
                problems=problems_here,
                **known,
            )
            out.append((i, verdict))
        return out

    @staticmethod
    def _explain(
        explainer: Any, x: np.ndarray, scores: np.ndarray, seeds: list[int]
    ) -> tuple[list[Any], list[str | None]]:
        """Explanations through Explainer.explain; if one does not add up to its replayed
        score (AdditivityError: the gateway would have failed closed), the others are
        still explained and that one is compared from its raw contributions and flagged."""
        from verdict.gateway.explanation import AdditivityError, ExplanationResult

        try:
            return explainer.explain(x, scores, seeds), [None] * len(seeds)
        except AdditivityError:
            pass
        results: list[Any] = []
        problems: list[str | None] = []
        for k in range(len(seeds)):
            try:
                results += explainer.explain(x[k : k + 1], scores[k : k + 1], seeds[k : k + 1])
                problems.append(None)
            except AdditivityError as exc:
                phi, _ = explainer.contributions(x[k : k + 1], seeds[k : k + 1])
                contributions = dict(zip(explainer.names, (float(v) for v in phi[0])))
                results.append(
                    ExplanationResult(
                        method=explainer.method,
                        output_space=explainer.manifest.explainer.output_space,
                        base_value=explainer.base_value,
                        contributions=contributions,
                        seed=seeds[k],
                        evaluations=0,
                        bucket=explainer.model.explain_bucket,
                        additivity_error=abs(exc.total - exc.score),
                    )
                )
                problems.append(
                    f"the replayed explanation does not add up to the replayed score "
                    f"(|difference| {abs(exc.total - exc.score)!r} > epsilon {exc.epsilon!r})"
                )
        return results, problems

    @staticmethod
    def _reasons_match(manifest: Any, attributes: dict[str, Any], result: Any, body: DecisionBody) -> bool:
        from verdict.gateway.reasons import reasons as make_reasons

        replayed = [
            (r.attribute, r.label, r.value, r.direction, r.text)
            for r in make_reasons(manifest, attributes, result, top=manifest.explainer.top_reasons)
        ]
        logged = [(r.attribute, r.label, r.value, r.direction, r.text) for r in body.reasons]
        return replayed == logged


# --- worker processes ------------------------------------------------------------------------------

_store_url: str | None = None
_rescorers: dict[tuple[str, bytes], Rescorer] = {}
_KEEP_RESCORERS = 4


def init_worker(store_url: str) -> None:
    """Worker start-up: the slow imports now (while the parent proves the records)."""
    global _store_url
    _store_url = store_url
    import verdict.gateway.explanation
    import verdict.gateway.reasons
    import verdict.gateway.registry
    import verdict.gateway.runtime  # noqa: F401
    from verdict.gateway import determinism

    determinism.enable(threads=1)  # its first call imports torch's compiler stack (seconds); each group sets its own


def warm() -> int:
    """A no-op task: submitting one per worker makes the pool start them all now."""
    import os

    return os.getpid()


def work(chunk_id: int, records: list[bytes], options: bytes, replay_id: str) -> tuple[int, bytes, dict[str, bytes]]:
    """Worker entry: (chunk id, msgpack of the results, fingerprints seen so far).
    A worker may serve many replays (the replay service keeps its pool): one Rescorer
    per replay, sharing the loaded programs after re-verifying their bytes."""
    assert _store_url is not None, "init_worker was not called"
    key = (replay_id, options)
    rescorer = _rescorers.get(key)
    if rescorer is None:
        if len(_rescorers) >= _KEEP_RESCORERS:
            _rescorers.pop(next(iter(_rescorers)))
        rescorer = _rescorers[key] = Rescorer(_store_url, msgspec.msgpack.decode(options, type=ReplayOptions))
    results = rescorer.rescore(records)
    return chunk_id, msgspec.msgpack.encode(results), dict(rescorer.fingerprints_seen)

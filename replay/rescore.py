"""Re-scoring and re-explaining logged decisions through the gateway's own code.

The gateway decides with gateway.engine: ``Engine`` loads the registry's
sha256-verified artifact and background into the process-wide cache, and
``decide_rows`` encodes the validated attributes, scores at the score bucket,
explains at the explain bucket (seeded per request), decides and words the
reasons. A replay calls exactly that, with the settings the record names:
device, dtype, score bucket, explain bucket (``runtime.explain_bucket``, or the
legacy ``explanation.budget.bucket``: audit.records.explain_bucket), thread
count and seed. Nothing here loads, scores, explains or words anything itself
(tests/replay/test_rescore_engine.py reads this module's code to hold it to
that); it only checks what it is given and compares, the explanation's fidelity
too, converted to the record's shape by the gateway's own ``fidelity.to_record``.

Why group by runtime settings: scoring is bit-for-bit batch invariant at a
fixed bucket, so the rows of many decisions with the same recorded bucket are
packed into every forward pass (full buckets) and still give the bits each
decision got alone. The explainer likewise packs the masked rows of many
requests at the explain bucket.

A :class:`Rescorer` lives in each worker process (or in the replaying process
for small replays) for one replay; the loaded programs it uses live in the
engine's process-wide cache, reused only after the Rescorer re-verified the
stored bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from verdict.audit.canonical import CanonicalEncodingError
from verdict.audit.records import (
    NOT_EXPLAINED,
    DecisionBody,
    PlainInputs,
    Record,
    decode_record,
    explain_bucket,
    record_bytes,
)
from verdict.audit.stores import StoreError, open_store
from verdict.gateway.manifest import ManifestError
from verdict.replay.environment import current_fingerprint
from verdict.replay.verdicts import DecisionResult, Tolerance, cannot_replay, effective_tolerance, judge

__all__ = ["ReplayOptions", "Rescorer", "RuntimeKey", "runtime_key"]

_opened_decoder = msgspec.json.Decoder(DecisionBody)

Scope = Literal["full", "score_only"]


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
    explain_bucket: int | None
    """None: the record names none (not explained); the manifest's is used."""
    threads: int


def runtime_key(body: DecisionBody) -> RuntimeKey:
    return RuntimeKey(
        name=body.model.name,
        version=body.model.version,
        sha256=body.model.sha256,
        device=body.runtime.device,
        dtype=body.runtime.dtype,
        score_bucket=body.runtime.bucket,
        explain_bucket=explain_bucket(body),
        threads=body.runtime.threads,
    )


class _ModelProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Rescorer:
    """Re-runs decisions and judges them. One per replay (in each worker); not thread-safe.
    Everything it learns about the store (manifests, verified bytes, problems) lives as
    long as the replay; the loaded programs live in the engine's process-wide cache."""

    def __init__(self, store_url: str, options: ReplayOptions) -> None:
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
        from verdict.gateway.engine import Engine
        from verdict.gateway.registry import Registry

        self.store = open_store(store_url)
        self.registry = Registry(self.store)
        self.engine = Engine(self.registry)
        self.options = options
        self._manifests: dict[tuple[str, str], Any] = {}
        self._verified: dict[tuple, Any] = {}
        """Runtimes and explainers whose stored bytes this replay has verified."""
        self._problems: dict[tuple, _ModelProblem] = {}
        self._fingerprints: dict[tuple[str, int], tuple[str, bytes]] = {}
        self.fingerprints_seen: dict[str, bytes] = {}

    # -- loading (through gateway.engine, as the gateway loads) ---------------------------

    def manifest(self, name: str, version: str) -> Any:
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
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
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
        from verdict.gateway.determinism import DeterminismError

        policy = "cuda" if recorded.startswith("cuda") else "cpu" if recorded == "cpu" else recorded
        try:
            return self.engine.resolve_device(policy)  # another CUDA ordinal: the fingerprint diff shows the GPU
        except DeterminismError as exc:
            raise _ModelProblem("environment_cannot_run", f"the decision ran on {recorded}: {exc}") from None

    def _once(self, key: tuple, load: Any) -> Any:
        """``load()`` once per replay; a problem it raises is remembered and raised again."""
        if key in self._problems:
            raise self._problems[key]
        if key not in self._verified:
            try:
                self._verified[key] = load()
            except _ModelProblem as problem:
                self._problems[key] = problem
                raise
        return self._verified[key]

    def model(self, key: RuntimeKey) -> Any:
        """The engine's runtime for the recorded model, after checking the record against the
        registered manifest and re-verifying the stored artifact bytes (once per replay)."""
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
        return self._once(("model", key.name, key.version, device), lambda: self._load(key, manifest, device))

    def _load(self, key: RuntimeKey, manifest: Any, device: str) -> Any:
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
        from verdict.gateway.registry import RegistryError, TamperedBlob, blob_key

        if not self.store.exists(blob_key(key.sha256)):
            raise _ModelProblem(
                "artifact_missing",
                f"model artifact {blob_key(key.sha256)} ({key.name}:{key.version}) is missing from {self.store.url}",
            )
        try:
            # Verified on every replay (a Rescorer lives for one replay): the bytes in the
            # store must still hash to the record's address, even if a long-lived worker
            # already holds the loaded program from an earlier replay.
            artifact = self.registry.artifact(manifest)
            return self.engine.runtime(manifest, device, artifact=artifact)
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

    def explainer(self, key: RuntimeKey, model: Any, explain_bucket: int, threads: int) -> Any:
        """The engine's explainer at ``explain_bucket``, after re-verifying the stored
        background bytes (once per replay)."""
        cache_key = ("explainer", key.name, key.version, str(model.device), explain_bucket, threads)
        return self._once(cache_key, lambda: self._explainer(key, model, explain_bucket, threads))

    def _explainer(self, key: RuntimeKey, model: Any, explain_bucket: int, threads: int) -> Any:
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
        from verdict.gateway.explanation import ExplainerConfigError
        from verdict.gateway.registry import RegistryError, TamperedBlob

        try:
            background = self.registry.background(model.manifest)
        except TamperedBlob as exc:
            raise _ModelProblem("background_altered", str(exc)) from None
        except RegistryError as exc:
            raise _ModelProblem("background_missing", str(exc)) from None
        try:
            return self.engine.explainer(model, explain_bucket, threads, background=background)
        except ExplainerConfigError as exc:
            raise _ModelProblem(
                "environment_cannot_run", f"the explainer of {key.name}:{key.version} cannot run here: {exc}"
            ) from None

    def fingerprint(self, device: str, threads: int) -> str:
        """This process's environment fingerprint as it scores (after the determinism switch)."""
        key = (device, threads)
        if key not in self._fingerprints:
            _, sha, data = current_fingerprint(device)
            self._fingerprints[key] = (sha, data)
            self.fingerprints_seen[sha] = data
        return self._fingerprints[key][0]

    # -- replaying ------------------------------------------------------------------------------

    def rescore(self, records: Sequence[bytes], opened: Sequence[bytes] = ()) -> list[DecisionResult]:
        """Verdicts for verified record bytes (already proven by replay.trail), in order.
        ``opened``: per record, the clear decision body of a sealed record (the parent opened
        it with the data keyring), or b"" for a plain one."""
        results: list[DecisionResult | None] = [None] * len(records)
        groups: dict[RuntimeKey, list[tuple[int, Record, DecisionBody]]] = {}
        self._digests: dict[int, str] = {}
        for i, raw in enumerate(records):
            record = decode_record(raw)
            body = record.body
            if i < len(opened) and opened[i]:
                body = _opened_decoder.decode(opened[i])
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
        return {
            "chain_id": record.chain_id,
            "seq": record.seq,
            "record_hash": self._digests.get(id(record)),
            "decided_at": body.decided_at,
            "model": f"{body.model.name}:{body.model.version}",
            "model_sha256": body.model.sha256,
            "environment_sha256": body.environment_sha256,
        }

    def _group(
        self, key: RuntimeKey, members: list[tuple[int, Record, DecisionBody]]
    ) -> list[tuple[int, DecisionResult]]:
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
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
            explain_at = self.options.override_explain_bucket or key.explain_bucket or manifest.runtime.explain_bucket
            try:
                determinism.enable(threads=threads)
            except determinism.DeterminismError as exc:
                raise _ModelProblem("environment_cannot_run", f"cannot run with {threads} thread(s): {exc}") from None
            explainer = None
            if self.options.scope == "full":
                explainer = self.explainer(key, model, explain_at, threads)
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
            "explain_bucket": explain_at,
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
                            "the applicant's inputs are sealed in the record and were not opened for this replay",
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
            out += self._score(model, explainer, tolerance, score_bucket, runtime, replay_env, rows, kept)
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

    def _score(self, model, explainer, tolerance, score_bucket, runtime, replay_env, rows, kept):  # noqa: ANN001, ANN202
        # lazy: torch: the replaying parent proves records without it; workers load it in init_worker
        from verdict.gateway.engine import decide_rows
        from verdict.gateway.fidelity import to_record

        # A decision logged without an explanation (the gateway's explain=false benchmark mode)
        # has none to reproduce: its contributions are reported not_replayed. An explanation
        # that does not add up to its replayed score (the gateway would have failed closed) is
        # compared from its raw contributions and flagged ("flag"), the others explained as usual.
        decided = decide_rows(
            model,
            rows,
            [body.explanation.seed for _, _, body in kept],
            score_bucket=score_bucket,
            explainer=explainer,
            explain=[body.explanation.method != NOT_EXPLAINED for _, _, body in kept],
            additivity="flag",
        )
        out = []
        for (i, record, body), outcome in zip(kept, decided.outcomes, strict=True):
            result = outcome.explanation
            known = self._known(record, body)
            known.update(runtime=runtime, replay_environment_sha256=replay_env, seed=body.explanation.seed)
            problems_here: list[str] = [outcome.problem] if outcome.problem else []
            reasons_match = None
            replayed_contributions = None
            replayed_base = None
            replayed_fidelity = None
            if result is not None:
                replayed_contributions = dict(result.contributions)
                replayed_base = float(result.base_value)
                try:
                    replayed_fidelity = to_record(result.fidelity)  # as the gateway would have logged it
                except ValueError as exc:  # a fidelity the gateway could not have logged reproduces nothing
                    problems_here.append(f"the replayed explanation's fidelity is invalid: {exc}")
                reasons_match = [(r.attribute, r.label, r.value, r.direction, r.text) for r in outcome.reasons] == [
                    (r.attribute, r.label, r.value, r.direction, r.text) for r in body.reasons
                ]
                if result.method != body.explanation.method or result.output_space != body.explanation.output_space:
                    problems_here.append(
                        f"explanation method {result.method}/{result.output_space} differs from the logged "
                        f"{body.explanation.method}/{body.explanation.output_space}"
                    )
            verdict = judge(
                body.request_id,
                logged_score=body.score,
                replayed_score=outcome.score,
                tolerance=tolerance,
                logged_decision=body.decision,
                replayed_decision=outcome.decision,
                logged_base=body.explanation.base_value if result is not None else None,
                replayed_base=replayed_base,
                logged_contributions=body.explanation.contributions,
                replayed_contributions=replayed_contributions,
                reasons_match=reasons_match,
                problems=problems_here,
                logged_fidelity=body.explanation.fidelity,
                replayed_fidelity=replayed_fidelity,
                **known,
            )
            out.append((i, verdict))
        return out


# --- worker processes ------------------------------------------------------------------------------

_store_url: str | None = None
_rescorers: dict[tuple[str, bytes], Rescorer] = {}
_KEEP_RESCORERS = 4


def init_worker(store_url: str) -> None:
    """Worker start-up: the slow imports now (while the parent proves the records)."""
    global _store_url
    _store_url = store_url
    # lazy: deliberate: a spawned worker pays for torch and the engine at start-up, while the parent proves records
    import verdict.gateway.engine  # noqa: F401 - loads the explainer, reasons, registry and runtime
    from verdict.gateway import determinism

    determinism.enable(threads=1)  # its first call imports torch's compiler stack (seconds); each group sets its own


def warm() -> int:
    """A no-op task: submitting one per worker makes the pool start them all now."""
    return os.getpid()


def work(
    chunk_id: int, records: list[bytes], options: bytes, replay_id: str, opened: list[bytes] | None = None
) -> tuple[int, bytes, dict[str, bytes]]:
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
    results = rescorer.rescore(records, opened or ())
    return chunk_id, msgspec.msgpack.encode(results), dict(rescorer.fingerprints_seen)

"""The engine: one cache keyed by what decides the bits, one pipeline, one record
builder, and a model runtime protocol small enough that a new kind of model is
one class (here a plain-NumPy logistic model, driven through the whole engine)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from typing import Any

import msgspec
import numpy as np
import pytest

from tests.support.pending import Pending
from verdict.audit import records as rec
from verdict.audit.canonical import canonical_bytes
from verdict.audit.stores import FilesystemStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.engine import Engine, RuntimeCache, decide_rows, decision_body
from verdict.gateway.explanation import seed_for
from verdict.gateway.manifest import Manifest, decode_manifest, encode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE
from verdict.gateway.model_runtime import ModelRuntime, decide_by_rule
from verdict.gateway.registry import Registry, TamperedBlob, blob_key, manifest_key
from verdict.gateway.schema import encode_rows, validate_attributes

LOGISTIC = "logistic-credit"


class NumpyLogistic:
    """A second model kind: weights and bias as float64 bytes, sigmoid(x . w + b) in float32.

    Every row is computed with the same elementwise operations in a fixed column
    order (no BLAS reduction), so a row's bits never depend on its neighbours;
    evaluations still run padded to the bucket, as the protocol requires."""

    kind = "numpy.logistic/test"

    def __init__(self, manifest: Manifest, weights: np.ndarray, bias: float) -> None:
        self.manifest, self.device = manifest, "cpu"
        self.weights, self.bias = weights, bias
        self.buckets_seen: set[int] = set()

    @classmethod
    def load(cls, manifest: Manifest, artifact: bytes, device: str) -> NumpyLogistic:
        values = np.frombuffer(artifact, dtype="<f8")
        assert len(values) == len(manifest.inputs) + 1 and device == "cpu"
        return cls(manifest, values[:-1].copy(), float(values[-1]))

    def _forward(self, x: np.ndarray, bucket: int) -> np.ndarray:
        self.buckets_seen.add(bucket)
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), bucket):
            chunk = np.zeros((bucket, x.shape[1]), dtype=np.float64)
            rows = len(x[start : start + bucket])
            chunk[:rows] = x[start : start + bucket]
            z = np.full(bucket, self.bias)
            for j, w in enumerate(self.weights):
                z = z + chunk[:, j] * w
            out[start : start + rows] = (1.0 / (1.0 + np.exp(-z)))[:rows]
        return out

    def score_matrix(self, x: np.ndarray, bucket: int) -> tuple[np.ndarray, int]:
        return self._forward(x, bucket), bucket

    def evaluate_for_explanation(self, x: np.ndarray, explain_bucket: int) -> np.ndarray:
        return self._forward(x, explain_bucket)

    def decide(self, score: float) -> str:
        return decide_by_rule(self.manifest, score)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "numpy": np.__version__, "device": self.device}


@pytest.fixture(scope="module")
def logistic(tmp_path_factory, trained_dirs) -> Registry:
    """German credit's schema, decision rule and background, with a logistic artifact."""
    directory = tmp_path_factory.mktemp("logistic") / "model"
    shutil.copytree(trained_dirs["german-credit"], directory)
    german = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    rng = np.random.default_rng(7)
    artifact = np.concatenate([rng.normal(0.0, 0.05, len(german.inputs)), [-0.4]]).astype("<f8").tobytes()
    (directory / ARTIFACT_FILE).write_bytes(artifact)
    manifest = msgspec.structs.replace(
        german, name=LOGISTIC, artifact_sha256=hashlib.sha256(artifact).hexdigest(), artifact_bytes=len(artifact)
    )
    (directory / MANIFEST_FILE).write_bytes(encode_manifest(manifest))
    registry = Registry(FilesystemStore(tmp_path_factory.mktemp("logistic-store")))
    # Stored as the registry lays it out: registration validates torch.export programs (gateway.validation),
    # and this runtime kind's artifact is plain weights, which that validator rightly refuses.
    background = (directory / BACKGROUND_FILE).read_bytes()
    for data in (artifact, background):
        registry.store.put_once(blob_key(hashlib.sha256(data).hexdigest()), data)
    registry.store.put_once(manifest_key(manifest.name, manifest.version), encode_manifest(manifest))
    registry.promote(manifest.name, manifest.version, by="test-setup")
    return registry


def applicants(manifest: Manifest, count: int) -> list[dict[str, Any]]:
    return [validate_attributes(manifest.inputs, row) for row in load_dataset("german-credit").rows[:count]]


def test_a_second_runtime_kind_is_one_class_driven_through_the_engine(logistic):
    engine = Engine(logistic, "cpu", kind=NumpyLogistic, cache=RuntimeCache())
    loaded = engine.loaded(LOGISTIC, "1.0.0")
    runtime, manifest = loaded.runtime, loaded.runtime.manifest
    assert isinstance(runtime, NumpyLogistic) and isinstance(runtime, ModelRuntime)
    rows = applicants(manifest, 6)
    pending = [Pending(f"np-{i}", row) for i, row in enumerate(rows)]
    decided = decide_rows(runtime, rows, [seed_for(p.request_id) for p in pending], explainer=loaded.explainer)

    x = encode_rows(manifest.inputs, rows).astype(np.float64)
    expected = (1.0 / (1.0 + np.exp(-(x @ runtime.weights + runtime.bias)))).astype(np.float32)
    assert decided.score_bucket == manifest.runtime.score_bucket
    assert decided.explain_bucket == manifest.runtime.explain_bucket
    assert runtime.buckets_seen == {manifest.runtime.score_bucket, manifest.runtime.explain_bucket}
    epsilon = manifest.explainer.additivity_epsilon
    for outcome, want in zip(decided.outcomes, expected, strict=True):
        assert outcome.score == pytest.approx(float(want), abs=1e-6)
        assert outcome.decision == decide_by_rule(manifest, outcome.score)
        total = math.fsum([outcome.explanation.base_value, *outcome.explanation.contributions.values()])
        assert abs(total - outcome.score) <= epsilon and outcome.reasons and outcome.problem is None

    body = decision_body(
        pending[0],
        runtime,
        decided.outcomes[0],
        decided,
        decided_at="2025-01-02T03:04:06.000000Z",
        environment_sha256="e" * 64,
        manifest_sha256=loaded.manifest_sha256,
    )
    assert body.runtime.explain_bucket == manifest.runtime.explain_bucket and body.runtime.device == "cpu"
    assert body.explanation.budget == {"evaluations": decided.outcomes[0].explanation.evaluations}
    assert body.model.sha256 == manifest.artifact_sha256 and body.score == decided.outcomes[0].score
    assert msgspec.json.decode(canonical_bytes(body), type=rec.DecisionBody) == body
    json.dumps(runtime.describe())

    # Another explain bucket is the explainer's explicit setting, for any runtime kind.
    at_16 = engine.explainer(runtime, 16)
    again = decide_rows(runtime, rows[:2], [seed_for(p.request_id) for p in pending[:2]], explainer=at_16)
    assert again.explain_bucket == 16 and 16 in runtime.buckets_seen
    assert [o.explanation.bucket for o in again.outcomes] == [16, 16]


def test_the_torch_runtime_implements_the_protocol(german_model):
    assert isinstance(german_model, ModelRuntime)
    described = german_model.describe()
    assert described["kind"] == "torch.export" and described["device"] == str(german_model.device)
    json.dumps(described)


def test_cache_is_keyed_by_what_decides_the_bits(registry, german_model):
    cache = RuntimeCache()
    engine = Engine(registry, "cpu", cache=cache)
    manifest = registry.manifest("german-credit")
    runtime = engine.runtime(manifest)
    other_engine = Engine(Registry(registry.store), "cpu", cache=cache)  # another replay, same bytes
    assert other_engine.runtime(manifest) is runtime
    at_manifest = engine.explainer(runtime)
    assert engine.explainer(runtime, manifest.runtime.explain_bucket, manifest.runtime.threads) is at_manifest
    at_other = engine.explainer(runtime, 64)
    assert at_other is not at_manifest and at_other.explain_bucket == 64
    assert engine.explainer(runtime, 64, threads=2) is not at_other  # the base value was computed at 1 thread

    # Bytes that are not the manifest's artifact never enter the cache.
    with pytest.raises(TamperedBlob):
        Engine(registry, "cpu", cache=RuntimeCache()).runtime(manifest, artifact=b"not the model")


def test_explanations_switched_off_give_the_not_explained_record(registry):
    engine = Engine(registry, "cpu")
    loaded = engine.loaded("german-credit", registry.resolve_default_version("german-credit"))
    rows = applicants(loaded.runtime.manifest, 2)
    decided = decide_rows(loaded.runtime, rows, [0, 0], explainer=None)
    assert decided.explain_bucket is None and all(o.explanation is None and not o.reasons for o in decided.outcomes)
    body = decision_body(
        Pending("off-0", rows[0]),
        loaded.runtime,
        decided.outcomes[0],
        decided,
        decided_at="2025-01-02T03:04:06.000000Z",
        environment_sha256="e" * 64,
        manifest_sha256=None,
    )
    assert body.explanation.method == rec.NOT_EXPLAINED and body.runtime.explain_bucket is None
    assert b"explain_bucket" not in canonical_bytes(body) and b"budget" not in canonical_bytes(body)

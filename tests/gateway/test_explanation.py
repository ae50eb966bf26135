"""The explanation engine against an exact oracle, on the real reference models.

Exactness: a small real torch model (8 German attributes) exported and
registered like a reference model, explained in exact mode, must match a
brute-force enumeration of every coalition (tests/gateway/shapley_oracle.py)
and shap's own ExactExplainer within 1e-6. Replayability: bit-identical
contributions whatever the batch and in fresh processes. Fail closed: an
explanation that does not add up to the decision score is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import msgspec
import numpy as np
import pytest
import torch

from tests.gateway.conftest import PROJECT
from tests.gateway.shapley_oracle import interventional_shapley
from verdict.gateway import environment, training
from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import (
    SEED_POLICY,
    AdditivityError,
    Explainer,
    ExplainerConfigError,
    encode_background,
    rows_needed,
    seed_for,
)
from verdict.gateway.manifest import encode_manifest
from verdict.gateway.modelgraph import CreditModel
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import LoadedModel, load_model
from verdict.gateway.schema import encode_rows

SMALL_ATTRIBUTES = (
    "checking_account",
    "duration_months",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings",
    "age_years",
    "foreign_worker",
)
SMALL_COUNTS = [1, 3, 2, 5, 1, 1, 4, 2, 1, 2, 3, 1]  # unequal background weights


def bits(result) -> bytes:
    return np.array([result.base_value, *result.contributions.values()], dtype=np.float64).tobytes()


def explainer_with(
    model: LoadedModel, registry: Registry, rows: list[dict], counts: list[int], **settings
) -> Explainer:
    """The same registered artifact explained with another background / settings (a manifest variant)."""
    background = encode_background(rows, counts, "test variant")
    explainer_settings = msgspec.structs.replace(
        model.manifest.explainer,
        background_rows=len(rows),
        background_sha256=hashlib.sha256(background).hexdigest(),
        **settings,
    )
    manifest = msgspec.structs.replace(model.manifest, explainer=explainer_settings)
    return Explainer(LoadedModel(manifest, registry.artifact(model.manifest), model.device), background)


def applicants(model: LoadedModel, start: int, count: int) -> tuple[list[dict], np.ndarray, np.ndarray, list[int]]:
    """Real applicants of the model's data set (attributes restricted to its schema), scores, seeds."""
    names = [spec.name for spec in model.manifest.inputs]
    rows = [
        {n: row[n] for n in names}
        for row in load_dataset(model.manifest.training.dataset.name).rows[start : start + count]
    ]
    x = encode_rows(model.manifest.inputs, rows)
    return rows, x, model.score_matrix(x)[0], [seed_for(f"{model.manifest.name}-{start + i}") for i in range(count)]


@pytest.fixture(scope="module")
def small(tmp_path_factory, german_model):
    """A real 8-attribute CreditModel (random weights), exported and registered
    like the reference models, with an exact-mode manifest and a weighted background."""
    specs = tuple(german_model.manifest.attribute(name) for name in SMALL_ATTRIBUTES)
    data = load_dataset("german-credit")
    rows = [{name: row[name] for name in SMALL_ATTRIBUTES} for row in data.rows]
    x = torch.from_numpy(encode_rows(specs, rows))
    torch.manual_seed(11)
    module = CreditModel(specs, *training._standardisation(specs, x), hidden=(8, 4)).eval()
    artifact = training._export(module, x[: training.SCORE_BUCKET])
    background_rows = rows[100 : 100 + len(SMALL_COUNTS)]
    background = encode_background(background_rows, SMALL_COUNTS, "test: 12 German rows with unequal counts")
    base = german_model.manifest
    manifest = msgspec.structs.replace(
        base,
        name="oracle-small",
        inputs=specs,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        artifact_bytes=len(artifact),
        explainer=msgspec.structs.replace(
            base.explainer,
            algorithm="exact",
            permutations=0,
            certification=None,
            background_rows=len(background_rows),
            background_sha256=hashlib.sha256(background).hexdigest(),
            background_summary="test",
            max_evaluations=rows_needed("exact", len(specs), len(background_rows), 0),
        ),
    )
    directory = tmp_path_factory.mktemp("oracle-small")
    (directory / training.ARTIFACT_FILE).write_bytes(artifact)
    (directory / training.BACKGROUND_FILE).write_bytes(background)
    (directory / training.MANIFEST_FILE).write_bytes(encode_manifest(manifest))
    from verdict.audit.stores import FilesystemStore

    registry = Registry(FilesystemStore(directory / "store"))
    registry.register(directory)
    registry.promote("oracle-small", manifest.version, by="test-setup")  # unpinned loads serve production only
    model = load_model(registry, "oracle-small")
    weights = np.array(SMALL_COUNTS, dtype=np.float64) / sum(SMALL_COUNTS)
    return model, registry, background_rows, encode_rows(specs, background_rows), weights


@pytest.fixture(scope="module")
def german_explainer(german_model, registry) -> Explainer:
    return Explainer(german_model, registry.background(german_model.manifest))


# -- exactness -----------------------------------------------------------------------


def test_exact_mode_matches_the_brute_force_oracle(small):
    model, registry, _, background, weights = small
    explainer = Explainer(model, registry.background(model.manifest))
    _, x, scores, seeds = applicants(model, 200, 12)
    results = explainer.explain(x, scores, seeds)
    for row, result in zip(x, results, strict=True):
        base, phi = interventional_shapley(model.evaluate_for_explanation, row, background, weights)
        assert abs(result.base_value - base) <= 1e-12
        assert np.max(np.abs(np.array(list(result.contributions.values())) - phi)) <= 1e-6
        assert result.method == "interventional-shapley/exact-enumeration"
    assert max(np.abs(np.array(list(r.contributions.values()))).max() for r in results) > 1e-3  # not a trivial model


def test_exact_mode_agrees_with_shap_exact_explainer(small):
    import shap

    model, registry, background_rows, background, _ = small
    explainer = explainer_with(
        model, registry, background_rows, [1] * len(background_rows)
    )  # shap's masker weighs rows equally
    _, x, scores, seeds = applicants(model, 300, 6)
    ours = np.array([list(r.contributions.values()) for r in explainer.explain(x, scores, seeds)])
    masker = shap.maskers.Independent(background, max_samples=len(background))
    unpadded = lambda rows: model.score_matrix(rows, bucket=len(rows))[0]  # noqa: E731 (last-bit differences only)
    theirs = shap.ExactExplainer(unpadded, masker)(x).values
    assert np.max(np.abs(ours - theirs)) <= 1e-6


def test_sampled_mode_is_additive_and_converges_to_exact(small):
    model, registry, background_rows, background, weights = small
    _, x, scores, seeds = applicants(model, 400, 16)
    exact = np.array([interventional_shapley(model.evaluate_for_explanation, row, background, weights)[1] for row in x])
    errors = {}
    for pairs in (1, 32):
        explainer = explainer_with(
            model,
            registry,
            background_rows,
            SMALL_COUNTS,
            algorithm="permutation",
            certification=None,
            permutations=pairs,
            max_evaluations=rows_needed("permutation", len(SMALL_ATTRIBUTES), len(background_rows), pairs),
        )
        results = explainer.explain(x, scores, seeds)  # raises if not additive
        errors[pairs] = np.abs(np.array([list(r.contributions.values()) for r in results]) - exact).mean()
    assert errors[32] < errors[1] / 2
    assert errors[32] < 2e-3


# -- determinism -----------------------------------------------------------------------


def test_seed_follows_the_manifest_policy(german_model):
    assert german_model.manifest.explainer.seed_policy == SEED_POLICY
    digest = hashlib.sha256(b"verdict.explain.seed" + b"req-42").digest()
    assert seed_for("req-42") == int.from_bytes(digest[:8], "big") >> 11
    seeds = {seed_for(f"req-{i}") for i in range(1000)}
    assert len(seeds) == 1000 and max(seeds) < 2**53  # fits an I-JSON integer on the audit record


def test_contributions_do_not_depend_on_the_batch(german_model, german_explainer):
    count = german_explainer.group_size + 13  # crosses a group boundary too
    _, x, scores, seeds = applicants(german_model, 0, count)
    together = german_explainer.explain(x, scores, seeds)
    order = np.random.default_rng(3).permutation(len(x))
    shuffled = german_explainer.explain(x[order], scores[order], [seeds[i] for i in order])
    for position, i in enumerate(order):
        assert bits(shuffled[position]) == bits(together[i])
    for i in (0, 77, count - 1):
        alone = german_explainer.explain(x[i : i + 1], scores[i : i + 1], seeds[i : i + 1])[0]
        assert bits(alone) == bits(together[i])
    other_seed = german_explainer.explain(x[:1], scores[:1], [seeds[0] + 1])[0]
    assert bits(other_seed) != bits(together[0])  # the seed is what decides the sample


def both_ways(model: LoadedModel, store: Registry) -> dict[str, list]:
    """Applicants 500..539 explained skipping repeated rows and evaluating everything:
    contribution bits (hex) and model rows evaluated, per way."""
    _, x, scores, seeds = applicants(model, 500, 40)
    background = store.background(model.manifest)
    out: dict[str, list] = {"evaluations": []}
    for way, skip in (("skipping", True), ("everything", False)):
        results = Explainer(model, background, skip_repeated_rows=skip).explain(x, scores, seeds)
        out[way] = [bits(r).hex() for r in results]
        out["evaluations"].append(sum(r.evaluations for r in results))
    return out


def test_skipping_repeated_rows_changes_no_bit(german_model, registry, small):
    small_model, small_registry = small[:2]
    for model, store in ((german_model, registry), (small_model, small_registry)):
        explained = both_ways(model, store)
        assert explained["skipping"] == explained["everything"]
        skipping, everything = explained["evaluations"]
        assert skipping < everything


_ON_AVX2_ONLY_CPU = """
import json, sys
from verdict.audit.stores import FilesystemStore
from verdict.gateway import environment
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import load_model
from tests.gateway.test_explanation import both_ways
explained = {}
for store, name in zip(sys.argv[1::2], sys.argv[2::2]):
    registry = Registry(FilesystemStore(store))
    explained[name] = both_ways(load_model(registry, name), registry)
fingerprint = environment.capture()
paths = {"aten": fingerprint.torch.cpu_capability, "mkl": fingerprint.torch.mkl_dispatch, "numpy": fingerprint.numpy_simd}
print(json.dumps({"explained": explained, "paths": paths}))
"""


def test_contributions_are_bit_identical_on_an_avx2_only_cpu(german_model, registry, small):
    """Issue 14, item 8: on an AMD EPYC with AVX2 and no AVX-512, skipping repeated
    rows changed last bits. A fresh process runs the code an AVX2-only CPU runs
    (environment.avx2_only_overrides: ATen's AVX2 kernels, MKL's AVX2 branch,
    NumPy without AVX-512, OpenBLAS Haswell); its contributions, skipping or
    not, must be this process's bits. Without MKL's CNR mode (MKL_CBWR="") it
    fails: MKL's AVX2 sgemm gives rows 4014, 4015, 4094, 4095 of the 4096-row
    explain bucket other bits than the rest."""
    small_model, small_registry = small[:2]
    models = [(german_model, registry), (small_model, small_registry)]
    here = {model.manifest.name: both_ways(model, store)["skipping"] for model, store in models}
    arguments = [str(part) for model, store in models for part in (store.store.root, model.manifest.name)]
    child = subprocess.run(
        [sys.executable, "-c", _ON_AVX2_ONLY_CPU, *arguments],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env={**os.environ, **environment.avx2_only_overrides()},
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    paths = result["paths"]  # the child really ran no AVX-512 code (the environment manifest says so)
    assert paths["aten"] != "AVX512" and "512" not in str(paths["mkl"])
    assert not any("512" in group or group == "X86_V4" for group in paths["numpy"])
    for name, contributions in here.items():
        assert result["explained"][name]["skipping"] == contributions, name
        assert result["explained"][name]["everything"] == contributions, name


_REPLAY = """
import json, sys
from verdict.audit.stores import FilesystemStore
from verdict.gateway.explanation import Explainer, seed_for
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import load_model
from tests.gateway.test_explanation import applicants, bits
registry = Registry(FilesystemStore(sys.argv[1]))
model = load_model(registry, "german-credit")
_, x, scores, seeds = applicants(model, 600, 24)
print(json.dumps([bits(r).hex() for r in Explainer(model, registry.background(model.manifest)).explain(x, scores, seeds)]))
"""


def test_contributions_are_bit_identical_across_processes(german_model, german_explainer, registry):
    _, x, scores, seeds = applicants(german_model, 600, 24)
    here = [bits(r).hex() for r in german_explainer.explain(x, scores, seeds)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLAY, str(registry.store.root)],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        )
        for hash_seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert [json.loads(out) for out in outputs] == [here, here]


# -- additivity and failing closed ------------------------------------------------------


@pytest.mark.parametrize("name", ["german-credit", "taiwan-default"])
def test_additive_for_hundreds_of_applicants(request, registry, name):
    model = request.getfixturevalue("german_model" if name == "german-credit" else "taiwan_model")
    explainer = Explainer(model, registry.background(model.manifest))
    _, x, scores, seeds = applicants(model, 0, 300)
    results = explainer.explain(x, scores, seeds)
    epsilon = model.manifest.explainer.additivity_epsilon
    assert len(results) == 300
    for result, score in zip(results, scores, strict=True):
        assert list(result.contributions) == [spec.name for spec in model.manifest.inputs]
        assert abs(math.fsum([result.base_value, *result.contributions.values()]) - float(score)) <= epsilon
        assert result.additivity_error <= epsilon
        assert (
            result.bucket == model.explain_bucket and 1 < result.evaluations <= model.manifest.explainer.max_evaluations
        )
        assert result.output_space == "probability"


def test_fails_closed_when_the_explained_model_is_not_the_scoring_model(german_model, registry):
    """An explainer wired to another artifact (same schema, other weights) with the
    pinned background: its contributions add up to *its* output, not to the score."""
    manifest = german_model.manifest
    data = load_dataset("german-credit")
    x_all = torch.from_numpy(encode_rows(manifest.inputs, data.rows))
    torch.manual_seed(5)
    other = CreditModel(manifest.inputs, *training._standardisation(manifest.inputs, x_all), hidden=(16, 8)).eval()
    impostor = LoadedModel(manifest, training._export(other, x_all[: training.SCORE_BUCKET]), german_model.device)
    explainer = Explainer(impostor, registry.background(manifest))
    _, x, scores, seeds = applicants(german_model, 0, 8)
    with pytest.raises(AdditivityError) as failure:
        explainer.explain(x, scores, seeds)
    error = failure.value
    assert (
        error.index == 0 and error.score == float(scores[0]) and error.epsilon == manifest.explainer.additivity_epsilon
    )
    assert abs(error.total - error.score) > error.epsilon
    message = str(error)
    assert (
        "request 0" in message
        and repr(error.total) in message
        and repr(error.score) in message
        and "epsilon" in message
    )


def test_fails_closed_when_scores_belong_to_other_requests(german_model, german_explainer):
    _, x, scores, seeds = applicants(german_model, 0, 8)
    with pytest.raises(AdditivityError, match=r"request 0 is not additive"):
        german_explainer.explain(x, scores[::-1].copy(), seeds)


def test_refuses_a_background_that_is_not_the_pinned_one(german_model, registry):
    pinned = registry.background(german_model.manifest)
    other = pinned.replace(b'"A11"', b'"A12"', 1)
    assert other != pinned
    with pytest.raises(ExplainerConfigError, match="not the registered one"):
        Explainer(german_model, other)


def test_refuses_settings_it_cannot_honour(german_model, german_explainer, registry):
    background = german_explainer.background

    def variant(**change) -> Explainer:
        return explainer_with(german_model, registry, background.rows, background.counts, **change)

    assert variant().max_evaluations == german_explainer.max_evaluations
    with pytest.raises(ExplainerConfigError, match="over the manifest's budget"):
        variant(max_evaluations=german_explainer.max_evaluations - 1)
    with pytest.raises(ExplainerConfigError, match="seed policy"):
        variant(seed_policy="uuid4 per request")
    with pytest.raises(ExplainerConfigError, match="permutations >= 2"):
        variant(permutations=1)  # one pair per row cannot estimate its own error
    with pytest.raises(ExplainerConfigError, match="permutations >= 1"):
        variant(algorithm="permutation", certification=None, permutations=0)
    with pytest.raises(ExplainerConfigError, match="only for algorithm 'certified'"):
        variant(algorithm="permutation", permutations=1)
    with pytest.raises(ExplainerConfigError, match=r"needs explainer\.certification"):
        variant(certification=None)
    with pytest.raises(ExplainerConfigError, match="exact enumeration is limited"):
        variant(algorithm="exact", certification=None, max_evaluations=10**12)

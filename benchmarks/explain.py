"""Certified explanations measured against exact Shapley values, and their throughput.

What it prints, for one reference model (``--model``, default German credit),
on the first ``--applicants`` held-out applicants (default 200, the training
split's test rows):

1. Exact interventional Shapley values for the pinned background (the
   reference every accuracy figure is measured against), cached in
   benchmarks/.cache/ under the model artifact's and the background's sha256,
   so a retrained model never reuses stale numbers. Exact is affordable offline
   because the interventional value is the weighted mean over background rows
   k of single-reference Shapley values, and against row k every attribute on
   which row k equals the applicant is a null player: only the subsets of the
   differing attributes are enumerated (about 2**12 instead of 2**20 model rows
   per background row for German credit; about 2**20 of 2**23 for Taiwan:
   38 M rows, about 70 s per applicant here, so Taiwan measures as many
   applicants as ``--exact-budget-s`` allows, about 13 per 900 s, and the next
   run resumes from the cache).
2. One row per explainer configuration (the legacy shared-order permutation
   sample, the certified default, more pairs, exact fallback): certified
   share, reason lists equal to exact, certified-but-wrong ("silent")
   disagreements, errors, how often an error exceeds its bound, model rows,
   and explanations/s at batch 64, every configuration timed side by side with
   ``interleaved`` (and with the naive pattern: a fresh
   ``shap.PermutationExplainer`` per request, given as many model rows).
3. Targets, each met or not.
4. What certifying costs: per applicant with exact values, the pairs per
   background row its certificate would need (predicted from the bounds at
   16 pairs, shrinking like 1/sqrt(pairs), around the exact values), the model
   rows that takes, the rows exact enumeration takes, and, for a share of the
   applicants to be certified, the mean rows of the cheaper of the two and the
   explanations/s the model alone would allow at that cost: the ceiling any
   explainer calling this model faces on this machine.
5. Why the engine samples itself: shap.PermutationExplainer's seed behaviour.

``benchmarks/explain_device.py`` measures exact enumeration on the device the
gateway picks (a GPU where there is one): bits across runs and positions, and
throughput.

``--full-training-set`` (German only) instead measures what background size
pays: exact values against every training row as background, and how often
herded backgrounds of 16, 24, 32 and 64 rows (exact, and certified with the
default settings) name the same reasons, on ``--full-applicants`` (default 100).

Run (2-core machine, one thread; models train in about 20 s each):
    .venv/bin/python benchmarks/explain.py                          # German: 40 s exact (first run), 2.5 min the rest
    .venv/bin/python benchmarks/explain.py --model taiwan-default   # Taiwan: --exact-budget-s (900 s) of exact, 3 min the rest
    .venv/bin/python benchmarks/explain.py --full-training-set      # 17 min the first run (820 M model rows), 30 s cached
Progress of exact computations goes to stderr; results to stdout, headed by the
sha256 of the explainer's sources so numbers can be tied to the code they measured.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import numpy as np
import torch

from benchmarks._common import interleaved, reference_model
from verdict.gateway import certified_sampling, explanation, fidelity, fixed_order, reference_enumeration, training
from verdict.gateway.certified_sampling import Sampled
from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import (
    DEFAULT_CERTIFICATION,
    DEFAULT_FIRST_PAIRS,
    Explainer,
    ExplanationResult,
    encode_background,
    seed_for,
    worst_case_rows,
)
from verdict.gateway.fidelity import Fidelity, certified_reasons, principal_set, top_set
from verdict.gateway.manifest import CertificationSettings
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.schema import encode_rows

CACHE = Path(__file__).resolve().parent / ".cache"
BOUND_SLACK = 1e-9  # an exactly enumerated value has bound 0; float64 summation order differs by ~1e-17
TARGETS = {"certified": 0.99, "silent": 0, "mae": 2e-4, "rate": 500.0, "naive ratio": 5.0}
FULL_TRAINING_SIZES = (16, 24, 32, 64)


def _explainer_code() -> str:
    """sha256 (12 hex) of the explainer's sources as imported: ties printed numbers to the code that produced them."""
    digest = hashlib.sha256()
    for module in (explanation, certified_sampling, fidelity, reference_enumeration, fixed_order):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


EXPLAINER_CODE = _explainer_code()  # at import: the sources may change on disk while a long run goes on


# -- exact reference ---------------------------------------------------------------


def _single_reference_shapley(v: np.ndarray, m: int) -> np.ndarray:
    """Exact Shapley values of m players from the values v of all 2**m coalitions (bit j = player j)."""
    subsets = np.arange(1 << m)
    weight = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])
    phi = np.zeros(m)
    for j in range(m):
        without = subsets[(subsets >> j) & 1 == 0]
        phi[j] = np.sum(weight[np.bitwise_count(without)] * (v[without | (1 << j)] - v[without]))
    return phi


def enumeration_rows(x: np.ndarray, background: np.ndarray) -> int:
    """Model rows ``exact_contributions`` evaluates for encoded row ``x``."""
    return int(sum(1 << int(m) for m in (background != x[None, :]).sum(axis=1)))


def exact_contributions(
    model: LoadedModel, x: np.ndarray, background: np.ndarray, weights: np.ndarray, limit: int | None = None
) -> np.ndarray | None:
    """Exact interventional Shapley values of one encoded row (None if over ``limit`` model rows).

    Independent of gateway.reference_enumeration on purpose: it is the oracle
    the engine is measured against."""
    differing = [np.flatnonzero(b != x) for b in background]
    if limit is not None and enumeration_rows(x, background) > limit:
        return None
    phi = np.zeros(len(x))
    pending: list[tuple[float, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        outputs = model.evaluate_for_explanation(np.concatenate([block for _, _, block in pending])).astype(np.float64)
        offset = 0
        for w, D, block in pending:
            phi[D] += w * _single_reference_shapley(outputs[offset : offset + len(block)], len(D))
            offset += len(block)
        pending.clear()

    for w, b, D in zip(weights, background, differing, strict=True):
        # uint32: Taiwan rows differ on up to 23 attributes, 2**23 coalitions; int64 bits would take 1.5 GB
        bits = ((np.arange(1 << len(D), dtype=np.uint32)[:, None] >> np.arange(len(D), dtype=np.uint32)) & 1).astype(
            bool
        )
        block = np.tile(b, (len(bits), 1))
        block[:, D] = np.where(bits, x[D], b[D])
        pending.append((w, D, block))
        if sum(len(p[2]) for p in pending) >= 1 << 20:
            flush()
    if pending:
        flush()
    return phi


class Reference(NamedTuple):
    """A background to compute exact values against: its canonical bytes (what a manifest would pin) and encoding."""

    label: str
    data: bytes
    matrix: np.ndarray  # float32 [K, d]
    weights: np.ndarray  # float64 [K]


def reference(model: LoadedModel, data: bytes, label: str) -> Reference:
    parsed = msgspec.json.decode(data)
    counts = np.asarray(parsed["counts"], dtype=np.float64)
    return Reference(label, data, encode_rows(model.manifest.inputs, parsed["rows"]), counts / counts.sum())


def cache_path(model: LoadedModel, ref: Reference) -> Path:
    """Keyed by artifact and background sha256: a retrained model or another background never reuses stale values."""
    background = hashlib.sha256(ref.data).hexdigest()
    return CACHE / f"exact-{model.manifest.name}-{model.manifest.artifact_sha256[:12]}-{background[:12]}.npy"


def exact_values(model: LoadedModel, ref: Reference, x: np.ndarray, budget_s: float | None) -> np.ndarray:
    """float64 [m, d]: exact values of the first m <= len(x) applicants (the cached ones, then as many
    more as ``budget_s`` seconds allow; None: all). The cache holds a prefix of the held-out applicants
    and is saved after every applicant, so an interrupted or budgeted run resumes where it stopped."""
    path = cache_path(model, ref)
    done = list(np.load(path)) if path.exists() else []
    first = len(done)
    started = last_report = time.perf_counter()
    total_rows = 0
    for i in range(first, len(x)):
        elapsed = time.perf_counter() - started
        per_applicant = elapsed / (i - first) if i > first else 0.0
        if budget_s is not None and (budget_s <= 0 or elapsed + per_applicant > budget_s):
            print(f"exact {ref.label}: budget of {budget_s:.0f}s spent, stopping at {i}/{len(x)}", file=sys.stderr)
            break
        rows = enumeration_rows(x[i], ref.matrix)
        done.append(exact_contributions(model, x[i], ref.matrix, ref.weights))
        total_rows += rows
        _save(path, np.stack(done))
        now = time.perf_counter()
        if now - last_report >= 5 or i + 1 == len(x):
            print(
                f"exact {ref.label}: applicant {i + 1}/{len(x)}, {rows:,} model rows "
                f"({total_rows:,} this run, {now - started:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
            last_report = now
    return np.stack(done[: len(x)]) if done else np.zeros((0, x.shape[1]))


def _save(path: Path, values: np.ndarray) -> None:
    """Write then rename: an interrupted run never leaves a truncated cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, values)
    os.replace(partial, path)


# -- applicants and configurations ---------------------------------------------------


def applicants(model: LoadedModel, count: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Held-out applicants (the training split's test rows), their scores and seeds."""
    data = load_dataset(model.manifest.training.dataset.name)
    test = np.flatnonzero(training._split(data))[:count]
    x = encode_rows(model.manifest.inputs, [data.rows[i] for i in test])
    return x, model.score_matrix(x)[0], [seed_for(f"bench-{i}") for i in range(len(x))]


class Configuration(NamedTuple):
    name: str
    algorithm: str
    pairs: int  # shared pairs ("permutation"), first-round pairs per background row ("certified")
    certification: CertificationSettings | None

    @property
    def label(self) -> str:
        """The name and the settings actually used (the defaults are gateway.explanation's, whatever they are now)."""
        c = self.certification
        if c is None:
            return self.name
        return f"{self.name} ({self.pairs}..{c.max_pairs} pairs, z {c.z:g}, exact_rows {c.exact_rows:,})"


def _certified(name: str, **changes: int) -> Configuration:
    return Configuration(
        name, "certified", DEFAULT_FIRST_PAIRS, msgspec.structs.replace(DEFAULT_CERTIFICATION, **changes)
    )


CONFIGURATIONS = (
    Configuration("legacy: permutation, 1 shared pair", "permutation", 1, None),
    _certified("certified default"),
    _certified("certified, more pairs", max_pairs=64),
    _certified("certified default + exact fallback", exact_rows=262_144),
)
LEGACY, DEFAULT = CONFIGURATIONS[0], CONFIGURATIONS[1]
LABEL_WIDTH = max(len(c.label) for c in CONFIGURATIONS)


def explainer_for(model: LoadedModel, artifact: bytes, ref: Reference, configuration: Configuration) -> Explainer:
    """An explainer for the same artifact under another configuration and/or background
    (a manifest variant, as a registered model version with these settings would have)."""
    parsed = msgspec.json.decode(ref.data)
    settings = msgspec.structs.replace(
        model.manifest.explainer,
        algorithm=configuration.algorithm,
        permutations=configuration.pairs,
        certification=configuration.certification,
        background_rows=len(parsed["rows"]),
        background_sha256=hashlib.sha256(ref.data).hexdigest(),
        background_summary=parsed["method"],
    )
    settings = msgspec.structs.replace(settings, max_evaluations=worst_case_rows(settings, len(model.manifest.inputs)))
    manifest = msgspec.structs.replace(model.manifest, explainer=settings)
    return Explainer(LoadedModel(manifest, artifact, model.device), ref.data)


# -- accuracy against exact ----------------------------------------------------------


def same_reasons(phi: np.ndarray, exact: np.ndarray, top: int) -> np.ndarray:
    """bool [n]: both reason lists (principal reasons, top reasons) are the same sets as exact's."""
    return np.array(
        [
            set(principal_set(a)) == set(principal_set(b)) and set(top_set(a, top)) == set(top_set(b, top))
            for a, b in zip(phi, exact, strict=True)
        ],
        dtype=bool,
    )


class Measured(NamedTuple):
    """One configuration's explanations of the N applicants, judged against the exact values of the first M."""

    certified: np.ndarray  # bool [N]
    evaluations: np.ndarray  # int [N]
    agree: np.ndarray  # bool [M]: reason lists equal exact's
    error: np.ndarray  # float64 [M, d]: |value - exact|
    outside: float | None  # share of the M * d values outside their bound (None: no bounds estimated)

    @property
    def silent(self) -> int:
        """Certified, yet the reasons differ from exact's: the one outcome a certificate must never hide."""
        return int(np.sum(self.certified[: len(self.agree)] & ~self.agree))

    @property
    def mae(self) -> float:
        return float(self.error.mean()) if len(self.error) else math.nan


def measure(explainer: Explainer, x: np.ndarray, scores: np.ndarray, seeds: list[int], exact: np.ndarray) -> Measured:
    results = explainer.explain(x, scores, seeds)
    names = explainer.names
    phi = np.array([[r.contributions[n] for n in names] for r in results])
    fidelity = [_fidelity(r) for r in results]
    m = len(exact)
    error = np.abs(phi[:m] - exact)
    outside = None
    if all(f.error_bounds for f in fidelity):
        bounds = np.array([[f.error_bounds[n] for n in names] for f in fidelity[:m]])
        outside = float(np.mean(error > bounds + BOUND_SLACK)) if m else float("nan")
    return Measured(
        np.array([f.certified for f in fidelity]),
        np.array([f.evaluations for f in fidelity]),
        same_reasons(phi[:m], exact, explainer.manifest.explainer.top_reasons),
        error,
        outside,
    )


def _fidelity(result: ExplanationResult) -> Fidelity:
    """A fresh result always carries its fidelity (None only on results rebuilt from older records)."""
    assert result.fidelity is not None
    return result.fidelity


# -- throughput ----------------------------------------------------------------------


def batches(explainer: Explainer, x: np.ndarray, scores: np.ndarray, seeds: list[int], size: int, count: int):
    """A timed unit for ``interleaved``: explain the first ``count`` applicants, ``size`` per explain() call."""

    def run() -> int:
        for start in range(0, count, size):
            explainer.explain(x[start : start + size], scores[start : start + size], seeds[start : start + size])
        return count

    return run


def naive_shap(
    model: LoadedModel, background: np.ndarray, x: np.ndarray, seeds: list[int], pairs: int, requests: int
) -> tuple[dict[str, Callable[[], int]], dict[str, int]]:
    """The naive pattern: a fresh shap.PermutationExplainer per request, ``pairs`` shared antithetic
    pairs, the model through the same fixed bucket (padded), and once with unpadded model calls
    (faster, not batch invariant). Returns timed units and a counter of padded-pattern model rows."""
    import shap  # lazy: a heavy import only this pattern and the determinism check need

    counted = {"rows": 0, "calls": 0}

    def padded(rows: np.ndarray) -> np.ndarray:
        counted["rows"] += len(rows)
        return model.evaluate_for_explanation(rows)

    def unpadded(rows: np.ndarray) -> np.ndarray:
        return model.score_matrix(rows, bucket=len(rows))[0]

    def pattern(fn: Callable[[np.ndarray], np.ndarray], count: bool) -> Callable[[], int]:
        def run() -> int:
            for i in range(requests):
                shap_explainer = shap.PermutationExplainer(
                    fn, shap.maskers.Independent(background, max_samples=len(background)), seed=seeds[i] % 2**32
                )  # np.random.seed takes 32 bits
                shap_explainer(x[i : i + 1], max_evals=pairs * (2 * x.shape[1] + 1), silent=True)
            counted["calls"] += requests if count else 0
            return requests

        return run

    return {"naive shap": pattern(padded, True), "naive shap, unpadded": pattern(unpadded, False)}, counted


def measure_rates(
    model: LoadedModel,
    explainers: dict[str, Explainer],
    x: np.ndarray,
    scores: np.ndarray,
    seeds: list[int],
    naive_pairs: int,
) -> tuple[dict[str, float], float]:
    """explanations/s, every candidate timed side by side: each configuration at batch 64 over the
    batch-64 slices of the applicants, the default at batch 1 (64 requests), and the naive pattern
    (32 requests). Also returns the naive pattern's model rows per explanation."""
    count = len(x) // 64 * 64
    candidates = {label: batches(e, x, scores, seeds, 64, count) for label, e in explainers.items()}
    candidates["default, batch 1"] = batches(explainers[DEFAULT.label], x, scores, seeds, 1, 64)
    naive, counted = naive_shap(model, explainers[DEFAULT.label].background.matrix, x, seeds, naive_pairs, 32)
    candidates.update(naive)
    rates = interleaved(candidates, rounds=3)
    return rates, counted["rows"] / counted["calls"]


# -- report --------------------------------------------------------------------------


def _pct(share: float) -> str:
    return f"{share:.1%}" if math.isfinite(share) else "n/a"


def report(args: argparse.Namespace) -> None:
    registry, model = reference_model(args.model)
    artifact = registry.artifact(model.manifest)
    pinned = reference(model, registry.background(model.manifest), "pinned background")
    n = args.applicants
    x, scores, seeds = applicants(model, max(n, 64))
    limit = n if args.exact_limit is None else min(n, args.exact_limit)
    started = time.perf_counter()
    exact = exact_values(model, pinned, x[:limit], args.exact_budget_s)
    m, d, k = len(exact), len(model.manifest.inputs), len(pinned.matrix)
    rows = np.array([enumeration_rows(row, pinned.matrix) for row in x[:n]])
    print(
        f"model {model.manifest.ref}: {d} attributes, pinned background {k} rows "
        f"(sha256 {hashlib.sha256(pinned.data).hexdigest()[:12]}), explain bucket {model.explain_bucket}, "
        f"threads {torch.get_num_threads()}, explainer code sha256 {EXPLAINER_CODE}; {n} held-out applicants"
    )
    print(
        f"exact reference: exact interventional Shapley values for the pinned background on {m} of the {n} applicants "
        f"(enumeration needs {rows.mean():,.0f} model rows per applicant on average, max {rows.max():,}; "
        f"cache {cache_path(model, pinned).name}; {time.perf_counter() - started:.0f}s this run)"
        + (
            ""
            if m == n
            else f"; the other {n - m} were not computed (--exact-limit / --exact-budget-s), rerun to resume"
        )
    )

    explainers = {c.label: explainer_for(model, artifact, pinned, c) for c in CONFIGURATIONS}
    measured = {label: measure(e, x[:n], scores[:n], seeds[:n], exact) for label, e in explainers.items()}
    default = measured[DEFAULT.label]
    naive_pairs = max(1, round(default.evaluations.mean() / measured[LEGACY.label].evaluations.mean()))
    rates, naive_rows = measure_rates(model, explainers, x, scores, seeds, naive_pairs)

    print()
    print(
        f"configurations: certified % and model rows over all {n} applicants; reasons = exact (principal and top-"
        f"{model.manifest.explainer.top_reasons} reasons, as sets), silent (certified but reasons differ), errors and "
        f"values outside their bound (|error| > bound + {BOUND_SLACK:g}) over the {m} with exact values; "
        f"explanations/s at batch 64 over {len(x) // 64 * 64} applicants, side by side (median of 3 interleaved rounds)"
    )
    header = (
        f"{'configuration':<{LABEL_WIDTH}} {'certified':>9} {'reasons=exact':>13} {'silent':>6} {'mean |err|':>10} "
        f"{'max |err|':>9} {'outside bound':>13} {'rows mean':>9} {'rows max':>9} {'expl/s b64':>10}"
    )
    print(header)
    for label, r in measured.items():
        outside = "n/a" if r.outside is None else f"{r.outside:.4f}"
        print(
            f"{label:<{LABEL_WIDTH}} {_pct(r.certified.mean()):>9} {_pct(r.agree.mean() if m else math.nan):>13} {r.silent:>6} "
            f"{r.mae:>10.2e} {r.error.max() if m else math.nan:>9.2e} {outside:>13} "
            f"{r.evaluations.mean():>9,.0f} {r.evaluations.max():>9,} {rates[label]:>10,.0f}"
        )

    legacy = measured[LEGACY.label]
    print()
    print(f"throughput of the certified default ({n} applicants' explanations, same interleaved run):")
    print(
        f"  batch 1 (64 requests one at a time): {rates['default, batch 1']:,.0f}/s; batch 64: {rates[DEFAULT.label]:,.0f}/s"
    )
    print(
        f"  naive pattern, a fresh shap.PermutationExplainer per request (32 requests), {naive_pairs} shared pairs "
        f"to spend about the default's model rows: {rates['naive shap']:,.0f}/s with {naive_rows:,.0f} model rows "
        f"per explanation (each call padded to {model.explain_bucket}); unpadded model calls (not batch invariant): "
        f"{rates['naive shap, unpadded']:,.0f}/s"
    )
    naive_ratio = rates[DEFAULT.label] / rates["naive shap"]
    print(
        f"  ratios: default batch 64 / naive shap {naive_ratio:.1f}x (target >= {TARGETS['naive ratio']:g}x), "
        f"/ unpadded naive {rates[DEFAULT.label] / rates['naive shap, unpadded']:.1f}x; "
        f"default / legacy: {default.evaluations.mean() / legacy.evaluations.mean():.1f}x the model rows, "
        f"{rates[LEGACY.label] / rates[DEFAULT.label]:.1f}x slower at batch 64"
    )

    print()
    report_targets(args.model, measured, rates, m, n, naive_ratio)
    print()
    report_what_certifying_costs(model, explainers[DEFAULT.label], x[:m], seeds[:m], exact)
    print()
    report_shap_determinism(model, pinned.matrix, x)


def report_targets(
    model_name: str, measured: dict[str, Measured], rates: dict[str, float], m: int, n: int, naive_ratio: float
) -> None:
    """The issue's targets for the certified default; which configurations meet the accuracy ones."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    default = measured[DEFAULT.label]
    silent, mae = default.silent, default.mae
    print(f"targets, certified default, {model_name}:")
    print(
        f"  >= {TARGETS['certified']:.0%} certified: {_pct(default.certified.mean())} of {n} applicants, "
        f"{verdict(default.certified.mean() >= TARGETS['certified'])}"
    )
    print(f"  0 silent disagreements: {silent} of {m} applicants with exact values, {verdict(silent == 0 and m > 0)}")
    print(f"  mean |error| <= {TARGETS['mae']:g}: {mae:.2e} over {m} applicants, {verdict(mae <= TARGETS['mae'])}")
    if model_name == "german-credit":
        rate = rates[DEFAULT.label]
        print(f"  >= {TARGETS['rate']:g} explanations/s at batch 64: {rate:,.0f}/s, {verdict(rate >= TARGETS['rate'])}")
        print(
            f"  >= {TARGETS['naive ratio']:g}x the naive shap pattern: {naive_ratio:.1f}x, {verdict(naive_ratio >= TARGETS['naive ratio'])}"
        )
    print("  every configuration (met / NOT met):")
    for label, r in measured.items():
        checks = {
            "certified": r.certified.mean() >= TARGETS["certified"],
            "silent": r.silent == 0 and m > 0,
            "MAE": r.mae <= TARGETS["mae"],
        }
        if model_name == "german-credit":
            checks["rate"] = rates[label] >= TARGETS["rate"]
        print(f"    {label:<{LABEL_WIDTH}} " + ", ".join(f"{name} {verdict(ok)}" for name, ok in checks.items()))


# -- what certifying every applicant would cost --------------------------------------------

MARGIN_PAIRS = 16  # the default's max_pairs: bounds measured there are scaled to other pair counts
SHARES = (0.5, 0.9, 0.95, 0.99, 1.0)


def pairs_to_certify(phi: np.ndarray, sampled: Sampled, top: int) -> float:
    """Pairs per background row after which the certificate would hold, were the estimate the exact
    values ``phi`` and the bounds (separate and pairwise) those measured at ``sampled.pairs`` pairs,
    shrunk like 1 / sqrt(pairs). A bisection on the bounds' scale; inf when no scale certifies."""

    def holds(scale: float) -> bool:
        def pairs(above: np.ndarray, below: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
            return sampled.pair_bounds(above, below, same_sign) * scale

        return certified_reasons(phi, sampled.bounds * scale, top, pairs)

    low, high = 1e-6, 1e2  # log-space bisection of the largest scale that still certifies
    if not holds(low):
        return math.inf
    if holds(high):
        return 2.0
    for _ in range(50):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if holds(middle) else (low, middle)
    return max(2.0, sampled.pairs / low**2)


def model_rows_per_second(model: LoadedModel, x: np.ndarray) -> float:
    """The model alone at the explain bucket (median of 3), the ceiling every explainer shares."""
    rows = np.resize(x, (1 << 18, x.shape[1]))
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        model.evaluate_for_explanation(rows)
        rates.append(len(rows) / (time.perf_counter() - started))
    return float(np.median(rates))


def report_what_certifying_costs(
    model: LoadedModel, explainer: Explainer, x: np.ndarray, seeds: list[int], exact: np.ndarray
) -> None:
    """Why the certified share stops where it does: per applicant, the model rows that would certify
    its reasons by sampling (predicted from the bounds at 16 pairs) or by exact enumeration, and what
    the cheaper of the two costs when a share of the applicants must be certified."""
    if not len(exact):
        return
    top = model.manifest.explainer.top_reasons
    sampled = explainer.sampled(x, seeds, MARGIN_PAIRS)
    background = explainer.background.matrix
    differing = (x[:, None, :] != background[None, :, :]).sum(axis=2)  # [m, K]
    rows_per_pair = 2 * np.maximum(differing - 1, 0).sum(axis=1)
    pairs = np.array([pairs_to_certify(phi, s, top) for phi, s in zip(exact, sampled, strict=True)])
    by_sampling = 1 + rows_per_pair * pairs
    by_enumeration = np.array([enumeration_rows(row, background) for row in x], dtype=np.float64)
    cheapest = np.sort(np.minimum(by_sampling, by_enumeration))
    rate = model_rows_per_second(model, x)
    print(
        f"what certifying costs ({len(exact)} applicants with exact values; pairs predicted from the bounds at "
        f"{MARGIN_PAIRS} pairs per background row, scaled like 1/sqrt(pairs), around the exact values; "
        f"the model alone evaluates {rate:,.0f} rows/s at the explain bucket here):"
    )
    print(
        "  pairs per background row needed, percentiles 50/90/95/99: "
        + " / ".join(f"{np.percentile(pairs, q):,.0f}" for q in (50, 90, 95, 99))
    )
    print(
        "  model rows per explanation, percentiles 50/90/99: sampling "
        + " / ".join(f"{np.percentile(by_sampling, q):,.0f}" for q in (50, 90, 99))
        + "; exact enumeration "
        + " / ".join(f"{np.percentile(by_enumeration, q):,.0f}" for q in (50, 90, 99))
    )
    print(f"  {'certify the cheapest':<22} {'rows mean (cheaper of the two)':>30} {'ceiling expl/s (model alone)':>28}")
    for share in SHARES:
        count = max(1, math.ceil(share * len(cheapest)))
        mean = (cheapest[:count].sum() + (len(cheapest) - count)) / len(cheapest)  # the rest: f(x) only
        print(f"  {share:<22.0%} {mean:>30,.0f} {rate / mean:>28,.0f}")


# -- shap's own determinism -------------------------------------------------------------


def report_shap_determinism(model: LoadedModel, background: np.ndarray, x: np.ndarray) -> None:
    """Why the engine samples orders itself: what shap.PermutationExplainer(seed=...) does here."""
    import shap  # lazy: heavy, only this section and the naive pattern need it

    budget = 2 * x.shape[1] + 1  # one antithetic pair

    def fresh(seed: int = 7):
        return shap.PermutationExplainer(
            model.evaluate_for_explanation, shap.maskers.Independent(background, max_samples=len(background)), seed=seed
        )

    def values(shap_explainer, rows: np.ndarray) -> np.ndarray:
        return shap_explainer(rows, max_evals=budget, silent=True).values

    first, second = values(fresh(), x[:2]), values(fresh(), x[:2])
    reused = fresh()
    values(reused, x[:2])
    again = values(reused, x[:2])
    interrupted = fresh()
    np.random.random()  # anything else in the process drawing from NumPy's global generator
    disturbed = values(interrupted, x[:2])
    alone = values(fresh(), x[1:2])[0]
    try:
        fresh(seed=2**32)
        wide_seed = "accepted"
    except ValueError:
        wide_seed = "refused (ValueError: seeds are 32-bit)"
    print(
        f"shap {shap.__version__} PermutationExplainer(seed=7), one antithetic pair ({budget} evaluations), 2 applicants:"
    )
    print(f"  two fresh explainers, same seed, called at once: identical = {np.array_equal(first, second)}")
    print(
        f"  the same explainer called twice: identical = {np.array_equal(first, again)} (max diff {np.abs(first - again).max():.1e})"
    )
    print(
        f"  one np.random draw elsewhere before the call: identical = {np.array_equal(first, disturbed)} (max diff {np.abs(first - disturbed).max():.1e})"
    )
    print(
        f"  a row explained alone vs after another row: identical = {np.array_equal(alone, first[1])} (max diff {np.abs(alone - first[1]).max():.1e})"
    )
    print(f"  a 53-bit request seed: {wide_seed}")


# -- what background size pays -----------------------------------------------------------


def report_full_training_set(args: argparse.Namespace) -> None:
    """Reasons from small herded backgrounds (exact and certified) against exact values over every training row."""
    registry, model = reference_model("german-credit")
    artifact = registry.artifact(model.manifest)
    n = args.full_applicants
    x, scores, seeds = applicants(model, n)
    data = load_dataset(model.manifest.training.dataset.name)
    train_mask = ~training._split(data)
    train_rows = [row for row, keep in zip(data.rows, train_mask, strict=True) if keep]
    full = reference(
        model, encode_background(train_rows, [1] * len(train_rows), "every training row"), "full training set"
    )
    started = time.perf_counter()
    full_exact = exact_values(model, full, x, args.exact_budget_s)
    herded = {
        size: reference(model, training._background(data, train_mask, size), f"herded {size} rows")
        for size in FULL_TRAINING_SIZES
    }
    exact = {size: exact_values(model, ref, x, args.exact_budget_s) for size, ref in herded.items()}
    m = min(len(full_exact), *(len(e) for e in exact.values()))
    top = model.manifest.explainer.top_reasons
    full_exact = full_exact[:m]
    print(
        f"model {model.manifest.ref} (explainer code sha256 {EXPLAINER_CODE}): reasons against exact values "
        f"over the whole training set as background "
        f"({len(train_rows)} rows, count 1 each; {m} of {n} held-out applicants"
        + ("" if m == n else ", the rest not computed within --exact-budget-s: rerun to resume")
        + f"; exact took {time.perf_counter() - started:.0f}s this run); mean |contribution| {np.abs(full_exact).mean():.2e}"
    )
    print(
        "reasons = full: principal and top-4 reasons, as sets, equal those of the full-training-set exact values; "
        f"certified: {DEFAULT.label} on that background"
    )
    print(
        f"{'background':<18} {'exact: reasons = full':>21} {'principal = full':>16} {'MAE vs full':>11} "
        f"{'certified: reasons = full':>25} {'certified':>9} {'MAE vs full':>11} {'rows mean':>9} {'rows max':>8} "
        f"{'rows vs pinned':>14}"
    )
    pinned = registry.background(model.manifest)
    certified = {
        size: measure(explainer_for(model, artifact, ref, DEFAULT), x[:m], scores[:m], seeds[:m], full_exact)
        for size, ref in herded.items()
    }
    pinned_rows = next(certified[size].evaluations.mean() for size, ref in herded.items() if ref.data == pinned)
    for size, ref in herded.items():
        values, sampled = exact[size][:m], certified[size]
        principal = np.mean(
            [set(principal_set(a)) == set(principal_set(b)) for a, b in zip(values, full_exact, strict=True)]
        )
        label = f"herded {size}" + (" (pinned)" if ref.data == pinned else "")
        print(
            f"{label:<18} {_pct(same_reasons(values, full_exact, top).mean()):>21} {_pct(principal):>16} "
            f"{np.abs(values - full_exact).mean():>11.2e} {_pct(sampled.agree.mean()):>25} "
            f"{_pct(sampled.certified.mean()):>9} {sampled.mae:>11.2e} {sampled.evaluations.mean():>9,.0f} "
            f"{sampled.evaluations.max():>8,} {sampled.evaluations.mean() / pinned_rows:>13.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="german-credit", choices=sorted(training.RECIPES))
    parser.add_argument("--applicants", type=int, default=200, help="held-out applicants explained and timed")
    parser.add_argument("--exact-limit", type=int, help="compute exact values for at most this many (default: all)")
    parser.add_argument(
        "--exact-budget-s",
        type=float,
        default=900.0,
        help="seconds of new exact computation per reference this run (cached values are free; 0: cache only)",
    )
    parser.add_argument(
        "--full-training-set",
        action="store_true",
        help="German only: reasons of herded backgrounds vs exact values over the whole training set (slow, cached)",
    )
    parser.add_argument("--full-applicants", type=int, default=100, help="applicants for --full-training-set")
    args = parser.parse_args()
    if args.full_training_set:
        if args.model != "german-credit":
            parser.error("--full-training-set measures German credit only (Taiwan's exact values are 30 s per 24 rows)")
        report_full_training_set(args)
    else:
        report(args)


if __name__ == "__main__":
    main()

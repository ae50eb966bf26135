"""Deterministic, additive, batched interventional SHAP contributions.

What is computed: interventional Shapley values of the model's probability
output over the applicant's own attributes, against the background pinned
by sha256 in the manifest. A coalition S is worth
``v(S) = sum_k w_k f(x_S, b_k)``: the applicant's values for S, background row
k's values for the rest, averaged with the background weights; this is
exactly what shap's ``Independent`` masker integrates over (tests check our
numbers against ``shap.ExactExplainer`` and a brute-force oracle).

Why we sample and aggregate ourselves instead of calling shap's explainers:
``shap.PermutationExplainer(seed=s)`` calls ``np.random.seed(s)`` once in its
constructor and then ``np.random.shuffle`` on NumPy's *global* generator per
permutation (measured with shap 0.51.0, docs/explanations.md): the same
explainer called twice gives different values, anything else drawing from
``np.random`` in between changes them, and a request's values depend on which
requests were explained before it in the same call. It also evaluates one
request at a time. A replayable explanation needs none of that, so each
request's permutations come from its own ``Generator(PCG64(seed))``, the masked
rows of every request in a batch are built with array operations and sent
through the runtime's ``evaluate_for_explanation`` (any
gateway.model_runtime.ModelRuntime) together, at the explain bucket the
explainer was built for, and every
reduction runs in a fixed order that does not depend on the batch. Rows never
interact in a forward pass at the fixed explain bucket, so a request's
contributions are bit-identical whatever else is in the batch.

Why additivity is checked against the decision score: base value plus
contributions must reproduce the number on the audit record, not merely the
explainer's own evaluation of the model; a mismatch means the explanation
does not explain that decision, and the decision fails closed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import msgspec
import numpy as np

from verdict.audit.canonical import canonical_bytes
from verdict.gateway.certified_sampling import CertifiedSampler, Sampled
from verdict.gateway.fidelity import Fidelity
from verdict.gateway.fixed_order import ordered_sum
from verdict.gateway.manifest import CertificationSettings, Manifest
from verdict.gateway.schema import InputValidationError, encode_rows, validate_batch

__all__ = [
    "SEED_POLICY",
    "AdditivityError",
    "Background",
    "Budget",
    "Evaluates",
    "Explainer",
    "ExplainerConfigError",
    "ExplanationResult",
    "decode_background",
    "default_budget",
    "encode_background",
    "seed_for",
    "summarise_background",
]

SEED_POLICY = "first 8 bytes of sha256('verdict.explain.seed' || utf8(request_id)), big-endian, shifted right by 11 bits (53-bit seed)"
_SEED_DOMAIN = b"verdict.explain.seed"
# Requests are explained in groups of about this many masked rows (64 forward
# passes at the 4096 bucket): large enough to amortise Python, small enough to
# keep a batch replay of thousands of decisions within memory. Grouping never
# changes a request's bits (rows do not interact inside a forward pass).
ROWS_PER_GROUP = 1 << 18
# Worst-case model rows per explanation for a new model's defaults. The study in
# docs/explanations.md found the background summary, not the number of
# permutations, dominating the error; 24 herded rows and one antithetic pair
# (913 rows for German credit, 1057 for Taiwan) fit, and keep batch 64 far
# above 500 explanations/s and above 5x one shap explainer per request.
DEFAULT_ROW_BUDGET = 1200
# A new model's certified sampling (docs/explanations.md, "Certified reasons"):
# two pairs per background row to start (the fewest that estimate an error),
# doubling up to 16; bounds of 4 standard errors; every bound at most 0.01;
# then exact enumeration for a request sampling could not certify, when it
# needs at most 65,536 model rows (every request of a model with up to about
# 11 attributes; on German credit, the applicants close to their background rows).
DEFAULT_FIRST_PAIRS = 2
DEFAULT_CERTIFICATION = CertificationSettings(z=4.0, target_error=1e-2, max_pairs=16, exact_rows=65_536)
MAX_EXACT_ATTRIBUTES = 16
METHODS = {
    "exact": "interventional-shapley/exact-enumeration",
    "permutation": "interventional-shapley/antithetic-permutations",
    "certified": "interventional-shapley/certified-per-reference-permutations",
}
BACKGROUND_FORMAT = "verdict.background/v1"


class ExplainerConfigError(ValueError):
    """The manifest's explainer settings or background cannot be honoured."""


class AdditivityError(RuntimeError):
    """base value + sum(contributions) does not reproduce the decision score: fail closed."""

    def __init__(self, index: int, total: float, score: float, epsilon: float) -> None:
        self.index, self.total, self.score, self.epsilon = index, total, score, epsilon
        super().__init__(
            f"explanation of request {index} is not additive: base value + sum of contributions = {total!r}, "
            f"decision score = {score!r}, |difference| = {abs(total - score)!r} exceeds epsilon {epsilon!r}; "
            f"refusing to return an explanation that does not explain the decision"
        )

    def __reduce__(self):  # noqa: ANN204 - keep the fields when the error crosses a process boundary
        return type(self), (self.index, self.total, self.score, self.epsilon)


class ExplanationResult(msgspec.Struct, frozen=True):
    method: str
    output_space: str
    base_value: float
    contributions: dict[str, float]  # attribute name -> contribution, schema order
    seed: int
    evaluations: int  # model rows evaluated for this request
    bucket: int
    additivity_error: float
    fidelity: Fidelity | None = None  # None: rebuilt from a record written before fidelity was recorded


def seed_for(request_id: str) -> int:
    """The request's explanation seed (SEED_POLICY).

    Why 53 bits: the seed goes on the audit record, whose canonical JSON
    (I-JSON) only carries integers up to 2**53 exactly."""
    digest = hashlib.sha256(_SEED_DOMAIN + request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 11


# -- pinned background --------------------------------------------------------


class Evaluates(Protocol):
    """What the explainer needs of a model: the manifest it explains under (settings,
    schema) and masked-row evaluations at a fixed bucket. Every model runtime
    (gateway.model_runtime.ModelRuntime) is one; so is a view of a runtime under
    another manifest (validation compares against an exact-algorithm copy)."""

    @property
    def manifest(self) -> Manifest: ...

    def evaluate_for_explanation(self, x: np.ndarray, explain_bucket: int) -> np.ndarray: ...


class Background(NamedTuple):
    rows: list[dict[str, Any]]  # real applicants, schema order
    counts: list[int]  # how many training applicants each row stands for
    matrix: np.ndarray  # float32 [K, d], encoded
    weights: np.ndarray  # float64 [K], counts / sum(counts)


class _BackgroundFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    method: str
    rows: list[dict[str, Any]]
    counts: list[int]


def encode_background(rows: Sequence[dict[str, Any]], counts: Sequence[int], method: str) -> bytes:
    """Canonical bytes of a background summary (what the manifest's sha256 pins)."""
    return canonical_bytes(_BackgroundFile(BACKGROUND_FORMAT, method, list(rows), [int(c) for c in counts]))


def decode_background(manifest: Manifest, data: bytes) -> Background:
    """Verify the bytes are the pinned background and decode them; anything
    else is refused so no explanation is computed against an unrecorded reference."""
    settings = manifest.explainer
    actual = hashlib.sha256(data).hexdigest()
    if actual != settings.background_sha256:
        raise ExplainerConfigError(
            f"background hashes to {actual}, manifest {manifest.ref} pins {settings.background_sha256}; "
            f"refusing to explain against a background that is not the registered one"
        )
    try:
        parsed = msgspec.json.decode(data, type=_BackgroundFile)
        rows = validate_batch(manifest.inputs, parsed.rows, max_rows=1 << 16)
    except (msgspec.DecodeError, InputValidationError) as exc:
        raise ExplainerConfigError(f"background of {manifest.ref} is malformed: {exc}") from None
    counts = parsed.counts
    if parsed.format != BACKGROUND_FORMAT or len(counts) != len(rows) or min(counts, default=0) < 1:
        raise ExplainerConfigError(
            f"background of {manifest.ref}: need format {BACKGROUND_FORMAT} and one count >= 1 per row"
        )
    if len(rows) != settings.background_rows:
        raise ExplainerConfigError(
            f"background of {manifest.ref} has {len(rows)} rows, manifest says {settings.background_rows}"
        )
    weights = np.asarray(counts, dtype=np.float64) / float(sum(counts))
    return Background(rows, counts, encode_rows(manifest.inputs, rows), weights)


# -- background summary (chosen at training time) -------------------------------

BACKGROUND_SUMMARY = (
    "marginal-matching herding over the training rows: every attribute one-hot encoded (categories as they are, "
    "numbers by their training deciles); starting empty, repeatedly add the training row that brings the sample's "
    "mean encoding closest (squared distance) to the whole training set's, lowest row index on ties; {rows} rows, "
    "each with count 1"
)
_DECILES = np.linspace(0, 1, 11)[1:-1]


def _indicator_columns(specs: Sequence[Any], x: np.ndarray) -> np.ndarray:
    """int [N, d]: for each row and attribute, the column of its one-hot
    indicator (its category, or its training decile for a number) in one
    concatenated encoding of all attributes."""
    columns, offset = [], 0
    for j, spec in enumerate(specs):
        if spec.kind == "category":
            level, width = x[:, j].astype(np.int64), len(spec.categories)
        else:
            level, width = np.searchsorted(np.quantile(x[:, j], _DECILES), x[:, j], side="right"), len(_DECILES) + 1
        columns.append(offset + level)
        offset += width
    return np.stack(columns, axis=1)


def summarise_background(specs: Sequence[Any], x: np.ndarray, rows: int) -> list[int]:
    """Indexes of ``rows`` distinct training rows whose attribute distributions
    match the whole set's (BACKGROUND_SUMMARY).

    Why marginals: for the near-additive part of a model, an attribute's
    interventional contribution depends on the background only through that
    attribute's distribution, so a small sample that reproduces every
    attribute's distribution reproduces most of what the full training set
    would give. Measured (docs/explanations.md): 24 herded rows come closer
    to the full-training-set contributions than 64 hashed, score-stratified
    or k-means rows.

    Every row's encoding has exactly one 1 per attribute, so
    |(total + e_i)/s - target|^2 = const + (2/s) * sum of (total/s - target)
    over row i's columns: each step is a gather and a sum in attribute order
    (ordered_sum, not NumPy's sum, whose order is NumPy's to change: the
    chosen rows, and so the trained model's sha256, must not depend on it)."""
    columns = _indicator_columns(specs, x)
    target = np.bincount(columns.ravel(), minlength=int(columns.max()) + 1) / len(x)
    total = np.zeros_like(target)
    chosen: list[int] = []
    for size in range(1, rows + 1):
        closeness = ordered_sum((total / size - target)[columns], axis=1)
        closeness[chosen] = np.inf
        chosen.append(int(np.argmin(closeness)))
        np.add.at(total, columns[chosen[-1]], 1.0)
    return chosen


# -- coalition plans ------------------------------------------------------------
#
# A plan decides which coalitions a request needs and how their values combine
# into contributions. Coalition c of background row k is the model input
# "applicant's values on mask[c], row k's values elsewhere". Where row k already
# agrees with the applicant on the features that distinguish coalition c from a
# smaller one, both inputs are the same bytes and (fixed bucket) the same output
# bits, so ``sources`` maps every (c, k) to the coalition whose row is evaluated
# in its place (-1: the empty coalition, i.e. row k itself, evaluated once per
# explainer). Skipping those rows changes no bit of the result (tested); it
# removes about 40 % of German credit's model rows (shap's own delta masking
# skips the same rows).


class _Plan(Protocol):
    coalitions: int  # masked coalitions per request (excluding empty and full)

    def draw(self, seeds: Sequence[int]) -> Any:
        """Per-request randomness for a batch (None when the plan has none)."""

    def masks(self, drawn: Any, n: int) -> np.ndarray:
        """bool [n, coalitions, d]: True = the applicant's own value."""

    def sources(self, drawn: Any, differs: np.ndarray) -> np.ndarray:
        """differs bool [n, K, d] (background row k differs from the applicant on
        feature j) -> int [n, coalitions, K]: the coalition whose row is identical."""

    def combine(self, values: np.ndarray, base: float, full: np.ndarray, drawn: Any) -> np.ndarray:
        """Coalition values float64 [n, coalitions], v(empty), v(full) [n] -> contributions [n, d]."""


class _PermutationPlan:
    """Antithetic permutation sampling (as in shap's PermutationExplainer): each
    sampled order of the attributes is walked forward and in reverse; a walk
    adds one attribute per step and telescopes from v(empty) to v(full), so the
    estimate is exactly additive whatever the number of walks."""

    def __init__(self, d: int, pairs: int) -> None:
        self.d, self.pairs, self.walks = d, pairs, 2 * pairs
        self.coalitions = self.walks * (d - 1)

    def orders(self, seed: int) -> np.ndarray:
        """int [walks, d]: the seed's attribute orders, forward ones then their reversals."""
        rng = np.random.Generator(np.random.PCG64(seed))
        forward = rng.permuted(np.tile(np.arange(self.d), (self.pairs, 1)), axis=1)
        return np.concatenate([forward, forward[:, ::-1]])

    def draw(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        orders = np.stack([self.orders(s) for s in seeds])  # [n, walks, d]
        return orders, np.argsort(orders, axis=2)  # ranks: step at which each attribute joins

    def masks(self, drawn: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
        steps = np.arange(1, self.d)[None, None, :, None]
        return (drawn[1][:, :, None, :] < steps).reshape(n, self.coalitions, self.d)

    def sources(self, drawn: tuple[np.ndarray, np.ndarray], differs: np.ndarray) -> np.ndarray:
        orders = drawn[0]
        n, k = differs.shape[:2]
        # does row k differ on the attribute added at step t (t = 1..d-1)?
        joins = np.swapaxes(differs, 1, 2)[np.arange(n)[:, None, None], orders[:, :, :-1]]  # [n, walks, d-1, K]
        step = np.where(joins, np.arange(1, self.d)[None, None, :, None], 0)
        last = np.maximum.accumulate(step, axis=2)  # latest step that changed row k
        offset = (np.arange(self.walks) * (self.d - 1))[None, :, None, None]
        return np.where(last > 0, offset + last - 1, -1).reshape(n, self.coalitions, k)

    def combine(
        self, values: np.ndarray, base: float, full: np.ndarray, drawn: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        n = len(full)
        walks = values.reshape(n, self.walks, self.d - 1)
        start = np.full((n, self.walks, 1), base)
        end = np.broadcast_to(full[:, None, None], (n, self.walks, 1))
        steps = np.diff(np.concatenate([start, walks, end], axis=2), axis=2)  # step t adds the attribute at position t
        per_walk = np.take_along_axis(steps, drawn[1], axis=2)  # [n, walks, d] by attribute
        return ordered_sum(per_walk, axis=1) / self.walks


class _ExactPlan:
    """Every coalition, Shapley-weighted: exact up to float64 rounding.
    Coalition c is the subset whose bit pattern is c + 1 (bit j = attribute j)."""

    def __init__(self, d: int) -> None:
        self.d = d
        self.coalitions = (1 << d) - 2
        subsets = np.arange(1 << d)
        bits = ((subsets[:, None] >> np.arange(d)[None, :]) & 1).astype(bool)  # [2^d, d]
        self._masks = bits[1:-1]
        self._subsets = subsets[1:-1]
        weight = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)])
        self._without = np.stack([subsets[~bits[:, j]] for j in range(d)])  # [d, 2^(d-1)] subsets lacking j
        self._with = self._without | (1 << np.arange(d))[:, None]
        self._weight = weight[bits[self._without].sum(axis=2)]

    def draw(self, seeds: Sequence[int]) -> None:
        return None

    def masks(self, drawn: None, n: int) -> np.ndarray:
        return np.broadcast_to(self._masks, (n, *self._masks.shape))

    def sources(self, drawn: None, differs: np.ndarray) -> np.ndarray:
        differing = (differs.astype(np.int64) << np.arange(self.d)).sum(axis=2)  # [n, K] bit pattern
        return (self._subsets[None, :, None] & differing[:, None, :]) - 1

    def combine(self, values: np.ndarray, base: float, full: np.ndarray, drawn: None) -> np.ndarray:
        n = len(full)
        table = np.concatenate([np.full((n, 1), base), values, full[:, None]], axis=1)  # indexed by subset bits
        gains = (table[:, self._with] - table[:, self._without]) * self._weight  # [n, d, 2^(d-1)]
        while gains.shape[2] > 1:  # pairwise halving: a fixed order, log2 vectorised steps
            half = gains.shape[2] // 2
            gains = gains[:, :, :half] + gains[:, :, half:]
        return gains[:, :, 0]


class Budget(NamedTuple):
    algorithm: str
    permutations: int
    max_evaluations: int  # model rows per explanation before skipping repeats
    certification: CertificationSettings | None = None


def rows_needed(algorithm: str, attributes: int, background_rows: int, permutations: int) -> int:
    """Worst-case model rows per explanation (every coalition, every background row, plus f(x))."""
    coalitions = (1 << attributes) - 2 if algorithm == "exact" else 2 * permutations * (attributes - 1)
    return coalitions * background_rows + 1


def default_budget(attributes: int, background_rows: int, row_budget: int = DEFAULT_ROW_BUDGET) -> Budget:
    """Exact enumeration when every coalition fits the row budget, otherwise
    certified sampling with DEFAULT_CERTIFICATION. Chosen by measured accuracy
    against cost (docs/explanations.md)."""
    exact = rows_needed("exact", attributes, background_rows, 0)
    if attributes <= MAX_EXACT_ATTRIBUTES and exact <= row_budget:
        return Budget("exact", 0, exact)
    pairs, c = DEFAULT_FIRST_PAIRS, DEFAULT_CERTIFICATION
    return Budget(
        "certified",
        pairs,
        rows_needed("certified", attributes, background_rows, c.max_pairs) + c.exact_rows,
        c,
    )


def worst_case_rows(settings: Any, attributes: int) -> int:
    """Model rows one explanation may take under a manifest's explainer settings
    (what ``explainer.max_evaluations`` must cover): for "certified", every
    sampling round and then exact enumeration up to ``certification.exact_rows``."""
    certification = settings.certification
    if settings.algorithm == "certified" and certification is not None:
        sampled = rows_needed("certified", attributes, settings.background_rows, certification.max_pairs)
        return sampled + certification.exact_rows
    return rows_needed(settings.algorithm, attributes, settings.background_rows, settings.permutations)


def _check_certification(manifest: Manifest) -> None:
    settings = manifest.explainer
    c = settings.certification
    if c is None:
        raise ExplainerConfigError(f"{manifest.ref}: algorithm 'certified' needs explainer.certification")
    if settings.permutations < 2 or c.max_pairs < settings.permutations:
        raise ExplainerConfigError(
            f"{manifest.ref}: algorithm 'certified' needs explainer.permutations >= 2 (pairs per background row in "
            f"the first round, to estimate the error) and certification.max_pairs >= it; got "
            f"{settings.permutations} and {c.max_pairs}"
        )
    if not (math.isfinite(c.z) and c.z > 0 and math.isfinite(c.target_error) and c.target_error > 0):
        raise ExplainerConfigError(
            f"{manifest.ref}: certification.z and certification.target_error must be finite and > 0"
        )
    if c.exact_rows < 0:
        raise ExplainerConfigError(f"{manifest.ref}: certification.exact_rows must be >= 0 (0: never enumerate)")


def _plan(manifest: Manifest) -> _Plan | None:
    settings, d = manifest.explainer, len(manifest.inputs)
    if settings.algorithm == "certified":
        _check_certification(manifest)
        return None
    if settings.certification is not None:
        raise ExplainerConfigError(f"{manifest.ref}: explainer.certification is only for algorithm 'certified'")
    if settings.algorithm == "exact":
        if d > MAX_EXACT_ATTRIBUTES:
            raise ExplainerConfigError(
                f"{manifest.ref}: exact enumeration is limited to {MAX_EXACT_ATTRIBUTES} attributes, the model has {d}"
            )
        return _ExactPlan(d)
    if settings.permutations < 1:
        raise ExplainerConfigError(f"{manifest.ref}: algorithm 'permutation' needs explainer.permutations >= 1")
    return _PermutationPlan(d, settings.permutations)


# -- the explainer ---------------------------------------------------------------


class Explainer:
    """Explains decisions of one loaded model runtime against its pinned background,
    every model evaluation at ``explain_bucket`` rows.

    Why the bucket is the explainer's own, explicit setting: it decides the bits
    of every evaluation (and so of the base value computed here), it is recorded
    on each decision (``runtime.explain_bucket``), and a replay must explain at the
    recorded one or a counterfactual one, whatever the manifest says today.
    Default: the manifest's ``runtime.explain_bucket``."""

    def __init__(
        self,
        model: Evaluates,
        background: bytes,
        *,
        explain_bucket: int | None = None,
        skip_repeated_rows: bool = True,
    ) -> None:
        manifest: Manifest = model.manifest
        settings = manifest.explainer
        if settings.seed_policy != SEED_POLICY:
            raise ExplainerConfigError(
                f"{manifest.ref}: seed policy {settings.seed_policy!r} is not the one this code implements ({SEED_POLICY!r})"
            )
        if settings.output_space != manifest.output.space:
            raise ExplainerConfigError(
                f"{manifest.ref}: explainer output space {settings.output_space!r} != model output {manifest.output.space!r}"
            )
        self.model = model
        self.manifest = manifest
        self.explain_bucket = manifest.runtime.explain_bucket if explain_bucket is None else explain_bucket
        self.names = [spec.name for spec in manifest.inputs]
        self.background = decode_background(manifest, background)
        self._plan = _plan(manifest)
        self.max_evaluations = worst_case_rows(settings, len(self.names))
        if self.max_evaluations > settings.max_evaluations:
            raise ExplainerConfigError(
                f"{manifest.ref}: {settings.algorithm} over {len(self.names)} attributes and {len(self.background.rows)} background rows "
                f"needs up to {self.max_evaluations} model rows per explanation, over the manifest's budget of {settings.max_evaluations}"
            )
        self.skip_repeated_rows = skip_repeated_rows
        self.method = METHODS[settings.algorithm]
        self._background_outputs = self._evaluate(self.background.matrix)
        self.base_value = float(self._weighted(self._background_outputs[None, :])[0])
        self._sampler = (
            CertifiedSampler(
                self.background.matrix,
                self.background.weights,
                self._background_outputs,
                settings.certification,
                settings.permutations,
                settings.top_reasons,
                self._evaluate,
                ROWS_PER_GROUP,
                skip_repeated_rows,
            )
            if settings.certification is not None
            else None
        )

    def _evaluate(self, x: np.ndarray) -> np.ndarray:
        return self.model.evaluate_for_explanation(x, self.explain_bucket)

    def _weighted(self, outputs: np.ndarray) -> np.ndarray:
        """[..., K] float32 model outputs -> [...] float64 background-weighted means."""
        return ordered_sum(outputs.astype(np.float64) * self.background.weights, axis=-1)

    def _sources(self, plan: _Plan, drawn: Any, x: np.ndarray) -> np.ndarray:
        n, c, k = len(x), plan.coalitions, len(self.background.rows)
        if not self.skip_repeated_rows:
            return np.broadcast_to(np.arange(c)[None, :, None], (n, c, k))
        return plan.sources(drawn, x[:, None, :] != self.background.matrix[None, :, :])

    def contributions(self, x: np.ndarray, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(contributions float64 [n, d], model rows evaluated per request [n]) for encoded rows."""
        phi, fidelity = self.estimate(x, seeds)
        return phi, np.array([f.evaluations for f in fidelity], dtype=np.int64)

    def estimate(self, x: np.ndarray, seeds: Sequence[int]) -> tuple[np.ndarray, list[Fidelity]]:
        """(contributions float64 [n, d], each one's fidelity) for encoded rows ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._sampler is not None:
            estimates = self._sampler.explain(x, self._evaluate(x).astype(np.float64), seeds)
            z = self._sampler.settings.z
            fidelity = [Fidelity(e.certified, e.evaluations, e.pairs, self._by_name(e.bounds), z) for e in estimates]
            return np.stack([e.contributions for e in estimates]).reshape(len(x), len(self.names)), fidelity
        phi, rows = self._enumerated_or_sampled(x, seeds)
        if self.manifest.explainer.algorithm == "exact":
            zero = self._by_name(np.zeros(len(self.names)))
            return phi, [Fidelity(True, int(r), 0, zero) for r in rows]
        pairs = self.manifest.explainer.permutations  # one shared sample: no error estimate
        return phi, [Fidelity(False, int(r), pairs) for r in rows]

    def sampled(self, x: np.ndarray, seeds: Sequence[int], pairs: int) -> list[Sampled]:
        """A certified model's estimates from exactly ``pairs`` pairs per background row, uncertified.

        Benchmarks use it to predict the pairs a certificate would need; serving never does."""
        if self._sampler is None:
            raise ExplainerConfigError(f"{self.manifest.ref}: only a certified explainer samples per background row")
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._sampler.sampled(x, self._evaluate(x).astype(np.float64), seeds, pairs)

    def _by_name(self, values: np.ndarray) -> dict[str, float]:
        return dict(zip(self.names, (float(v) for v in values), strict=True))

    def _enumerated_or_sampled(self, x: np.ndarray, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Exact or shared-order permutation plans: every needed masked row of every request in one model call."""
        plan = self._plan
        assert plan is not None  # every algorithm but "certified" has a plan
        (n, d), c, k = x.shape, plan.coalitions, len(self.background.rows)
        drawn = plan.draw(seeds)
        sources = self._sources(plan, drawn, x)  # [n, c, k]
        own = np.flatnonzero(sources == np.arange(c)[None, :, None])  # (request, coalition, row) to evaluate
        pair, row = np.divmod(own, k)
        request = pair // c
        masks = np.reshape(plan.masks(drawn, n), (n * c, d))
        masked = np.where(
            np.take(masks, pair, axis=0), np.take(x, request, axis=0), np.take(self.background.matrix, row, axis=0)
        )
        outputs = self._evaluate(np.concatenate([masked, x]))
        table = np.empty((n, c + 1, k), dtype=np.float32)  # slot 0: the empty coalition (row k itself)
        table[:, 0, :] = self._background_outputs
        table.reshape(-1)[own + (request + 1) * k] = outputs[: len(own)]
        values = self._weighted(np.take_along_axis(table, sources + 1, axis=1))
        full = outputs[len(own) :].astype(np.float64)
        return plan.combine(values, self.base_value, full, drawn), np.bincount(request, minlength=n) + 1

    def explain(self, x: np.ndarray, scores: np.ndarray, seeds: Sequence[int]) -> list[ExplanationResult]:
        """Explain encoded rows ``x`` whose decision scores are ``scores``.
        Raises AdditivityError (fail closed) if any explanation does not add up to its score."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        seeds = [int(s) for s in seeds]
        if x.ndim != 2 or x.shape[1] != len(self.names) or len(scores) != len(x) or len(seeds) != len(x):
            raise ValueError(
                f"need x [n, {len(self.names)}], n scores and n seeds; got x {list(x.shape)}, {len(scores)} scores, {len(seeds)} seeds"
            )
        if any(not 0 <= s < 1 << 53 for s in seeds):
            raise ValueError("seeds must be integers in [0, 2**53) (see seed_for)")
        results: list[ExplanationResult] = []
        for start in range(0, len(x), self.group_size):
            phi, fidelity = self.estimate(x[start : start + self.group_size], seeds[start : start + self.group_size])
            for i in range(len(phi)):
                results.append(self._result(start + i, phi[i], float(scores[start + i]), seeds[start + i], fidelity[i]))
        return results

    @property
    def group_size(self) -> int:
        """Requests explained together: bounds memory (a certified request's later rounds chunk themselves)."""
        settings = self.manifest.explainer
        first = rows_needed(settings.algorithm, len(self.names), len(self.background.rows), settings.permutations)
        return max(1, ROWS_PER_GROUP // (first if self._sampler is not None else self.max_evaluations))

    def _result(self, index: int, phi: np.ndarray, score: float, seed: int, fidelity: Fidelity) -> ExplanationResult:
        contributions = self._by_name(phi)
        total = math.fsum([self.base_value, *contributions.values()])
        error = abs(total - score)
        epsilon = self.manifest.explainer.additivity_epsilon
        if not error <= epsilon:  # also refuses NaN
            raise AdditivityError(index, total, score, epsilon)
        return ExplanationResult(
            method=self.method,
            output_space=self.manifest.explainer.output_space,
            base_value=self.base_value,
            contributions=contributions,
            seed=seed,
            evaluations=fidelity.evaluations,
            bucket=self.explain_bucket,
            additivity_error=error,
            fidelity=fidelity,
        )

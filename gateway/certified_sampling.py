"""Certified interventional Shapley values: per-reference antithetic walks, sampled until the reasons hold.

What is estimated: the same interventional Shapley values as gateway.explanation
(``v(S) = sum_k w_k f(x on S, background row k elsewhere)``). By linearity they
are the weighted mean over background rows k of the Shapley values of the
single-reference games ``v_k(S) = f(x on S, row k elsewhere)``, and in game k
every attribute on which row k equals the applicant is a null player.

How: every background row gets its *own* random orders of the attributes, each
walked forward and in reverse (an antithetic pair, exact for games whose
interactions are at most pairwise). Independent orders per row, instead of one
order shared by all rows, make the rows' errors independent, so they average
out across rows (measured: half the error of shared orders for the same model
rows, docs/explanations.md), and they give an honest error estimate: the pairs
of one row are independent draws, so their spread estimates that row's
variance, and the rows' variances add up (with squared weights) to the
variance of each contribution.

Why rounds: most applicants' reasons are clear after a few pairs; some have
two attributes so close that many pairs are needed to tell them apart, and a
few so close (within 1e-4) that no affordable number does. Each request starts
with ``first_pairs`` pairs per row and doubles them until its reason lists are
certified (gateway.fidelity) and every bound is at most ``target_error``, or
``max_pairs`` is reached, or until even the bounds ``max_pairs`` would give
could not certify it (a near-tie: it stops early); then, where the manifest affords it
(``exact_rows``), its values are enumerated exactly
(gateway.reference_enumeration); only then is an uncertified explanation
returned, and it says so.

Determinism: a request's orders come from its own ``Generator(PCG64(seed))``,
drawn round after round; whether it needs another round depends only on its
own values; all its pairs so far are summed in index order (fixed_order), and
rows never interact in a forward pass at the fixed explain bucket. So a
request's values, bounds and rounds are bit-identical whatever else is in the
batch, and a replay reproduces them.

Cost: a walk against row k evaluates a row only when it adds an attribute on
which row k differs from the applicant, and never the row that completes the
applicant (that is ``f(x)``): ``m_k - 1`` rows per walk where row k differs on
``m_k`` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from verdict.gateway.fidelity import PairBounds, certified_reasons
from verdict.gateway.fixed_order import ordered_sum
from verdict.gateway.manifest import CertificationSettings
from verdict.gateway.reference_enumeration import enumeration_rows, exact_contributions

__all__ = ["FUTILITY_MARGIN", "CertifiedEstimate", "CertifiedSampler", "Sampled", "pair_schedule"]

FUTILITY_MARGIN = 0.5
"""A request stops early, uncertified, when even bounds this fraction of the ones
``max_pairs`` pairs should give would not certify it (CertifiedSampler._hopeless)."""


class CertifiedEstimate(NamedTuple):
    contributions: np.ndarray  # float64 [d]
    bounds: np.ndarray  # float64 [d]: z standard errors
    certified: bool
    pairs: int  # antithetic pairs per background row spent
    evaluations: int  # model rows evaluated, f(x) included


class Sampled(NamedTuple):
    """One request's estimate from a fixed number of pairs, before any certification."""

    contributions: np.ndarray  # float64 [d]
    bounds: np.ndarray  # float64 [d]: z standard errors
    pair_bounds: PairBounds  # z standard errors of differences and sums, from the same walks
    pairs: int  # per background row


def _bound(z: float, squared_weights: np.ndarray, squared_deviations: np.ndarray, count: int) -> np.ndarray:
    """z standard errors of a weighted mean over rows of per-row means of ``count`` pairs.

    Each row's variance of one pair is estimated from its pairs' spread; the
    rows are independent, so their variances add with squared weights."""
    spread = ordered_sum(squared_deviations, axis=0) / (count - 1)  # [K, ...]
    weights = squared_weights.reshape((-1,) + (1,) * (spread.ndim - 1))
    return z * np.sqrt(ordered_sum(spread * weights / count, axis=0))


class _PairSpread:
    """PairBounds of one request: the spread of the difference (or sum) of two attributes' pair means."""

    def __init__(self, z: float, squared_weights: np.ndarray, deviations: np.ndarray, count: int) -> None:
        self.z, self.squared_weights = z, squared_weights
        self.deviations, self.count = deviations, count  # deviations: [P, K, d]

    def __call__(self, above: np.ndarray, below: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
        a, b = self.deviations[:, :, above, None], self.deviations[:, :, None, below]
        joint = np.where(same_sign[None, None], a - b, a + b)  # [P, K, len(above), len(below)]
        return _bound(self.z, self.squared_weights, joint**2, self.count)


def pair_schedule(first_pairs: int, max_pairs: int) -> list[int]:
    """Pairs per background row added in each round: first_pairs, then doubling the total, capped at max_pairs."""
    added, total = [first_pairs], first_pairs
    while total < max_pairs:
        added.append(min(total, max_pairs - total))
        total += added[-1]
    return added


class _Request:
    """One request's state across rounds: its generator, its pair means so far, its rows spent."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.Generator(np.random.PCG64(seed))
        self.pair_means: list[np.ndarray] = []  # per round: float64 [pairs, K, d]
        self.evaluations = 1  # f(x)
        self.done: CertifiedEstimate | None = None


class CertifiedSampler:
    """Samples one model's explanations against one background until their reasons are certified."""

    def __init__(
        self,
        background: np.ndarray,
        weights: np.ndarray,
        background_outputs: np.ndarray,
        settings: CertificationSettings,
        first_pairs: int,
        top: int,
        evaluate: Callable[[np.ndarray], np.ndarray],
        rows_per_group: int,
        skip_repeated_rows: bool = True,
    ) -> None:
        self.background = background  # float32 [K, d]
        self.weights = weights  # float64 [K]
        self.squared_weights = weights * weights
        self.background_outputs = background_outputs.astype(np.float64)  # [K]
        self.settings, self.top, self.evaluate = settings, top, evaluate
        self.schedule = pair_schedule(first_pairs, settings.max_pairs)
        self.rows_per_group = rows_per_group
        self.skip_repeated_rows = skip_repeated_rows

    def explain(self, x: np.ndarray, full: np.ndarray, seeds: Sequence[int]) -> list[CertifiedEstimate]:
        """Estimates for encoded rows ``x`` whose explain-bucket outputs are ``full`` (float64 [n])."""
        requests = [_Request(seed) for seed in seeds]
        for added in self.schedule:
            active = [i for i, r in enumerate(requests) if r.done is None]
            if not active:
                break
            k, d = self.background.shape
            per_request = max(1, 2 * added * k * (d - 1))
            step = max(1, self.rows_per_group // per_request)
            for start in range(0, len(active), step):
                chunk = active[start : start + step]
                self._round(x[chunk], full[chunk], [requests[i] for i in chunk], added)
            self._judge([requests[i] for i in active])
        for i, request in enumerate(requests):
            if request.done is not None and not request.done.certified:
                request.done = self._enumerated(x[i], float(full[i]), request.done)
        return [r.done for r in requests if r.done is not None]

    def _enumerated(self, x: np.ndarray, full: float, sampled: CertifiedEstimate) -> CertifiedEstimate:
        """Exact values for a request sampling could not certify, when the manifest affords them."""
        rows = enumeration_rows(x, self.background)
        if rows > self.settings.exact_rows:
            return sampled
        phi = exact_contributions(x, full, self.background, self.background_outputs, self.weights, self.evaluate)
        return CertifiedEstimate(phi, np.zeros_like(phi), True, sampled.pairs, sampled.evaluations + rows)

    def _orders(self, request: _Request, pairs: int) -> np.ndarray:
        """int [2 * pairs, K, d]: per background row, ``pairs`` random orders, then the same reversed."""
        k, d = self.background.shape
        forward = request.generator.permuted(np.tile(np.arange(d), (pairs * k, 1)), axis=1).reshape(pairs, k, d)
        return np.concatenate([forward, forward[:, :, ::-1]])

    def _round(self, x: np.ndarray, full: np.ndarray, requests: list[_Request], pairs: int) -> None:
        """Walk ``pairs`` more antithetic pairs per background row for every request of ``x``."""
        background = self.background
        (k, d), n = background.shape, len(x)
        orders = np.stack([self._orders(r, pairs) for r in requests])  # [n, W, K, d]
        ranks = np.argsort(orders, axis=3)  # step at which each attribute joins (0-based)
        differs = x[:, None, :] != background[None, :, :]  # [n, K, d]
        walks = orders.shape[1]
        # joins[i, w, k, t]: the attribute added at step t + 1 differs from row k
        joins = np.take_along_axis(
            np.broadcast_to(differs[:, None, :, :], orders.shape), orders, axis=3
        )  # [n, W, K, d]
        if self.skip_repeated_rows:
            complete = np.cumsum(joins, axis=3) == differs.sum(axis=2)[:, None, :, None]  # the applicant itself
            evaluate = joins & ~complete
        else:  # every step but the last (f(x)) evaluated: the same bits, by another path (tested)
            complete = np.zeros(orders.shape, dtype=bool)
            complete[..., -1] = True
            evaluate = ~complete
        at = np.flatnonzero(evaluate)
        i, w, row, t = np.unravel_index(at, evaluate.shape)
        masked = np.where(ranks[i, w, row] <= t[:, None], x[i], background[row])
        outputs = self.evaluate(masked).astype(np.float64) if len(at) else np.zeros(0)
        evaluated = np.zeros(evaluate.shape, dtype=np.float64)
        evaluated.reshape(-1)[at] = outputs
        steps = np.arange(1, d + 1)[None, None, None, :]
        last = np.maximum.accumulate(np.where(evaluate, steps, 0), axis=3)  # latest evaluated step
        values = np.take_along_axis(evaluated, np.maximum(last - 1, 0), axis=3)
        values = np.where(last == 0, self.background_outputs[None, None, :, None], values)
        values = np.where(complete, full[:, None, None, None], values)
        start = np.broadcast_to(self.background_outputs[None, None, :, None], (n, walks, k, 1))
        gains = np.diff(np.concatenate([start, values], axis=3), axis=3)  # step t adds orders[..., t]
        by_attribute = np.take_along_axis(gains, ranks, axis=3)  # [n, W, K, d]
        pair_means = (by_attribute[:, :pairs] + by_attribute[:, pairs:]) * 0.5
        counts = evaluate.reshape(n, -1).sum(axis=1)
        for r, (request, means) in enumerate(zip(requests, pair_means, strict=True)):
            request.pair_means.append(means)
            request.evaluations += int(counts[r])

    def sampled(self, x: np.ndarray, full: np.ndarray, seeds: Sequence[int], pairs: int) -> list[Sampled]:
        """Exactly ``pairs`` pairs per background row for every request, nothing certified or enumerated.

        Not a serving path: benchmarks/explain.py uses it to predict how many pairs a
        certificate would need (bounds shrink like 1 / sqrt(pairs))."""
        requests = [_Request(seed) for seed in seeds]
        self._round(x, full, requests, pairs)
        return self._estimates(requests)

    def _estimates(self, requests: list[_Request]) -> list[Sampled]:
        """Values, bounds and pair bounds from every pair so far (all requests have the same count).

        Every reduction is an elementwise fixed-order sum over pairs, then rows, so estimating
        requests together gives each the bits it would get alone."""
        pairs = np.stack([np.concatenate(r.pair_means) for r in requests])  # [n, P, K, d], rounds in order
        count = pairs.shape[1]
        per_row = ordered_sum(pairs, axis=1) / count  # [n, K, d]
        contributions = ordered_sum(np.moveaxis(per_row * self.weights[None, :, None], 1, 0), axis=0)  # [n, d]
        deviations = np.moveaxis(pairs - per_row[:, None], 0, 2)  # [P, K, n, d]
        z = self.settings.z
        bounds = _bound(z, self.squared_weights, deviations**2, count)  # [n, d]
        return [
            Sampled(
                contributions[i], bounds[i], _PairSpread(z, self.squared_weights, deviations[:, :, i], count), count
            )
            for i in range(len(requests))
        ]

    def _judge(self, requests: list[_Request]) -> None:
        """Estimate, bound and certify from every pair so far; settle each request that is certified or spent."""
        for request, (phi, bounds, pair_bounds, count) in zip(requests, self._estimates(requests), strict=True):
            certified = certified_reasons(phi, bounds, self.top, pair_bounds)
            precise = bool(bounds.max() <= self.settings.target_error)
            if (
                (certified and precise)
                or count >= self.settings.max_pairs
                or (not certified and self._hopeless(phi, bounds, pair_bounds, count))
            ):
                request.done = CertifiedEstimate(phi, bounds, certified, count, request.evaluations)

    def _hopeless(self, phi: np.ndarray, bounds: np.ndarray, pair_bounds: PairBounds, count: int) -> bool:
        """Would the lists stay uncertified even with bounds at half what ``max_pairs`` pairs should give?

        Bounds shrink like 1 / sqrt(pairs). A request whose two closest attributes are far closer
        than that (a near-tie) cannot be certified by sampling within the budget; more rounds would
        only spend rows, so it stops here (and goes to exact enumeration where that is allowed)."""
        scale = FUTILITY_MARGIN * math.sqrt(count / self.settings.max_pairs)

        def scaled(above: np.ndarray, below: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
            return pair_bounds(above, below, same_sign) * scale

        return not certified_reasons(phi, bounds * scale, self.top, scaled)

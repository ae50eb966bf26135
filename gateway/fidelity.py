"""How faithful an explanation is: error bounds per contribution, and whether its reasons are certified.

Why certify reason *sets*, not numbers: what an applicant is told is a list of
reasons (the principal reasons for denial on an adverse-action notice, the top
reasons in a GDPR explanation). A sampled contribution is never exact, but the
list is: it is the same for the exact Shapley values whenever no value inside
its bound could reorder the list. So a reason list is *certified* when

- principal reasons (at most four, positive contributions, largest first):
  every listed attribute's lower bound is above zero and above every unlisted
  attribute's upper bound; with fewer than four listed, no unlisted attribute
  may possibly be positive (upper bound <= 0);
- top reasons (``top`` largest |contribution|, exact zeros are no reason):
  every listed attribute's lowest possible |contribution| is above every
  unlisted attribute's highest possible one (which also fixes each listed
  reason's direction); with fewer than ``top`` listed, every unlisted
  contribution is exactly zero with a zero bound.

Membership is certified, not the order within the list: the list is shown
ranked, and two reasons whose bounds overlap could swap places in the exact
values; both are still reasons.

The bounds are ``z`` standard errors of the sampled estimate (the explainer's
``certification.z``): a statistical certificate at that confidence, not a
proof. An exactly enumerated explanation has zero bounds and is certified by
construction. docs/explanations.md measures how often a certified list agrees
with exact values (every time, on every applicant measured).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import msgspec
import numpy as np

from verdict.audit import records as rec

__all__ = [
    "ECOA_MAX_REASONS",
    "Fidelity",
    "FixedPairBounds",
    "PairBounds",
    "certified_reasons",
    "from_record",
    "principal_set",
    "to_record",
    "top_set",
]

ECOA_MAX_REASONS = 4
"""ECOA / Regulation B: at most four principal reasons (gateway.reasons)."""


class Fidelity(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an explanation says about its own accuracy (the record's ``explanation.fidelity``)."""

    certified: bool
    """Both reason lists equal those of the exact values (exact enumeration, or within the bounds)."""
    evaluations: int
    """Model rows evaluated for this explanation, f(x) included."""
    pairs: int
    """Antithetic walk pairs spent: per background row ("certified"), in all ("permutation"); 0 for exact."""
    error_bounds: dict[str, float] = {}
    """Per attribute: ``z`` standard errors of its contribution (0 where exact); empty when not estimated."""
    z: float | None = None
    """Standard errors per bound; absent when nothing was estimated (exact, or a legacy one-pair sample)."""


def to_record(fidelity: Fidelity | None) -> rec.Fidelity | None:
    """The record's ``explanation.fidelity`` (audit-format §3, "Fidelity"): the same fields.

    One conversion each way, for the gateway (which writes it), replay (which
    compares the replayed one with the logged one) and lookups (which read it):
    the record's type lives in the audit layer, which knows nothing of the gateway."""
    return None if fidelity is None else rec.Fidelity(**msgspec.structs.asdict(fidelity))


def from_record(logged: rec.Fidelity | None) -> Fidelity | None:
    """The explainer's fidelity from the record's; None: an older record, or none explained."""
    return None if logged is None else Fidelity(**msgspec.structs.asdict(logged))


def _ranked(phi: np.ndarray, keys: np.ndarray, keep: np.ndarray, limit: int) -> np.ndarray:
    """Indexes kept, largest key first, ties in schema order (as gateway.reasons ranks)."""
    order = np.lexsort((np.arange(len(phi)), -keys))  # last key first: largest key, then schema order
    return order[keep[order]][:limit].astype(np.int64)


def principal_set(phi: np.ndarray) -> np.ndarray:
    """The principal reasons for denial: at most four attributes with positive contributions, largest first."""
    return _ranked(phi, np.abs(phi), phi > 0.0, ECOA_MAX_REASONS)


def top_set(phi: np.ndarray, top: int) -> np.ndarray:
    """The top reasons: at most ``top`` attributes with non-zero contributions, largest |contribution| first."""
    return _ranked(phi, np.abs(phi), phi != 0.0, top)


class PairBounds(Protocol):
    """Bounds on the difference or the sum of two contributions.

    Why pairs: a reason list changes only if two contributions swap, and the
    errors of two contributions estimated from the same walks are correlated,
    so ``phi[a] - phi[b]`` is often known far better than ``bounds[a] + bounds[b]``.
    Asked only for the pairs that straddle a list's boundary."""

    def __call__(self, above: np.ndarray, below: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
        """float [len(above), len(below)]: bound on ``phi[a] - phi[b]`` where ``same_sign``, else on ``phi[a] + phi[b]``."""
        ...


class FixedPairBounds(NamedTuple):
    """Pair bounds given as two [d, d] matrices (and, by default, the separate bounds added)."""

    difference: np.ndarray
    total: np.ndarray

    def __call__(self, above: np.ndarray, below: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
        cell = np.ix_(above, below)
        return np.where(same_sign, self.difference[cell], self.total[cell])


def _others(d: int, listed: np.ndarray) -> np.ndarray:
    mask = np.ones(d, dtype=bool)
    mask[listed] = False
    return np.flatnonzero(mask)


def _apart(
    gaps: np.ndarray, bounds_a: np.ndarray, bounds_b: np.ndarray, ask: Callable[[np.ndarray], np.ndarray]
) -> bool:
    """Every gap above its pair's bound. The separate bounds added are always a valid bound,
    so the (costlier) pair bound is asked only for the columns they do not settle."""
    open_columns = np.flatnonzero(~np.all(gaps > bounds_a[:, None] + bounds_b[None, :], axis=0))
    return not len(open_columns) or bool(np.all(gaps[:, open_columns] > ask(open_columns)))


def _principal_certified(phi: np.ndarray, bounds: np.ndarray, pairs: PairBounds) -> bool:
    listed = principal_set(phi)
    others = _others(len(phi), listed)
    if not np.all(phi[listed] - bounds[listed] > 0.0):
        return False
    if len(listed) < ECOA_MAX_REASONS:
        return bool(np.all(phi[others] + bounds[others] <= 0.0))
    gaps = phi[listed][:, None] - phi[others][None, :]
    same = np.ones(gaps.shape, dtype=bool)
    return _apart(gaps, bounds[listed], bounds[others], lambda c: pairs(listed, others[c], same[:, c]))


def _top_certified(phi: np.ndarray, bounds: np.ndarray, pairs: PairBounds, top: int) -> bool:
    listed = top_set(phi, top)
    others = _others(len(phi), listed)
    if len(listed) < top:
        return bool(np.all((phi[others] == 0.0) & (bounds[others] == 0.0)))
    least = np.abs(phi[listed]) - bounds[listed]
    if not np.all(least > 0.0):
        return False  # a listed reason's direction is not certain
    certain = np.abs(phi[others]) - bounds[others] > 0.0
    sure, unsure = others[certain], others[~certain]  # unlisted with a certain sign, and the rest
    if len(unsure) and not least.min() > (np.abs(phi[unsure]) + bounds[unsure]).max():
        return False
    # |a| - |b| is sign(a) * (a - b) when the signs agree and sign(a) * (a + b) when they differ
    agree = np.sign(phi[listed])[:, None] == np.sign(phi[sure])[None, :]
    gaps = np.abs(phi[listed])[:, None] - np.abs(phi[sure])[None, :]
    return _apart(gaps, bounds[listed], bounds[sure], lambda c: pairs(listed, sure[c], agree[:, c]))


def certified_reasons(phi: np.ndarray, bounds: np.ndarray, top: int, pairs: PairBounds | None = None) -> bool:
    """True when both reason lists of contributions ``phi`` are the same for any values within the bounds.

    ``pairs`` bounds differences and sums of two contributions; without it,
    ``bounds[a] + bounds[b]`` (always valid, often much wider)."""
    phi, bounds = np.asarray(phi, dtype=np.float64), np.asarray(bounds, dtype=np.float64)
    if pairs is None:
        widest = bounds[:, None] + bounds[None, :]
        pairs = FixedPairBounds(widest, widest)
    return _principal_certified(phi, bounds, pairs) and _top_certified(phi, bounds, pairs, top)

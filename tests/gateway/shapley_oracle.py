"""Brute-force interventional Shapley values, straight from the definition.

Deliberately naive and independent of gateway.explanation: every coalition S
of the d attributes is enumerated with itertools, its value is the
background-weighted mean of the model on "applicant's values on S, background
row's values elsewhere", and each attribute's value is the Shapley-weighted
sum of its marginal gains. Only for small d (2**d coalitions).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np


def coalition_values(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray, weights: np.ndarray
) -> dict[frozenset[int], float]:
    """v(S) for every subset S of range(d), from one model call over all masked rows."""
    d = len(x)
    coalitions = [frozenset(c) for size in range(d + 1) for c in itertools.combinations(range(d), size)]
    rows = []
    for coalition in coalitions:
        masked = background.copy()
        masked[:, sorted(coalition)] = x[sorted(coalition)]
        rows.append(masked)
    outputs = np.asarray(f(np.concatenate(rows)), dtype=np.float64).reshape(len(coalitions), len(background))
    return {c: float(np.dot(weights, out)) for c, out in zip(coalitions, outputs, strict=True)}


def shapley_values(values: dict[frozenset[int], float], d: int) -> np.ndarray:
    phi = np.zeros(d)
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for coalition in itertools.combinations(others, size):
                s = frozenset(coalition)
                phi[i] += weight * (values[s | {i}] - values[s])
    return phi


def interventional_shapley(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """(v(empty) = the base value, Shapley values [d]) of one encoded row."""
    values = coalition_values(f, x, background, weights)
    return values[frozenset()], shapley_values(values, len(x))

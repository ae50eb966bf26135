"""Preprocessing building blocks for models that Verdict serves, as torch modules.

Why modules and not a pandas pipeline: a served model gets the attributes as
the runtime encodes them (float32 ``[batch, d]``, schema order, each category
as the index of its value in the schema's category list; see
``schema.encode_rows``) and everything between those numbers and the network
must be replayable from the artifact alone (design.md, "Models"). Built from
these blocks, one-hot encoding, scaling and standardisation are exported into
the ``torch.export`` graph with the weights, covered by the artifact's sha256,
and cannot drift from what was trained.

Every block is export-friendly: gathers (``index_select``), comparisons,
``torch.where`` and elementwise maths on fixed-shape buffers; no Python
control flow on values, no data-dependent shapes. Fitted numbers (means,
standard deviations, scales) are *buffers*, so they travel in the module's
``state_dict`` with the weights: a factory builds the module with the right
shapes (from the attribute specs) and ``load_state_dict`` brings the fitted
values back.

The pattern is ``gateway/modelgraph.py``'s ``CreditModel.features``, made
public and composable. Users reach it as ``verdict.preprocessing``; importing
it pins Intel MKL's reproducible mode (``gateway.determinism``), so import it
before the training script multiplies anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

# Imported for its effect: it pins Intel MKL's reproducible (CNR) mode, which MKL fixes at its first
# matrix product; a training script imports these blocks before it multiplies anything, so the model
# trains, and the packager measures it, in the mode Verdict serves in.
from verdict.gateway import determinism  # noqa: F401
from verdict.gateway.packaging.tabular import encode_frame, holdout_mask, infer_schema
from verdict.gateway.schema import AttributeSpec

__all__ = [
    "Asinh",
    "Log1p",
    "OneHot",
    "Scaling",
    "Standardise",
    "TabularEncoder",
    "encode_frame",
    "heldout_mask",
    "infer_schema",
]

Scaling = Literal["none", "asinh", "log1p"]
"""How a numeric attribute is compressed before standardisation: ``asinh``
(``asinh(x / scale)``: money, counts, anything heavy-tailed, negatives allowed),
``log1p`` (``log(1 + x)``: non-negative heavy-tailed values), or ``none``."""


def heldout_mask(frame: pd.DataFrame, *, id_column: str | None = None) -> np.ndarray:
    """True for the rows ``verdict models package`` holds out (its hash split: a
    sha256 of each row's key, ``data.id`` or the whole row; about 20 %). Train on
    the other rows, so that the packaged model's held-out metrics are honest."""
    return holdout_mask(frame, id_column)[0]


def _columns(columns: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(columns), dtype=torch.long)


def _mask(columns: Sequence[int], width: int) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.bool)
    mask[_columns(columns)] = True
    return mask


class OneHot(nn.Module):
    """Category indexes -> one-hot indicators: ``[batch, d]`` -> ``[batch, sum(sizes)]``.

    ``columns``: the input columns holding categories; ``sizes``: how many
    categories each has. One gather and one comparison for all of them (column
    j repeated once per category, compared with 0..k-1), because an exported
    graph pays per node. An index outside 0..k-1 gives an all-zero block; the
    runtime's schema validation never lets one through."""

    columns: torch.Tensor
    codes: torch.Tensor

    def __init__(self, columns: Sequence[int], sizes: Sequence[int]) -> None:
        super().__init__()
        if len(columns) != len(sizes):
            raise ValueError(f"OneHot: {len(columns)} columns but {len(sizes)} sizes")
        if any(k < 1 for k in sizes):
            raise ValueError(f"OneHot: every column needs at least one category, got sizes {list(sizes)}")
        self.register_buffer(
            "columns", torch.tensor([j for j, k in zip(columns, sizes, strict=True) for _ in range(k)]).long()
        )
        self.register_buffer("codes", torch.tensor([c for k in sizes for c in range(k)], dtype=torch.float32))
        self.width = len(self.codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.index_select(1, self.columns) == self.codes).to(x.dtype)


class Standardise(nn.Module):
    """Selected columns, standardised: ``[batch, d]`` -> ``[batch, len(columns)]``,
    ``(x[:, columns] - mean) / std``. ``mean`` and ``std`` are buffers (fitted by
    :meth:`TabularEncoder.fit`, or given)."""

    columns: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, columns: Sequence[int], mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        k = len(columns)
        mean = [0.0] * k if mean is None else list(mean)
        std = [1.0] * k if std is None else list(std)
        if len(mean) != k or len(std) != k:
            raise ValueError(f"Standardise: {k} columns need {k} means and standard deviations")
        if any(not s > 0 for s in std):
            raise ValueError(f"Standardise: standard deviations must be > 0, got {std}")
        self.register_buffer("columns", _columns(columns))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.width = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.index_select(1, self.columns) - self.mean) / self.std


class Asinh(nn.Module):
    """``asinh(x / scale)`` on the selected columns, the others unchanged
    (``[batch, d]`` -> ``[batch, d]``). Like a logarithm for large values, but
    defined (and odd) through zero, so negative balances are fine."""

    selected: torch.Tensor
    scale: torch.Tensor

    def __init__(self, columns: Sequence[int], width: int, scale: Sequence[float] | None = None) -> None:
        super().__init__()
        scales = [1.0] * len(columns) if scale is None else list(scale)
        if len(scales) != len(columns) or any(not s > 0 for s in scales):
            raise ValueError(f"Asinh: one scale > 0 per column needed, got {scales}")
        full = torch.ones(width, dtype=torch.float32)
        full[_columns(columns)] = torch.tensor(scales, dtype=torch.float32)
        self.register_buffer("selected", _mask(columns, width))
        self.register_buffer("scale", full)
        self.active = bool(columns)  # fixed at construction: the exported graph has no asinh when nothing is scaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return torch.where(self.selected, torch.asinh(x / self.scale), x)


class Log1p(nn.Module):
    """``log(1 + x)`` on the selected columns, the others unchanged. Values
    below 0 are clamped to 0 first: a log1p column's schema minimum is >= 0
    (:meth:`TabularEncoder.fit` refuses one that is not), so only a value the
    runtime would refuse could reach the clamp."""

    selected: torch.Tensor

    def __init__(self, columns: Sequence[int], width: int) -> None:
        super().__init__()
        self.register_buffer("selected", _mask(columns, width))
        self.active = bool(columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return torch.where(self.selected, torch.log1p(x.clamp_min(0.0)), x)


class TabularEncoder(nn.Module):
    """The runtime's encoded attributes -> a feature matrix for a network:
    numeric attributes compressed (:data:`Scaling`) and standardised, category
    attributes one-hot, concatenated (numeric first, then categories, each in
    schema order). ``width`` is the number of features out.

    Build it from the attribute specs alone (a model factory does, before
    ``load_state_dict`` brings the fitted values) or fit it on the encoded
    training matrix with :meth:`fit`::

        specs = infer_schema(frame, target="fraud")
        encoder = TabularEncoder.fit(specs, encode_frame(frame, specs), scaling={"amount": "asinh"})

    or, inside a model built by a factory, ``model.encoder.fit_to(x_train)``.
    """

    def __init__(self, specs: Sequence[AttributeSpec], scaling: Mapping[str, Scaling] | None = None) -> None:
        super().__init__()
        scaling = dict(scaling or {})
        names = [s.name for s in specs]
        if unknown := sorted(set(scaling) - set(names)):
            raise ValueError(f"TabularEncoder: scaling names {unknown}, which are not attributes ({names})")
        for name, how in scaling.items():
            if how not in ("none", "asinh", "log1p"):
                raise ValueError(f"TabularEncoder: scaling of {name!r} must be none, asinh or log1p, got {how!r}")
            if how != "none" and specs[names.index(name)].kind == "category":
                raise ValueError(f"TabularEncoder: {name!r} is a category attribute; only numbers are scaled")
        width = len(specs)
        numeric = [j for j, s in enumerate(specs) if s.kind != "category"]
        categories = [(j, len(s.categories or ())) for j, s in enumerate(specs) if s.kind == "category"]
        self.specs = tuple(specs)
        self.scaling: dict[str, Scaling] = {n: scaling.get(n, "none") for n in names if n in scaling}
        self.asinh = Asinh([j for j in numeric if scaling.get(names[j]) == "asinh"], width)
        self.log1p = Log1p([j for j in numeric if scaling.get(names[j]) == "log1p"], width)
        self.standardise = Standardise(numeric)
        self.onehot = OneHot([j for j, _ in categories], [k for _, k in categories])
        self.width = self.standardise.width + self.onehot.width

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """The numeric columns on the scale standardisation uses (categories pass through)."""
        return self.log1p(self.asinh(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.standardise(self.compress(x)), self.onehot(x)], dim=1)

    @classmethod
    def fit(
        cls,
        specs: Sequence[AttributeSpec],
        x_train: np.ndarray | torch.Tensor,
        scaling: Mapping[str, Scaling] | None = None,
    ) -> TabularEncoder:
        """A new encoder fitted to the encoded training matrix (see :meth:`fit_to`)."""
        return cls(specs, scaling).fit_to(x_train)

    def fit_to(self, x_train: np.ndarray | torch.Tensor) -> TabularEncoder:
        """Fit the buffers, in place, to the encoded training matrix (``encode_frame``'s
        float32 ``[rows, d]``); returns the encoder. Asinh scales are each column's
        median absolute value (1 where that is 0), so the compression bends where
        the data is; means and standard deviations are computed in float64 on the
        compressed columns (a constant column's standard deviation, 0, becomes 1)."""
        specs = self.specs
        x = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != len(specs) or len(x) == 0:
            raise ValueError(f"TabularEncoder: need a non-empty [rows, {len(specs)}] matrix, got {list(x.shape)}")
        with torch.no_grad():
            for j, spec in enumerate(specs):
                if self.scaling.get(spec.name) == "log1p" and (spec.minimum is None or spec.minimum < 0):
                    raise ValueError(f"TabularEncoder: log1p needs {spec.name!r} >= 0, its minimum is {spec.minimum}")
                if self.scaling.get(spec.name) == "asinh":
                    median = float(x[:, j].double().abs().median())
                    self.asinh.scale[j] = median if median > 0 else 1.0
            z = self.compress(x).index_select(1, self.standardise.columns).double()
            if z.shape[1]:
                std = z.std(0, correction=0)
                self.standardise.mean.copy_(z.mean(0).float())
                self.standardise.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).float())
        return self

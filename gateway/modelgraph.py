"""The reference credit model as one torch module, preprocessing included.

Why preprocessing lives in the graph: replay must reproduce a score years
later from the artifact alone. If one-hot encoding or scaling lived in Python
beside the model, a refactor could silently change every historical score.
Inside the exported graph they are frozen with the weights and covered by the
artifact's sha256.

Input: ``[batch, n_attributes]`` float32, raw values in schema order, each
category as its index in the schema's category list. Output: ``[batch]``
probability of the positive class (bad credit / default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from verdict.gateway.schema import AttributeSpec

__all__ = ["MONETARY_UNITS", "CreditModel"]

# Money amounts span five orders of magnitude; asinh compresses them (and,
# unlike log, accepts the negative bill balances in the Taiwan data).
MONETARY_UNITS = frozenset({"DM", "NT$"})


class CreditModel(nn.Module):
    # buffers (register_buffer below), declared for type checkers
    numeric_index: torch.Tensor
    monetary: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    onehot_columns: torch.Tensor
    onehot_codes: torch.Tensor

    def __init__(
        self,
        specs: Sequence[AttributeSpec],
        numeric_mean: Sequence[float],
        numeric_std: Sequence[float],
        hidden: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        numeric = [j for j, s in enumerate(specs) if s.kind != "category"]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("monetary", torch.tensor([specs[j].unit in MONETARY_UNITS for j in numeric]))
        self.register_buffer("mean", torch.tensor(numeric_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(numeric_std, dtype=torch.float32))
        # One-hot encoding of every categorical column in one gather and one
        # comparison (column j repeated once per category, against 0..k-1):
        # two graph nodes instead of three per attribute, which matters because
        # an exported graph pays Python overhead per node.
        sizes = [(j, len(s.categories or ())) for j, s in enumerate(specs) if s.kind == "category"]
        self.register_buffer("onehot_columns", torch.tensor([j for j, k in sizes for _ in range(k)], dtype=torch.long))
        self.register_buffer("onehot_codes", torch.tensor([c for _, k in sizes for c in range(k)], dtype=torch.float32))
        width = len(numeric) + len(self.onehot_codes)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def transform_numeric(self, x: torch.Tensor) -> torch.Tensor:
        """Raw numeric columns → the compressed scale the standardisation uses."""
        raw = x.index_select(1, self.numeric_index)
        return torch.where(self.monetary, torch.asinh(raw / 1000.0), raw)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        numeric = (self.transform_numeric(x) - self.mean) / self.std
        onehot = (x.index_select(1, self.onehot_columns) == self.onehot_codes).to(x.dtype)
        return torch.cat([numeric, onehot], dim=1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))

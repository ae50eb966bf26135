"""The claims-triage model: Verdict's preprocessing blocks and a small MLP.

``build(inputs)`` is the factory ``spec.toml`` names: ``verdict models package``
calls it with the input schema it inferred from the data (the same one
``train.py`` gets from ``infer_schema``), then loads ``weights.pt`` into it. The
encoder's fitted means, deviations and scales are buffers, so they travel in
``weights.pt`` with the network's weights and end up inside the exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from verdict.preprocessing import AttributeSpec, Scaling, TabularEncoder

SCALING: dict[str, Scaling] = {"claim_amount": "asinh", "days_to_report": "log1p"}
HIDDEN = (32, 16)


class ClaimsModel(nn.Module):
    """Encoded claim attributes ``[B, d]`` -> probability of fraud ``[B]``."""

    def __init__(self, inputs: Sequence[AttributeSpec], hidden: Sequence[int] = HIDDEN) -> None:
        super().__init__()
        self.encoder = TabularEncoder(inputs, scaling=SCALING)
        layers: list[nn.Module] = []
        width = self.encoder.width
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoder(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def build(inputs: Sequence[AttributeSpec]) -> ClaimsModel:
    return ClaimsModel(inputs)

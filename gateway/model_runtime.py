"""What the engine needs from a model: the model runtime protocol.

Why a protocol: the decision pipeline (gateway.engine), the explainer and
replay only ever load a verified artifact, run it at fixed bucket shapes,
turn a score into a decision and describe the runtime for the environment
manifest. Naming exactly that lets a new kind of model (another artifact
format, another framework) be one class plus its tests, while scoring,
explaining, reasons, audit records and replay stay one code path. The
torch.export runtime (gateway.runtime.LoadedModel) is the first
implementation.

The contract an implementation must keep, because records and replays rely
on it: a row's output bits depend only on the row and the bucket the call
ran at (rows never interact inside an evaluation; every evaluation runs at
exactly ``bucket`` rows, padding as needed), and the same artifact, bucket,
device and thread count give the same bits in any process.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from verdict.gateway.manifest import Manifest

__all__ = ["ModelRuntime", "decide_by_rule"]


@runtime_checkable
class ModelRuntime(Protocol):
    """A loaded model version, executed only at fixed bucket shapes."""

    manifest: Manifest
    """The registered manifest the artifact was loaded for (schema, rule, buckets)."""
    device: Any
    """Where it runs; ``str(device)`` is what decision records name (e.g. ``"cpu"``)."""

    @classmethod
    def load(cls, manifest: Manifest, artifact: bytes, device: str) -> ModelRuntime:
        """Load the registry's sha256-verified artifact bytes for ``manifest`` on ``device``
        (a resolved device name, e.g. ``"cpu"``, ``"cuda:0"``). No pickled code may run."""
        ...

    def score_matrix(self, x: np.ndarray, bucket: int) -> tuple[np.ndarray, int]:
        """Scores (float32 ``[n]``) for encoded rows ``x`` (float32 ``[n, inputs]``), every
        evaluation at exactly ``bucket`` rows; returns the bucket used (it goes on the record)."""
        ...

    def evaluate_for_explanation(self, x: np.ndarray, explain_bucket: int) -> np.ndarray:
        """Model outputs (float32 ``[n]``) for masked rows, at exactly ``explain_bucket`` rows."""
        ...

    def decide(self, score: float) -> str:
        """The label the manifest's decision rule gives ``score``."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the environment manifest should say about this runtime (kind, library
        versions, device): JSON-able, so a replay can diff it."""
        ...


def decide_by_rule(manifest: Manifest, score: float) -> str:
    """The manifest's decision rule (score >= threshold -> ``at_or_above``), shared by
    every runtime so no implementation words a decision its own way."""
    rule = manifest.decision
    return rule.at_or_above if score >= rule.threshold else rule.below

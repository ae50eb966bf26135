"""Deterministic, batch-invariant execution of a registered model.

Why buckets: GEMM kernels are chosen by matrix shape, so the same row can get
different last bits in a batch of 1 than in a batch of 64 (measured here: the
reference model agrees at 8 and 16 rows and differs by one ulp from 32 rows
up). "Smallest bucket that fits" would therefore make a score depend on how
many neighbours it arrived with. Instead every scoring forward pass runs at
exactly the manifest's ``score_bucket`` rows (padded with zeros, padding
discarded; larger batches in chunks of that size), and every explanation
evaluation at exactly ``explain_bucket`` rows. Rows never interact inside a
forward pass, so a row's bits depend only on the row and the bucket; the
bucket goes on the audit record and replay forces it again.

:class:`LoadedModel` is the first implementation of the model runtime
protocol (gateway.model_runtime.ModelRuntime): the engine loads, scores,
explains and decides through that protocol only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from verdict.gateway import determinism
from verdict.gateway.manifest import Manifest
from verdict.gateway.model_runtime import decide_by_rule
from verdict.gateway.registry import Registry
from verdict.gateway.schema import encode_rows, validate_batch

__all__ = ["LoadedModel", "ModelExecutionError", "load_model"]


class ModelExecutionError(RuntimeError):
    """The model cannot be executed as its manifest requires."""


class LoadedModel:
    """A verified torch.export artifact (``.pt2``), loaded once, executed only at bucket shapes."""

    kind = "torch.export"

    @classmethod
    def load(cls, manifest: Manifest, artifact: bytes, device: str) -> LoadedModel:
        """Load in deterministic mode (the manifest's thread count) on ``device``."""
        determinism.enable(threads=manifest.runtime.threads)
        return cls(manifest, artifact, torch.device(device))

    def __init__(self, manifest: Manifest, artifact: bytes, device: torch.device) -> None:
        self.manifest = manifest
        self.device = device
        self.score_bucket = manifest.runtime.score_bucket
        self.explain_bucket = manifest.runtime.explain_bucket
        program = torch.export.load(io.BytesIO(artifact))
        # The unlifted module re-checks input shapes in Python on every call
        # (a guard function and a sympy-based pre-hook: ~75% of a 64-row call
        # here). score_matrix itself guarantees a contiguous float32
        # [bucket, n_inputs] tensor, so the graph's forward is called directly;
        # the remaining hooks only matter for graphs taking nn.Module inputs.
        self._module = program.module(check_guards=False).to(device)
        self._forward = self._module.forward
        self.n_inputs = len(manifest.inputs)

    def score_matrix(self, x: np.ndarray, bucket: int | None = None) -> tuple[np.ndarray, int]:
        """Scores for an encoded ``[n, n_inputs]`` float32 matrix, every forward
        pass at exactly ``bucket`` rows (default: the manifest's score bucket).
        Returns (scores float32 [n], bucket). Replay passes the recorded bucket."""
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ModelExecutionError(f"input matrix must be [rows, {self.n_inputs}], got {list(x.shape)}")
        bucket = self.score_bucket if bucket is None else bucket
        if not 1 <= bucket <= 1 << 16:
            raise ModelExecutionError(f"bucket must be 1..65536 rows, got {bucket}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(len(x), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), bucket):
                chunk = torch.from_numpy(x[start : start + bucket])
                rows = len(chunk)
                if rows < bucket:  # pad to the bucket shape; padding rows are discarded
                    chunk = torch.cat([chunk, torch.zeros((bucket - rows, self.n_inputs), dtype=torch.float32)])
                out[start : start + rows] = self._forward(chunk.to(self.device))[:rows].cpu().numpy()
        return out, bucket

    def evaluate_for_explanation(self, x: np.ndarray, explain_bucket: int | None = None) -> np.ndarray:
        """Masked-input evaluations for the explainer, at ``explain_bucket`` rows
        (default: the manifest's; a replay passes the recorded one)."""
        return self.score_matrix(x, self.explain_bucket if explain_bucket is None else explain_bucket)[0]

    def score_rows(self, rows: Sequence[Mapping[str, Any]], bucket: int | None = None) -> tuple[np.ndarray, int]:
        """Validate raw attribute rows and score them (raises InputValidationError)."""
        valid = validate_batch(self.manifest.inputs, rows, max_rows=1 << 20)
        return self.score_matrix(encode_rows(self.manifest.inputs, valid), bucket)

    def decide(self, score: float) -> str:
        return decide_by_rule(self.manifest, score)

    def describe(self) -> dict[str, Any]:
        """The runtime as the environment manifest should name it: kind, torch build, device."""
        return {
            "kind": self.kind,
            "torch": torch.__version__,
            "device": str(self.device),
            "dtype": self.manifest.runtime.dtype,
            "threads": torch.get_num_threads(),
        }


def load_model(registry: Registry, name: str, version: str | None = None, device: str | None = None) -> LoadedModel:
    """Load a registered model in deterministic mode (sha256 verified by the registry)."""
    manifest = registry.manifest(name, version)
    artifact = registry.artifact(manifest)
    return LoadedModel.load(manifest, artifact, str(determinism.select_device(device)))

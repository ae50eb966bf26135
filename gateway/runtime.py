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

Why the export's contract is checked at load (and each bucket's guards once):
the hot path calls the graph without torch.export's per-call guards, which
would otherwise let a graph built for 7 values per row run on 8, or a static
batch-1 export run at 64 rows, and serve whatever came out. Loading reads the
contract off the graph (one float32 ``[batch, d]`` input with ``d`` the
manifest's attribute count, one float32 ``[batch]`` output) and runs the
export's own guards at every bucket shape before that shape is first used;
a model that breaks either fails to load with ModelExecutionError naming it
and the rule, and the gateway reports it unready instead of serving it.

:class:`LoadedModel` is the first implementation of the model runtime
protocol (gateway.model_runtime.ModelRuntime): the engine loads, scores,
explains and decides through that protocol only.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.export.graph_signature import InputKind, OutputKind

from verdict.gateway import determinism
from verdict.gateway.manifest import Manifest
from verdict.gateway.model_runtime import decide_by_rule
from verdict.gateway.schema import encode_rows, validate_batch

if TYPE_CHECKING:  # load_model only calls a registry it is given: the runtime does not import the registry
    from verdict.gateway.registry import Registry

__all__ = ["LoadedModel", "ModelExecutionError", "load_model", "run_at_bucket"]


class ModelExecutionError(RuntimeError):
    """The model cannot be executed as its manifest requires; the message names the
    model and the rule it breaks."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _bound(value: Any) -> float:
    """A range constraint's bound as a number (torch's unbounded ``int_oo`` as infinity)."""
    try:
        return int(value)
    except (TypeError, ValueError, AttributeError):
        return math.inf


def _check_contract(program: torch.export.ExportedProgram, manifest: Manifest) -> tuple[float, float]:
    """The model contract, read from the exported graph itself: one float32 input
    ``[batch, d]`` with ``d`` the manifest's attribute count, one float32 output
    ``[batch]``, and no state carried from one call to the next. Returns the batch
    sizes the export allows (low, high). Raises ModelExecutionError naming the rule.

    Why before any call: the hot path calls the graph without its guards, so a
    graph built for 7 values per row would silently read the first 7 of 8, and a
    static batch-1 export would silently run at 64 rows."""
    ref, d = manifest.ref, len(manifest.inputs)
    signature = program.graph_signature
    nodes = {node.name: node for node in program.graph.nodes}
    inputs = [spec for spec in signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if len(inputs) != 1:
        raise ModelExecutionError(
            f"{ref}: the graph takes {len(inputs)} inputs; the runtime passes one float32 [batch, {d}] tensor"
        )
    given = nodes[inputs[0].arg.name].meta.get("val")
    if not isinstance(given, torch.Tensor) or given.dim() != 2 or given.dtype != torch.float32:
        described = f"{given.dtype} {list(given.shape)}" if isinstance(given, torch.Tensor) else type(given).__name__
        raise ModelExecutionError(
            f"{ref}: the graph's input is {described}; the runtime passes one float32 [batch, {d}] tensor"
        )
    batch, width = given.shape
    if not isinstance(width, int):
        raise ModelExecutionError(
            f"{ref}: the graph takes a dynamic number of values per row; export it with {d} (one per attribute)"
        )
    if width != d:
        raise ModelExecutionError(f"{ref}: graph takes {width} values per row, manifest has {d} attributes")
    mutated = [spec.target for spec in signature.output_specs if spec.kind != OutputKind.USER_OUTPUT]
    if mutated:
        raise ModelExecutionError(
            f"{ref}: the graph changes {', '.join(map(str, mutated))} on every call; a served model must not keep "
            f"state between calls"
        )
    outputs = [spec for spec in signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    answer = nodes[outputs[0].arg.name].meta.get("val") if len(outputs) == 1 and outputs[0].arg.name in nodes else None
    if (
        not isinstance(answer, torch.Tensor)
        or answer.dim() != 1
        or answer.dtype != torch.float32
        or str(answer.shape[0]) != str(batch)
    ):
        described = (
            f"{answer.dtype} {list(answer.shape)}" if isinstance(answer, torch.Tensor) else f"{len(outputs)} outputs"
        )
        raise ModelExecutionError(
            f"{ref}: the graph returns {described} for a [{batch}, {d}] input; the runtime needs one float32 "
            f"value per row, [{batch}]"
        )
    if isinstance(batch, int):
        return batch, batch
    allowed = program.range_constraints.get(batch.node.expr)
    return (1, math.inf) if allowed is None else (_bound(allowed.lower), _bound(allowed.upper))


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
        self.n_inputs = len(manifest.inputs)
        try:
            program = torch.export.load(io.BytesIO(artifact))
        except Exception as exc:  # whatever torch says about the bytes, the model cannot run
            raise ModelExecutionError(
                f"{manifest.ref}: the artifact is not a loadable torch.export program ({_first_line(exc)})"
            ) from exc
        self._rows = _check_contract(program, manifest)
        # The unlifted module re-checks input shapes in Python on every call
        # (a guard function and a sympy-based pre-hook: ~75% of a 64-row call
        # here), so the hot path calls the unguarded graph's forward directly.
        # That is safe because a call only ever happens at a shape the export's
        # own guards have already accepted: score_matrix builds a contiguous
        # float32 [bucket, n_inputs] tensor, n_inputs was checked against the
        # graph's input here (_check_contract), and each bucket is run once
        # through the guarded module (_check_bucket: the score and explain
        # buckets now, any other bucket, e.g. one a replay recorded, before its
        # first use) before the fast forward ever sees it. The remaining hooks
        # only matter for graphs taking nn.Module inputs.
        self._module = program.module(check_guards=False).to(device)
        self._forward = self._module.forward
        # The guarded module (only ever called by _check_bucket) holds the same
        # parameter tensors; on a GPU its buffers are a second copy.
        self._guarded = program.module().to(device)
        self._checked: set[int] = set()
        self._check_lock = threading.Lock()
        for bucket in sorted({self.score_bucket, self.explain_bucket}):
            self._check_bucket(bucket)

    def _check_bucket(self, bucket: int) -> None:
        """Run the export's own guards once at ``[bucket, n_inputs]`` and check that the
        graph answers one value per row; remembered, so the fast forward may then run at
        that shape. Raises ModelExecutionError naming the model and the rule."""
        with self._check_lock:
            if bucket in self._checked:
                return
            ref, low, high = self.manifest.ref, *self._rows
            if not low <= bucket <= high:
                if low == high:
                    raise ModelExecutionError(
                        f"{ref}: static batch {low} export cannot run at {bucket} rows: "
                        f"export with a dynamic batch dimension"
                    )
                raise ModelExecutionError(
                    f"{ref}: the export's batch dimension allows {low}..{high} rows, cannot run at {bucket}: "
                    f"export with a batch dimension covering the manifest's buckets"
                )
            x = torch.zeros((bucket, self.n_inputs), dtype=torch.float32, device=self.device)
            try:
                with torch.inference_mode():
                    out = self._guarded(x)
            except Exception as exc:  # a guard (or the graph) refuses this shape: name it
                raise ModelExecutionError(
                    f"{ref}: the export's own guards refuse a [{bucket}, {self.n_inputs}] float32 input "
                    f"({_first_line(exc)})"
                ) from exc
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if shape != [bucket]:
                raise ModelExecutionError(
                    f"{ref}: at {bucket} rows the graph returns {shape}; the runtime needs one value per row, [{bucket}]"
                )
            self._checked.add(bucket)

    def score_matrix(self, x: np.ndarray, bucket: int | None = None) -> tuple[np.ndarray, int]:
        """Scores for an encoded ``[n, n_inputs]`` float32 matrix, every forward
        pass at exactly ``bucket`` rows (default: the manifest's score bucket).
        Returns (scores float32 [n], bucket). Replay passes the recorded bucket."""
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ModelExecutionError(f"input matrix must be [rows, {self.n_inputs}], got {list(x.shape)}")
        bucket = self.score_bucket if bucket is None else bucket
        if not 1 <= bucket <= 1 << 16:
            raise ModelExecutionError(f"bucket must be 1..65536 rows, got {bucket}")
        if bucket not in self._checked:
            self._check_bucket(bucket)
        device, forward = self.device, self._forward
        return run_at_bucket(lambda chunk: forward(chunk.to(device)), x, bucket), bucket

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


def run_at_bucket(forward: Callable[[torch.Tensor], Any], x: np.ndarray, bucket: int) -> np.ndarray:
    """float32 outputs of ``forward`` for the encoded rows ``x``, every call at exactly
    ``bucket`` rows: the last chunk is padded with zero rows, whose outputs are
    discarded. The one place that decides execution shapes, shared by the runtime and
    by the packager's eager outputs, so both come from the shapes the runtime runs."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(len(x), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(x), bucket):
            chunk = torch.from_numpy(x[start : start + bucket])
            rows = len(chunk)
            if rows < bucket:
                chunk = torch.cat([chunk, torch.zeros((bucket - rows, x.shape[1]), dtype=torch.float32)])
            out[start : start + rows] = forward(chunk)[:rows].cpu().numpy()
    return out


def load_model(registry: Registry, name: str, version: str | None = None, device: str | None = None) -> LoadedModel:
    """Load a registered model in deterministic mode (sha256 verified by the registry)."""
    manifest = registry.manifest(name, version)
    artifact = registry.artifact(manifest)
    return LoadedModel.load(manifest, artifact, str(determinism.select_device(device)))

"""Small real model directories for validation tests: valid ones, and each way to break one.

``write_model_dir`` exports any ``nn.Module`` over the given attribute specs the
way gateway/training.py does (dynamic batch, stack traces dropped), herds a
background, sizes the explainer budget with ``explanation.default_budget``,
splits off held-out rows with the module's eager outputs, and writes
manifest.json, model.pt2, background.json and heldout.json. Every knob breaks
exactly one thing and keeps the rest consistent (hashes follow the bytes
written), so a test sees the one refusal it is about.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from torch import nn

from verdict.audit.canonical import canonical_bytes
from verdict.gateway import explanation
from verdict.gateway.manifest import (
    DatasetProvenance,
    DecisionRule,
    ExplainerSettings,
    Manifest,
    OutputSpace,
    OutputSpec,
    ReplayTolerance,
    RuntimeSettings,
    TrainingProvenance,
    WithheldAttribute,
)
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, HELDOUT_FILE, MANIFEST_FILE, HeldOut
from verdict.gateway.reasons import DEFAULT_REASON_TEMPLATES
from verdict.gateway.schema import AttributeSpec, encode_rows

__all__ = [
    "TINY_SPECS",
    "ModelDir",
    "TinyCredit",
    "export_bytes",
    "synthetic_rows",
    "write_model_dir",
]

TINY_SPECS: tuple[AttributeSpec, ...] = (
    AttributeSpec("age_years", "integer", "Age", unit="years", minimum=18, maximum=80, protected=True),
    AttributeSpec("amount", "number", "Credit amount", unit="DM", minimum=0, maximum=20000),
    AttributeSpec("duration_months", "integer", "Duration", unit="months", minimum=4, maximum=72),
    AttributeSpec(
        "purpose",
        "category",
        "Purpose",
        categories=("car", "furniture", "education"),
        category_labels={"car": "a car", "furniture": "furniture", "education": "education"},
    ),
    AttributeSpec(
        "housing", "category", "Housing", categories=(1, 2, 3), category_labels={"1": "rent", "2": "own", "3": "free"}
    ),
)
"""Five attributes: integers, a real number, string and integer category codes, one protected."""


class TinyCredit(nn.Module):
    """Raw attributes -> probability: scaled inputs, one hidden layer, a sigmoid, ``[batch]``."""

    scale: torch.Tensor

    def __init__(self, columns: int = len(TINY_SPECS), seed: int = 7, hidden: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("scale", torch.tensor(([80.0, 20000.0, 72.0, 2.0, 3.0] * 4)[:columns]))
        self.hidden = nn.Linear(columns, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x / self.scale))).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def synthetic_rows(specs: Sequence[AttributeSpec], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` valid rows drawn uniformly inside the schema (Python ints, floats and codes)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for spec in specs:
            if spec.kind == "category":
                codes = spec.categories or ()
                row[spec.name] = codes[int(rng.integers(len(codes)))]
            elif spec.kind == "integer":
                row[spec.name] = int(rng.integers(int(spec.minimum or 0), int(spec.maximum or 0) + 1))
            else:
                row[spec.name] = round(float(rng.uniform(spec.minimum or 0, spec.maximum or 0)), 2)
        rows.append(row)
    return rows


def export_bytes(module: nn.Module, columns: int, *, dynamic: bool = True, example_rows: int = 8) -> bytes:
    """torch.export + save, as gateway/training.py does (``dynamic=False``: a static batch of ``example_rows``)."""
    module.eval()
    example = torch.rand(example_rows, columns, generator=torch.Generator().manual_seed(0)) * 10
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}} if dynamic else None
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    for node in program.graph_module.graph.nodes:
        node.meta.pop("stack_trace", None)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class ModelDir:
    directory: Path
    manifest: Manifest
    module: nn.Module
    training_rows: list[dict[str, Any]]
    heldout_rows: list[dict[str, Any]]
    artifact: bytes


def write_model_dir(
    directory: Path,
    module: nn.Module | None = None,
    specs: Sequence[AttributeSpec] = TINY_SPECS,
    *,
    name: str = "tiny-credit",
    version: str = "1.0.0",
    rows: int = 160,
    heldout: int = 24,
    background_rows: int = 8,
    algorithm: str | None = None,
    permutations: int = 2,
    output_space: OutputSpace = "probability",
    threshold: float = 0.5,
    score_bucket: int = 16,
    explain_bucket: int = 256,
    dynamic_batch: bool = True,
    export_columns: int | None = None,
    export_rows: int = 8,
    artifact: bytes | None = None,
    edit_background: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    edit_manifest: Callable[[Manifest], Manifest] | None = None,
    edit_heldout: Callable[[HeldOut], HeldOut] | None = None,
    eager_outputs: bool = True,
    withheld: tuple[WithheldAttribute, ...] = (),
) -> ModelDir:
    """Write a model directory; by default a valid one that passes every check.

    ``export_columns``: export the graph for this many columns (a graph/manifest mismatch);
    ``artifact``: write these bytes as model.pt2 instead (random bytes, a state_dict, ...);
    ``algorithm``: "exact"/"permutation" instead of default_budget's choice; the ``edit_*``
    callables change the background rows, the manifest or the held-out file before writing
    (the manifest is written without gateway.manifest's own checks, so it may be invalid)."""
    module = TinyCredit(len(specs)) if module is None else module
    module.eval()
    all_rows = synthetic_rows(specs, rows + heldout)
    training, held = all_rows[:rows], all_rows[rows:]
    columns = len(specs) if export_columns is None else export_columns
    if artifact is None:
        artifact = export_bytes(module, columns, dynamic=dynamic_batch, example_rows=export_rows)
    chosen = explanation.summarise_background(specs, encode_rows(specs, training), background_rows)
    background_list = [training[i] for i in chosen]
    if edit_background is not None:
        background_list = edit_background(background_list)
    summary = explanation.BACKGROUND_SUMMARY.format(rows=background_rows)
    background = explanation.encode_background(background_list, [1] * len(background_list), summary)
    budget = explanation.default_budget(len(specs), background_rows)
    if algorithm == "exact":
        budget = explanation.Budget("exact", 0, explanation.rows_needed("exact", len(specs), background_rows, 0))
    elif algorithm == "permutation":
        needed = explanation.rows_needed("permutation", len(specs), background_rows, permutations)
        budget = explanation.Budget("permutation", permutations, needed)
    outputs = None
    if eager_outputs and columns == len(specs):
        with torch.inference_mode():
            produced = module(torch.from_numpy(encode_rows(specs, held)))
        outputs = [float(v) for v in produced.reshape(-1).float()] if produced.numel() == len(held) else None
    heldout_file = HeldOut("verdict.heldout/v1", held, [float(i % 2) for i in range(len(held))], outputs)
    if edit_heldout is not None:
        heldout_file = edit_heldout(heldout_file)
    manifest = Manifest(
        format="verdict.model/v1",
        name=name,
        version=version,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        artifact_bytes=len(artifact),
        inputs=tuple(specs),
        output=OutputSpec("probability_of_default", "Probability of default (synthetic test model)", output_space),
        decision=DecisionRule(threshold, "decline", "approve", "test threshold"),
        explainer=ExplainerSettings(
            **budget._asdict(),
            output_space=output_space,
            background_sha256=hashlib.sha256(background).hexdigest(),
            background_rows=len(background_list),
            background_summary=summary,
            seed_policy=explanation.SEED_POLICY,
            additivity_epsilon=1e-6,
            reason_templates=dict(DEFAULT_REASON_TEMPLATES),
        ),
        tolerance=ReplayTolerance(absolute=1e-6, relative=1e-5),
        runtime=RuntimeSettings(dtype="float32", score_bucket=score_bucket, explain_bucket=explain_bucket, threads=1),
        training=TrainingProvenance(
            code_commit="uncommitted",
            source_sha256="0" * 64,
            dataset=DatasetProvenance(
                name="synthetic",
                title="Synthetic applicants",
                sha256=hashlib.sha256(msgspec.json.encode(all_rows)).hexdigest(),
                rows=len(all_rows),
                citation="tests/support/model_dirs.py",
                licence="test data",
            ),
            split="first rows train, last rows held out",
            seed=0,
            hyperparameters={},
            environment_sha256="0" * 64,
            environment_summary={},
            metrics={},
        ),
        description="A tiny model for validation tests",
        withheld=withheld,
    )
    if edit_manifest is not None:
        manifest = edit_manifest(manifest)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ARTIFACT_FILE).write_bytes(artifact)
    (directory / BACKGROUND_FILE).write_bytes(background)
    (directory / MANIFEST_FILE).write_bytes(canonical_bytes(manifest))  # no _check: tests write invalid ones too
    (directory / HELDOUT_FILE).write_bytes(msgspec.json.encode(heldout_file))
    return ModelDir(directory, manifest, module, training, held, artifact)

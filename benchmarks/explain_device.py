"""Exact Shapley values through the gateway's runtime on the device it picks: bits and throughput.

Issue 21, item 4: exact interventional Shapley values for up to 20 attributes
(German credit) through the deterministic runtime at the fixed explain bucket,
bit-identical across runs and batch compositions on the device, and how fast.
On a CUDA machine the gateway picks the GPU (``VERDICT_DEVICE=auto``); the
same script runs on a CPU (``VERDICT_DEVICE=cpu``) as a smoke run.

What it prints (the first ``--applicants`` held-out applicants of ``--model``):

1. Bits: the engine's exact enumeration (gateway.reference_enumeration, the
   certified explainer's fallback) computed three ways: in order; again in
   reverse order; and with every model call shifted by ``--shift`` rows of
   another applicant in front, so each row lands at another position of the
   explain bucket. Identical bytes, or the largest difference.
2. Throughput of exact enumeration: model rows/s and explanations/s.
3. The certified default against the certified explainer with exact
   enumeration up to ``--exact-rows`` (2**21 by default: every German credit
   applicant), side by side at batch 64: certified share, model rows,
   explanations/s.

Run (one prepared script on the device machine; about 2 minutes for German credit on a GPU):
    VERDICT_DEVICE=cuda .venv/bin/python benchmarks/explain_device.py
    VERDICT_DEVICE=cpu .venv/bin/python benchmarks/explain_device.py --applicants 4   # smoke run here
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import numpy as np
import torch

from benchmarks._common import interleaved, reference_model
from benchmarks.explain import DEFAULT, Configuration, applicants, batches, explainer_for, reference
from verdict.gateway import training
from verdict.gateway.reference_enumeration import enumeration_rows, exact_contributions
from verdict.gateway.runtime import LoadedModel


def exact_all(model: LoadedModel, ref, x: np.ndarray, order: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """float64 [n, d]: the engine's exact values of rows ``x`` computed in ``order``; with ``shift``,
    every model call has those rows in front (and their outputs dropped)."""

    def evaluate(rows: np.ndarray) -> np.ndarray:
        if shift is None:
            return model.evaluate_for_explanation(rows)
        return model.evaluate_for_explanation(np.concatenate([shift, rows]))[len(shift) :]

    background_outputs = model.evaluate_for_explanation(ref.matrix).astype(np.float64)
    full = model.evaluate_for_explanation(x).astype(np.float64)
    values = np.zeros(x.shape, dtype=np.float64)
    for i in order:
        values[i] = exact_contributions(x[i], full[i], ref.matrix, background_outputs, ref.weights, evaluate)
    return values


def report_bits(model: LoadedModel, ref, x: np.ndarray, shift_rows: int) -> float:
    """Print whether the three ways agree to the bit; return the in-order run's seconds."""
    n = len(x)
    started = time.perf_counter()
    in_order = exact_all(model, ref, x, np.arange(n), None)
    seconds = time.perf_counter() - started
    reversed_order = exact_all(model, ref, x, np.arange(n)[::-1], None)
    shifted = exact_all(model, ref, x, np.arange(n), np.repeat(x[-1:], shift_rows, axis=0))
    for label, other in (("again, reverse order", reversed_order), (f"shifted by {shift_rows} rows", shifted)):
        same = in_order.tobytes() == other.tobytes()
        print(
            f"  {label}: {'identical bits' if same else 'DIFFERENT bits'}"
            + ("" if same else f", largest difference {np.abs(in_order - other).max():.3e}")
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="german-credit", choices=sorted(training.RECIPES))
    parser.add_argument("--applicants", type=int, default=64)
    parser.add_argument("--shift", type=int, default=1000, help="rows put in front of every model call (bits check)")
    parser.add_argument("--exact-rows", type=int, default=1 << 21, help="the exact fallback's budget to compare")
    args = parser.parse_args()

    registry, model = reference_model(args.model)
    artifact = registry.artifact(model.manifest)
    ref = reference(model, registry.background(model.manifest), "pinned background")
    x, scores, seeds = applicants(model, args.applicants)
    x, scores, seeds = x[: args.applicants], scores[: args.applicants], seeds[: args.applicants]
    rows = np.array([enumeration_rows(row, ref.matrix) for row in x])
    device = model.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"model {model.manifest.ref} on {device} ({name}), explain bucket {model.explain_bucket}, torch {torch.__version__}; "
        f"{len(x)} held-out applicants, exact enumeration {rows.mean():,.0f} model rows each on average (max {rows.max():,})"
    )
    print("exact values, three ways:")
    seconds = report_bits(model, ref, x, args.shift)
    print(
        f"exact enumeration: {rows.sum() / seconds:,.0f} model rows/s, {len(x) / seconds:,.2f} explanations/s "
        f"(one applicant per call sequence, in order)"
    )

    wide = Configuration(
        f"certified, exact <= {args.exact_rows:,} rows",
        "certified",
        DEFAULT.pairs,
        msgspec.structs.replace(DEFAULT.certification, exact_rows=args.exact_rows),
    )
    explainers = {c.label: explainer_for(model, artifact, ref, c) for c in (DEFAULT, wide)}
    size = min(64, len(x))
    rates = interleaved({label: batches(e, x, scores, seeds, size, len(x)) for label, e in explainers.items()}, 3)
    print(f"side by side, batch {size}:")
    for label, explainer in explainers.items():
        fidelity = [r.fidelity for r in explainer.explain(x, scores, seeds)]
        certified = np.mean([f.certified for f in fidelity if f is not None])
        spent = np.mean([f.evaluations for f in fidelity if f is not None])
        print(f"  {label}: {certified:.1%} certified, {spent:,.0f} model rows each, {rates[label]:,.1f} explanations/s")


if __name__ == "__main__":
    main()

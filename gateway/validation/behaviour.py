"""The model run through the real runtime: its outputs, export against eager, batch invariance.

Why through gateway.runtime and not the graph directly: what is validated must
be what serves, padding and buckets included. Every comparison of bits is a
comparison of float32 bit patterns (``view(np.uint32)``): "close" is not
batch invariance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from verdict.gateway.manifest import Manifest
from verdict.gateway.model_files import HeldOut
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.validation.report import Check, OutputDistribution, measure
from verdict.gateway.validation.rows import ProbeRows

__all__ = [
    "EAGER_ABSOLUTE",
    "EAGER_RELATIVE",
    "batch_invariance_check",
    "eager_check",
    "outputs_check",
    "probe_outputs",
]

EAGER_ABSOLUTE = 1e-6
EAGER_RELATIVE = 1e-5
"""Export against eager: |exported - eager| <= 1e-6 + 1e-5 * |eager| per row (the reference
models' replay tolerance). The exported graph runs other kernels at other shapes than the
eager module did, so last bits may differ; a larger difference means the export changed
what the model computes (a branch traced one way, a train-mode layer, preprocessing lost)."""
SCORE_ALONE_ROWS = 64  # rows scored alone (padded) at the score bucket
EXPLAIN_ALONE_ROWS = 4  # at the explain bucket: each alone call is a full explain-bucket forward pass
_HISTOGRAM_BINS = 20


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def outputs_check(
    runtime: LoadedModel, manifest: Manifest, probes: ProbeRows
) -> tuple[np.ndarray | None, Check, OutputDistribution | None]:
    """Scores of every probe row at the score bucket: finite, and in [0, 1] for a probability."""
    name = "outputs"
    try:
        scores, bucket = runtime.score_matrix(probes.matrix)
    except Exception as exc:  # noqa: BLE001 - a user's graph can raise anything; the report names it
        return None, Check(name, False, f"running the model raised {_error(exc)}", rule="outputs.run"), None
    finite = np.isfinite(scores)
    measured: dict[str, Any] = {
        "rows": len(scores),
        "bucket": bucket,
        "non_finite": int((~finite).sum()),
        "minimum": measure(float(scores[finite].min())) if finite.any() else "none",
        "maximum": measure(float(scores[finite].max())) if finite.any() else "none",
    }
    distribution = _distribution(scores, probes, manifest)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        first = ", ".join(f"{probes.labels[i]} -> {_plain(scores[i])}" for i in bad[:3])
        return (
            scores,
            Check(
                name,
                False,
                f"{len(bad)} of {len(scores)} outputs are not finite (first: {first}): a NaN or infinite score "
                f"fails the decision closed; guard the arithmetic (division, log, sqrt) at the schema's edges",
                rule="outputs.finite",
                measured=measured,
            ),
            distribution,
        )
    low, high = float(scores.min()), float(scores.max())
    if manifest.output.space == "probability" and (low < 0.0 or high > 1.0):
        outside = np.flatnonzero((scores < 0) | (scores > 1))
        return (
            scores,
            Check(
                name,
                False,
                f"outputs outside [0, 1] (min {low:.6g}, max {high:.6g}; {len(outside)} of {len(scores)} rows, "
                f"first {probes.labels[outside[0]]}): a probability model must end in a sigmoid; is it returning "
                f"logits?",
                rule="outputs.probability_range",
                measured=measured,
            ),
            distribution,
        )
    space = "[0, 1]" if manifest.output.space == "probability" else "finite"
    return (
        scores,
        Check(
            name,
            True,
            f"{len(scores)} outputs (held-out {probes.count('heldout')}, background {probes.count('background')}, "
            f"boundary {probes.count('boundary')}) all {space}: min {low:.6g}, max {high:.6g}",
            rule=f"outputs.{manifest.output.space}",
            measured=measured,
        ),
        distribution,
    )


def _distribution(scores: np.ndarray, probes: ProbeRows, manifest: Manifest) -> OutputDistribution:
    finite = scores[np.isfinite(scores)].astype(np.float64)
    sources = {source: probes.count(source) for source in ("heldout", "background", "boundary")}
    if not len(finite):
        return OutputDistribution(sources, 0, None, None, [], [], manifest.decision.threshold)
    low, high = float(finite.min()), float(finite.max())
    if manifest.output.space == "probability" and low >= 0 and high <= 1:
        span = (0.0, 1.0)
    else:
        span = (low, high if high > low else low + 1.0)
    counts, edges = np.histogram(finite, bins=_HISTOGRAM_BINS, range=span)
    return OutputDistribution(
        sources,
        len(finite),
        low,
        high,
        [float(e) for e in edges],
        [int(c) for c in counts],
        manifest.decision.threshold,
    )


def eager_check(
    runtime: LoadedModel,
    manifest: Manifest,
    eager: torch.nn.Module | None,
    heldout: HeldOut | None,
    probes: ProbeRows,
) -> Check:
    """The exported runtime (score bucket) against the eager module, or against the eager
    outputs the packager stored with the held-out rows."""
    name = "export_vs_eager"
    bound = f"|exported - eager| <= {EAGER_ABSOLUTE:g} + {EAGER_RELATIVE:g}·|eager|"
    if heldout is not None:
        from_heldout = probes.count("heldout")
        x, labels = probes.matrix[:from_heldout], probes.labels[:from_heldout]
    else:
        x, labels = probes.matrix, probes.labels
    if eager is not None:
        source = "the eager module"
        try:
            with torch.inference_mode():
                produced = eager(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            expected = produced.detach().to("cpu").numpy() if isinstance(produced, torch.Tensor) else None
        except Exception as exc:  # noqa: BLE001 - the user's module can raise anything; the report names it
            return Check(name, False, f"the eager module raised {_error(exc)}", rule="eager.run")
        if expected is None or expected.shape != (len(x),):
            shape = list(expected.shape) if expected is not None else type(produced).__name__
            return Check(
                name,
                False,
                f"the eager module returns {shape} for {len(x)} rows; it must return one value per row, shape [batch]",
                rule="eager.shape",
            )
        if expected.dtype != np.float32:
            return Check(
                name,
                False,
                f"the eager module returns {expected.dtype}; it must compute in float32 (the served dtype)",
                rule="eager.dtype",
            )
    elif heldout is not None and heldout.eager_outputs is not None:
        source = "heldout.json's eager_outputs"
        expected = np.asarray(heldout.eager_outputs[: len(x)], dtype=np.float32)
    else:
        why = "heldout.json has no eager outputs" if heldout is not None else "no usable heldout.json"
        return Check(
            name,
            True,
            f"skipped: a pre-exported artifact ({why} and no eager module to compare with)",
            status="skipped",
            measured={"bound_absolute": EAGER_ABSOLUTE, "bound_relative": EAGER_RELATIVE},
        )
    try:
        exported, bucket = runtime.score_matrix(x)
    except Exception as exc:  # noqa: BLE001 - a user's graph can raise anything; the report names it
        return Check(name, False, f"running the exported model raised {_error(exc)}", rule="eager.run")
    identical = int((_bits(exported) == _bits(expected)).sum())
    diff = np.abs(exported.astype(np.float64) - expected.astype(np.float64))
    allowed = EAGER_ABSOLUTE + EAGER_RELATIVE * np.abs(expected.astype(np.float64))
    finite_diff = diff[np.isfinite(diff)]
    measured = {
        "rows": len(x),
        "bucket": bucket,
        "bit_identical": identical,
        "max_abs_difference": measure(float(finite_diff.max())) if len(finite_diff) else 0.0,
        "bound_absolute": EAGER_ABSOLUTE,
        "bound_relative": EAGER_RELATIVE,
    }
    beyond = np.flatnonzero(~(diff <= allowed) & ~(_bits(exported) == _bits(expected)))
    if len(beyond):
        i = int(beyond[np.argmax(np.nan_to_num(diff[beyond], nan=np.inf))])
        return Check(
            name,
            False,
            f"{len(beyond)} of {len(x)} rows differ beyond {bound} (worst {labels[i]}: exported {_plain(exported[i])}, "
            f"eager {_plain(expected[i])}): the export does not compute what {source} does (a train-mode layer, a "
            f"branch traced one way, preprocessing left outside forward?)",
            rule="eager.tolerance",
            measured=measured,
        )
    if identical == len(x):
        detail = f"bit-identical to {source} on {len(x)} rows at bucket {bucket}"
    else:
        detail = (
            f"{identical} of {len(x)} rows bit-identical to {source}, max |difference| "
            f"{float(diff.max()):.3g} within {bound}"
        )
    return Check(name, True, detail, rule="eager.tolerance", measured=measured)


def batch_invariance_check(runtime: LoadedModel, manifest: Manifest, probes: ProbeRows) -> Check:
    """Each row scored alone (padded to the bucket by the runtime) against the same row in
    full batches of other probe rows, at its first, middle and last position, at the score
    bucket and the explain bucket: the bits must be equal."""
    name = "batch_invariance"
    measured: dict[str, Any] = {}
    problems = []
    for kind, bucket, alone_rows in (
        ("score", manifest.runtime.score_bucket, SCORE_ALONE_ROWS),
        ("explain", manifest.runtime.explain_bucket, EXPLAIN_ALONE_ROWS),
    ):
        try:
            compared, mismatches, first = _invariance_at(runtime, probes, bucket, alone_rows)
        except Exception as exc:  # noqa: BLE001 - a user's graph can raise anything; the report names it
            return Check(name, False, f"running the model at bucket {bucket} raised {_error(exc)}", rule="batch.run")
        measured[f"{kind}_bucket"] = bucket
        measured[f"{kind}_comparisons"] = compared
        measured[f"{kind}_mismatches"] = mismatches
        if first:
            problems.append(f"{kind} bucket {bucket}: {mismatches} of {compared} comparisons differ ({first})")
    if problems:
        return Check(
            name,
            False,
            "; ".join(problems) + ": a row's score depends on the other rows of its batch (batch statistics in "
            "forward, rows mixed by a reshape, or a train-mode normalisation layer)",
            rule="batch.bit_identical",
            measured=measured,
        )
    return Check(
        name,
        True,
        f"bit-identical alone and at first, middle and last positions of full batches "
        f"({measured['score_comparisons']} comparisons at bucket {measured['score_bucket']}, "
        f"{measured['explain_comparisons']} at bucket {measured['explain_bucket']})",
        rule="batch.bit_identical",
        measured=measured,
    )


def _invariance_at(runtime: LoadedModel, probes: ProbeRows, bucket: int, alone_rows: int) -> tuple[int, int, str]:
    x, n = probes.matrix, len(probes.matrix)
    k = min(n, alone_rows)
    alone = np.concatenate([runtime.score_matrix(x[i : i + 1], bucket)[0] for i in range(k)])
    compared = mismatches = 0
    first = ""
    # the whole probe set in one call (full chunks and a padded last one)
    together = runtime.score_matrix(x, bucket)[0][:k]
    differ = np.flatnonzero(_bits(together) != _bits(alone))
    compared, mismatches = k, len(differ)
    if len(differ):
        i = int(differ[0])
        first = f"{probes.labels[i]} alone {_hex(alone[i])}, among {n} probe rows {_hex(together[i])}"
    for i in range(k):
        for position in sorted({0, bucket // 2, bucket - 1}):
            index = (np.arange(bucket) - position + i) % n  # row i lands at `position`
            out = runtime.score_matrix(x[index], bucket)[0]
            # row i sits at `position` and, when the bucket is larger than the probe set, elsewhere too
            positions = np.flatnonzero(index == i)
            differing = positions[_bits(out[positions]) != _bits(alone[i : i + 1])]
            compared += len(positions)
            mismatches += len(differing)
            if len(differing) and not first:
                at = int(differing[0])
                first = f"{probes.labels[i]} alone {_hex(alone[i])}, at position {at} of a full batch {_hex(out[at])}"
    return compared, mismatches, first


def _plain(value: Any) -> str:
    """A float32 output as a person reads it: ``0.5676211``, ``nan``, ``inf`` (the shortest
    digits that give back the same float32), never numpy's ``np.float32(0.5676211)``."""
    return str(np.float32(value))


def _hex(value: Any) -> str:
    return f"{float(value)!r} (0x{int(np.float32(value).view(np.uint32)):08x})"


def probe_outputs(runtime: LoadedModel, matrix: np.ndarray) -> bytes:
    """The rows' outputs at the score bucket, then at the explain bucket, as raw float32
    bytes: what the fresh-process check compares between processes."""
    manifest = runtime.manifest
    at_score = runtime.score_matrix(matrix, manifest.runtime.score_bucket)[0]
    at_explain = runtime.score_matrix(matrix, manifest.runtime.explain_bucket)[0]
    return np.concatenate([at_score, at_explain]).astype(np.float32).tobytes()

"""Waterfall chart of one decision's contributions (PNG or SVG), headless.

Why shap's own plot: it is the chart model-risk teams already read, it draws
exactly base value + contributions = output, and the attribute wording comes
from the manifest (labels, ``describe`` for values), so the picture says what
the reasons say. Rendering uses matplotlib's Agg backend (no display needed);
pyplot keeps global state, so renders are serialised with every other chart
of the process (gateway.plotting.chart_session). SVG text is
kept as text (searchable, accessible) and its ids and metadata are fixed, so
the same decision renders to the same SVG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from verdict.gateway.explanation import ExplanationResult
from verdict.gateway.manifest import Manifest
from verdict.gateway.plotting import chart_session

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = ["FORMATS", "render_waterfall"]

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "verdict-waterfall",
    "font.family": "DejaVu Sans",
}


def _shap_explanation(manifest: Manifest, attributes: Mapping[str, Any], result: ExplanationResult):  # noqa: ANN202
    # lazy: shap (and numba) only when a waterfall chart is drawn
    import shap

    specs = manifest.inputs
    return shap.Explanation(
        values=np.array([result.contributions[spec.name] for spec in specs], dtype=np.float64),
        base_values=result.base_value,
        data=np.array([spec.describe(attributes[spec.name]) for spec in specs], dtype=object),
        feature_names=[spec.label for spec in specs],
    )


def render_waterfall(
    manifest: Manifest,
    attributes: Mapping[str, Any],
    result: ExplanationResult,
    fmt: str = "png",
    *,
    max_display: int = 10,
) -> bytes:
    """The chart as PNG or SVG bytes; the largest ``max_display - 1`` contributions
    get a bar each, the rest are summed into one."""
    if fmt not in FORMATS:
        raise ValueError(f"waterfall format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    # lazy: shap (and numba) only when a waterfall chart is drawn
    import shap

    explanation = _shap_explanation(manifest, attributes, result)
    with chart_session(_STYLE) as plt:
        figure = plt.figure()
        try:
            shap.plots.waterfall(explanation, max_display=max_display, show=False)
            figure.suptitle(
                f"{manifest.name} {manifest.version}: {manifest.output.description}", fontsize=12, x=0.02, ha="left"
            )
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            figure.savefig(buffer, format=fmt, dpi=100, bbox_inches="tight", metadata=metadata)
        finally:
            plt.close(figure)
    return buffer.getvalue()

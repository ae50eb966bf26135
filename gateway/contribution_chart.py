"""The contribution chart: how each attribute moved one decision's score, as SVG text.

Why string-built SVG: the subject-access letter and the console show the same picture
of a logged decision; it must open offline, years later, exactly as drawn, so it needs
no plotting library, no script and no external asset, and every text in it is escaped
(well-formed XML, so it also stands alone as an .svg file). Colour is never the only
cue: the side of the axis, the signed value and each bar's tooltip say the same.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from verdict.gateway.lookups import ExplanationView

__all__ = ["LOWERED_COLOUR", "MAX_BARS", "RAISED_COLOUR", "Bar", "bar_size", "chart_bars", "contribution_svg"]

MAX_BARS = 8
RAISED_COLOUR = "#d55e00"  # Okabe-Ito vermillion / blue: distinguishable with the common colour-vision deficiencies
LOWERED_COLOUR = "#0072b2"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Bar:
    attribute: str
    value: float
    label: str  # the manifest's wording when a reason names the attribute, else the attribute name


def chart_bars(decision: ExplanationView) -> list[Bar]:
    """The largest contributions by size, at most MAX_BARS (ties by name, so the same record draws the same)."""
    labels = {r.attribute: r.label for r in [*decision.reasons, *decision.principal_reasons_for_denial] if r.label}
    ranked = sorted(decision.contributions.items(), key=lambda item: (-bar_size(item[1]), item[0]))
    return [Bar(name, float(value), labels.get(name, name)) for name, value in ranked[:MAX_BARS]]


def bar_size(value: float) -> float:
    return abs(value) if math.isfinite(value) else 0.0


# --- drawing ----------------------------------------------------------------------------------------------------

_ROW, _TOP, _LABEL_W, _BAR_W, _VALUE_W = 24, 34, 210, 320, 70


def contribution_svg(bars: list[Bar], title: str = "How each of your details moved the score") -> str:
    """A diverging bar chart as SVG text: risk raised to the right, lowered to the left, largest first.

    String-built so the page needs no plotting library and renders the same bytes every time; well-formed
    XML (every text escaped), so it also stands alone as an .svg file. Colour is never the only cue: the
    side of the axis, the signed value and each bar's tooltip say the same.
    """
    width = _LABEL_W + _BAR_W + _VALUE_W
    height = _TOP + _ROW * len(bars) + 8
    scale = (_BAR_W / 2) / (max((bar_size(b.value) for b in bars), default=0.0) or 1.0)
    axis = _LABEL_W + _BAR_W / 2
    rows = [_svg_row(bar, i, axis, scale) for i, bar in enumerate(bars)]
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="contributions" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
            f"<title>{_e(title)}</title>",
            _svg_legend(),
            *rows,
            f'<line x1="{axis:.1f}" y1="{_TOP - 4}" x2="{axis:.1f}" y2="{height - 4}" stroke="#333" stroke-width="1"/>',
            "</svg>",
        ]
    )


def _svg_legend() -> str:
    return (
        f'<rect x="{_LABEL_W}" y="6" width="12" height="12" fill="{LOWERED_COLOUR}"/>'
        f'<text x="{_LABEL_W + 16}" y="16">lowered the risk</text>'
        f'<rect x="{_LABEL_W + 150}" y="6" width="12" height="12" fill="{RAISED_COLOUR}"/>'
        f'<text x="{_LABEL_W + 166}" y="16">raised the risk</text>'
    )


def _svg_row(bar: Bar, index: int, axis: float, scale: float) -> str:
    """One attribute: its name, its bar from the axis, its signed value; the tooltip gives the full wording."""
    y = _TOP + index * _ROW
    length = bar_size(bar.value) * scale
    raised = bar.value > 0
    x = axis if raised else axis - length
    effect = "raised the risk" if raised else "lowered the risk" if bar.value < 0 else "did not move the score"
    name = bar.attribute if len(bar.attribute) <= 30 else bar.attribute[:29] + "…"
    return (
        f"<g><title>{_e(bar.label)}: {bar.value:+.3f}, {effect}</title>"
        f'<text x="{_LABEL_W - 8}" y="{y + 15}" text-anchor="end">{_e(name)}</text>'
        f'<rect class="bar {"raised" if raised else "lowered"}" x="{x:.1f}" y="{y + 4}" width="{length:.1f}" '
        f'height="{_ROW - 8}" fill="{RAISED_COLOUR if raised else LOWERED_COLOUR}"/>'
        f'<text x="{_LABEL_W + _BAR_W + 6}" y="{y + 15}">{bar.value:+.3f}</text></g>'
    )

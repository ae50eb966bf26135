"""The monitoring figures for people: inline SVG charts and one self-contained HTML report.

Why string-built SVG and plain HTML: the report is attached to model-risk
reviews and opened offline, years later; it loads nothing (no script, no
font, no stylesheet from elsewhere) and its text stays text. The console
embeds the same charts (:func:`score_distribution_svg`,
:func:`reason_rates_svg`, ...), so the page and the report show one picture.

Readable without colour: every bar carries its value as text, the live
population is a solid bar and the training reference a hatched outline (the
legend says which), protected attributes are hatched and named
"(protected)", adverse outcomes are hatched; colour only repeats what the
shapes and words already say. Each chart has a title and a description
for screen readers (``role="img"``, ``<title>``, ``<desc>``).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass

from verdict.gateway.monitoring import (
    PSI_FLOOR,
    PSI_MAJOR,
    PSI_STABLE,
    Distribution,
    ModelSummary,
    MonitorSummary,
)

__all__ = [
    "decisions_per_day_svg",
    "distribution_svg",
    "psi_svg",
    "reason_rates_svg",
    "render_report",
    "report_body",
    "score_distribution_svg",
]

INK = "#1a1a1a"
LIVE = "#0072b2"  # Okabe-Ito blue: 5.2:1 on white
FONT = 'font-family="DejaVu Sans, Verdana, sans-serif" font-size="11"'
"""Presentation attributes, not a style attribute: a page with a strict Content-Security-Policy
(the console's) ignores inline styles."""
SHIFT_WORDS = {"stable": "stable", "moderate": "moderate shift", "major": "major shift"}
_BAR = 12
_GAP = 8
_LABEL_W = 250
_PLOT_W = 340
_VALUE_W = 130
_LABEL_CHARS = 38
"""Longer labels are cut with an ellipsis on the chart; the bar's tooltip and the tables keep them whole."""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _uid(*parts: str) -> str:
    """A stable id prefix per chart (several charts share a page; ids must not collide)."""
    return "m" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "\u2026"


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f} %"


def _psi_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _defs(uid: str) -> str:
    return (
        f'<defs><pattern id="{uid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{INK}" stroke-width="2"/></pattern></defs>'
    )


def _svg(uid: str, width: int, height: int, title: str, description: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT}>'
        f'<title id="{uid}-t">{_e(title)}</title><desc id="{uid}-d">{_e(description)}</desc>'
        f"{_defs(uid)}" + "".join(body) + "</svg>"
    )


@dataclass(frozen=True)
class _Row:
    label: str
    values: tuple[float | None, ...]
    texts: tuple[str, ...]
    hatched: tuple[bool, ...]


def _bars(uid: str, title: str, description: str, rows: Sequence[_Row], legend: Sequence[tuple[str, bool]]) -> str:
    """Horizontal bars, one group per row, its values as text beside each bar."""
    per_row = max((len(r.values) for r in rows), default=1)
    group = per_row * (_BAR + 1) + _GAP
    top = 24 if legend else 6
    height = top + max(1, len(rows)) * group + 6
    width = _LABEL_W + _PLOT_W + _VALUE_W
    largest = max((v for r in rows for v in r.values if v is not None), default=0.0) or 1.0
    body = _legend_at(uid, _LABEL_W, 4, legend) if legend else []
    body.append(f'<line x1="{_LABEL_W}" y1="{top - 2}" x2="{_LABEL_W}" y2="{height - 4}" stroke="{INK}"/>')
    if not rows:
        body.append(f'<text x="{_LABEL_W + 6}" y="{top + 12}" fill="{INK}">no data</text>')
    for n, row in enumerate(rows):
        y = top + n * group
        body.append(
            f'<text x="{_LABEL_W - 6}" y="{y + per_row * (_BAR + 1) / 2 + 4:.1f}" text-anchor="end" '
            f'fill="{INK}">{_e(_short(row.label))}</text>'
        )
        for k, (value, text, hatched) in enumerate(zip(row.values, row.texts, row.hatched, strict=True)):
            by = y + k * (_BAR + 1)
            w = 0.0 if value is None else max(0.0, value) / largest * _PLOT_W
            fill = f"url(#{uid}-hatch)" if hatched else LIVE
            body.append(
                f'<rect x="{_LABEL_W}" y="{by}" width="{w:.1f}" height="{_BAR}" fill="{fill}" stroke="{INK}" '
                f'stroke-width="0.8"><title>{_e(f"{row.label}: {text}")}</title></rect>'
            )
            body.append(f'<text x="{_LABEL_W + w + 4:.1f}" y="{by + _BAR - 1}" fill="{INK}">{_e(text)}</text>')
    return _svg(uid, width, height, title, description, body)


# -- the charts -----------------------------------------------------------------------------


def distribution_svg(distribution: Distribution, model: str = "", version: str = "") -> str:
    """Live share of each bin (solid) against the training reference's (hatched)."""
    has_reference = distribution.reference_total is not None
    rows = [
        _Row(
            label=b.label,
            values=(b.live_share, b.reference_share) if has_reference else (b.live_share,),
            texts=(f"live {_percent(b.live_share)}", f"reference {_percent(b.reference_share)}")
            if has_reference
            else (f"live {_percent(b.live_share)}",),
            hatched=(False, True) if has_reference else (False,),
        )
        for b in distribution.bins
    ]
    psi = (
        f"; PSI {_psi_text(distribution.psi)} ({SHIFT_WORDS.get(distribution.shift or '', 'n/a')})"
        if distribution.psi is not None
        else ""
    )
    title = f"{distribution.label}: live decisions against the training reference{psi}"
    if not has_reference:
        title = f"{distribution.label}: live decisions (no training reference)"
    description = "; ".join(
        f"{b.label}: live {_percent(b.live_share)}"
        + (f", reference {_percent(b.reference_share)}" if has_reference else "")
        for b in distribution.bins
    )
    legend = [("live decisions (solid)", False), ("training reference (hatched)", True)] if has_reference else []
    return _bars(_uid("dist", model, version, distribution.attribute), title, description, rows, legend)


def score_distribution_svg(model_summary: ModelSummary) -> str:
    """The score's distribution against the training reference (deciles of the reference scores)."""
    if model_summary.score is None:
        uid = _uid("score", model_summary.model, model_summary.version)
        return _svg(
            uid,
            _LABEL_W + _PLOT_W,
            30,
            "Score distribution: no fixed bins",
            "a free score without a training reference has no fixed bins",
            [f'<text x="6" y="18" fill="{INK}">no fixed score bins (a free score without a training reference)</text>'],
        )
    return distribution_svg(model_summary.score, model_summary.model, model_summary.version)


def reason_rates_svg(model_summary: ModelSummary) -> str:
    """How often each attribute is among the principal reasons (protected ones hatched)."""
    rows = [
        _Row(
            label=f"{r.label} (protected)" if r.protected else r.label,
            values=(r.rate,),
            texts=(f"{_percent(r.rate)} ({r.principal})",),
            hatched=(r.protected,),
        )
        for r in model_summary.reasons
        if r.principal
    ]
    description = "; ".join(f"{row.label}: {row.texts[0]}" for row in rows) or "no explained decisions"
    legend = [("share of explained decisions", False), ("protected attribute (hatched)", True)]
    return _bars(
        _uid("reasons", model_summary.model, model_summary.version),
        f"Principal reasons: share of {model_summary.explained} explained decisions citing each attribute",
        description,
        rows,
        legend,
    )


def psi_svg(model_summary: ModelSummary) -> str:
    """PSI of the score and of each attribute, with the 0.1 and 0.25 thresholds drawn."""
    dists = [d for d in [model_summary.score, *model_summary.attributes] if d is not None and d.psi is not None]
    uid = _uid("psi", model_summary.model, model_summary.version)
    top, group = 24, _BAR + _GAP
    height = top + max(1, len(dists)) * group + 8
    width = _LABEL_W + _PLOT_W + _VALUE_W
    scale = max([PSI_MAJOR * 1.2, *(d.psi or 0.0 for d in dists)])
    body = []
    for value, words in ((PSI_STABLE, f"{PSI_STABLE} moderate"), (PSI_MAJOR, f"{PSI_MAJOR} major")):
        x = _LABEL_W + value / scale * _PLOT_W
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 4}" stroke="{INK}" stroke-dasharray="4 3"/>'
        )
        body.append(f'<text x="{x + 3:.1f}" y="{top - 10}" fill="{INK}">{_e(words)}</text>')
    body.append(f'<line x1="{_LABEL_W}" y1="{top - 2}" x2="{_LABEL_W}" y2="{height - 4}" stroke="{INK}"/>')
    if not dists:
        body.append(f'<text x="{_LABEL_W + 6}" y="{top + 12}" fill="{INK}">no PSI: no training reference</text>')
    for n, d in enumerate(dists):
        y = top + n * group
        value = d.psi or 0.0
        w = min(value, scale) / scale * _PLOT_W
        label = f"{d.label} (protected)" if d.protected else d.label
        text = f"{_psi_text(d.psi)} {SHIFT_WORDS.get(d.shift or '', '')}"
        fill = f"url(#{uid}-hatch)" if d.shift == "major" else LIVE
        body.append(
            f'<text x="{_LABEL_W - 6}" y="{y + _BAR - 2}" text-anchor="end" fill="{INK}">{_e(_short(label))}</text>'
        )
        body.append(
            f'<rect x="{_LABEL_W}" y="{y}" width="{w:.1f}" height="{_BAR}" fill="{fill}" stroke="{INK}" '
            f'stroke-width="0.8"><title>{_e(f"{label}: PSI {text}")}</title></rect>'
        )
        body.append(f'<text x="{_LABEL_W + w + 4:.1f}" y="{y + _BAR - 1}" fill="{INK}">{_e(text)}</text>')
    description = "; ".join(f"{d.label}: PSI {_psi_text(d.psi)}, {SHIFT_WORDS.get(d.shift or '', '')}" for d in dists)
    return _svg(
        uid,
        width,
        height,
        f"Population stability index (dashed: {PSI_STABLE} and {PSI_MAJOR}; a major shift is hatched)",
        description or "no training reference",
        body,
    )


def decisions_per_day_svg(model_summary: ModelSummary) -> str:
    """Decisions per UTC day, stacked by outcome (the adverse outcome hatched)."""
    uid = _uid("days", model_summary.model, model_summary.version)
    days = model_summary.days
    width, height, left, bottom, top = 640, 200, 48, 36, 26
    plot_w, plot_h = width - left - 10, height - top - bottom
    peak = max((d.decisions for d in days), default=0) or 1
    slot = plot_w / max(1, len(days))
    adverse = model_summary.adverse_decision
    labels = sorted({o for d in days for o in d.outcomes}, key=lambda o: (o == adverse, o))
    legend_items = [(f"{o} (hatched)" if o == adverse else o, o == adverse) for o in labels]
    body = _legend_at(uid, left, 6, legend_items)
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>')
    body.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" fill="{INK}">{peak}</text>')
    body.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" fill="{INK}">0</text>')
    for n, day in enumerate(days):
        x, y = left + n * slot, float(top + plot_h)
        for outcome in labels:
            count = day.outcomes.get(outcome, 0)
            if not count:
                continue
            h = count / peak * plot_h
            y -= h
            fill = f"url(#{uid}-hatch)" if outcome == adverse else LIVE
            body.append(
                f'<rect x="{x + slot * 0.1:.1f}" y="{y:.1f}" width="{max(slot * 0.8, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{fill}" stroke="{INK}" stroke-width="0.5"><title>{_e(f"{day.day}: {count} {outcome}")}</title></rect>'
            )
    if days:
        body.append(f'<text x="{left}" y="{height - 10}" fill="{INK}">{_e(days[0].day)}</text>')
        if len(days) > 1:
            body.append(
                f'<text x="{left + plot_w}" y="{height - 10}" text-anchor="end" fill="{INK}">{_e(days[-1].day)}</text>'
            )
    description = "; ".join(
        f"{d.day}: {d.decisions} (" + ", ".join(f"{o} {c}" for o, c in sorted(d.outcomes.items())) + ")" for d in days
    )
    return _svg(
        uid,
        width,
        height,
        f"Decisions per day by outcome, {days[0].day} to {days[-1].day}" if days else "Decisions per day: none",
        description or "no decisions",
        body,
    )


def _legend_at(uid: str, x: int, y: int, items: Sequence[tuple[str, bool]]) -> list[str]:
    out = []
    for label, hatched in items:
        fill = f"url(#{uid}-hatch)" if hatched else LIVE
        out.append(f'<rect x="{x}" y="{y}" width="14" height="{_BAR}" fill="{fill}" stroke="{INK}"/>')
        out.append(f'<text x="{x + 18}" y="{y + _BAR}" fill="{INK}">{_e(label)}</text>')
        x += 30 + 7 * len(label)
    return out


# -- the report --------------------------------------------------------------------------------

_CSS = """
body{font-family:DejaVu Sans,Verdana,sans-serif;color:#1a1a1a;background:#fff;margin:2rem;max-width:72rem;line-height:1.4}
h1,h2,h3{line-height:1.2} table{border-collapse:collapse;margin:.5rem 0 1rem} caption{text-align:left;font-weight:bold}
th,td{border:1px solid #767676;padding:.2rem .5rem;text-align:left} td.num,th.num{text-align:right}
code{font-size:.9em} .note{border-left:4px solid #1a1a1a;padding:.3rem .8rem;background:#f2f2f2}
details{margin:.4rem 0} summary{cursor:pointer} figure{margin:.5rem 0 1rem}
"""


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    cells = "".join(f'<th scope="col"{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><caption>{_e(caption)}</caption><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _bins_table(d: Distribution) -> str:
    has_reference = d.reference_total is not None
    head = ["bin", "live", "live share"] + (["reference", "reference share"] if has_reference else [])
    rows = [
        [b.label + (f" ({b.code})" if b.code else ""), b.live, _percent(b.live_share)]
        + ([b.reference, _percent(b.reference_share)] if has_reference else [])
        for b in d.bins
    ]
    return _table(f"{d.label}: counts per bin", head, rows, numeric=(1, 2, 3, 4))


def _model_section(m: ModelSummary) -> str:
    out = [f'<section aria-labelledby="{_uid("h", m.model, m.version)}">']
    out.append(f'<h2 id="{_uid("h", m.model, m.version)}">{_e(m.model)} version {_e(m.version)}</h2>')
    out.append(
        f"<p>{m.decisions} decisions from {_e(m.first_decided_at or '-')} to {_e(m.last_decided_at or '-')}; "
        f"artifact sha256 <code>{_e(m.artifact_sha256)}</code>"
        + (f", manifest sha256 <code>{_e(m.manifest_sha256)}</code>" if m.manifest_sha256 else "")
        + ".</p>"
    )
    if m.reference is not None:
        out.append(
            f"<p>Training reference: {_e(m.reference.source)}; {m.reference.rows} rows scored through the "
            f"gateway's own scoring path.</p>"
        )
    else:
        out.append(f'<p class="note"><strong>No training reference</strong>: {_e(m.no_reference or "")}.</p>')
    for note in m.notes:
        out.append(f'<p class="note">Note: {_e(note)}</p>')
    out.append("<h3>Outcomes</h3>")
    out.append(
        _table(
            "Outcome rates",
            ["decision", "count", "rate", "adverse action"],
            [[o.decision, o.count, _percent(o.rate), "yes" if o.adverse else "no"] for o in m.outcomes],
            numeric=(1, 2),
        )
    )
    out.append(f"<figure>{decisions_per_day_svg(m)}</figure>")
    labels = sorted({o for d in m.days for o in d.outcomes})
    out.append(
        "<details><summary>Decisions per day (table)</summary>"
        + _table(
            "Decisions per UTC day",
            ["day", "decisions", *labels],
            [[d.day, d.decisions, *(d.outcomes.get(o, 0) for o in labels)] for d in m.days],
            numeric=tuple(range(1, len(labels) + 2)),
        )
        + "</details>"
    )
    out.append("<h3>Score distribution</h3>")
    if m.score_mean is not None:
        out.append(
            f"<p>Mean score {m.score_mean:.4f} (lowest {m.score_min:.4f}, highest {m.score_max:.4f})"
            + (f"; decision threshold {m.threshold:.4f}" if m.threshold is not None else "")
            + ".</p>"
        )
    if m.score is not None and m.score.psi is not None:
        out.append(
            f"<p><strong>Score PSI {_psi_text(m.score.psi)}: {_e(SHIFT_WORDS.get(m.score.shift or '', ''))}</strong>.</p>"
        )
    out.append(f"<figure>{score_distribution_svg(m)}</figure>")
    if m.score is not None:
        out.append(_bins_table(m.score))
    out.append("<h3>Population stability per attribute</h3>")
    unavailable = m.attributes_erased + m.attributes_sealed + m.attributes_unreadable
    out.append(
        f"<p>Attributes read from {m.attributes_read} of {m.decisions} decisions; unavailable for {unavailable}: "
        f"{m.attributes_erased} erased (attributes unavailable), {m.attributes_sealed} sealed without a key here, "
        f"{m.attributes_unreadable} unreadable. Erased decisions still count in the outcomes, the score and the "
        f"reasons (those are not sealed).</p>"
    )
    if m.attributes:
        out.append(f"<figure>{psi_svg(m)}</figure>")
        out.append(
            _table(
                "PSI per attribute",
                ["attribute", "PSI", "reading", "protected", "live", "reference"],
                [
                    [
                        f"{d.label} ({d.attribute})",
                        _psi_text(d.psi),
                        SHIFT_WORDS.get(d.shift or "", "n/a"),
                        "yes" if d.protected else "no",
                        d.live_total,
                        d.reference_total,
                    ]
                    for d in sorted(m.attributes, key=lambda d: -(d.psi or 0.0))
                ],
                numeric=(1, 4, 5),
            )
        )
        for d in m.attributes:
            out.append(
                f"<details><summary>{_e(d.label)}: PSI {_psi_text(d.psi)} "
                f"({_e(SHIFT_WORDS.get(d.shift or '', 'n/a'))})</summary>"
                f"<figure>{distribution_svg(d, m.model, m.version)}</figure>{_bins_table(d)}</details>"
            )
    else:
        out.append("<p>No per-attribute PSI: no training reference.</p>")
    out.append("<h3>Principal reasons</h3>")
    p = m.protected
    if p.attributes:
        why = "; ".join(f"{name}: {reason}" for name, reason in p.attributes.items())
        out.append(
            f"<p><strong>A protected attribute is among the principal reasons of {p.with_protected} of "
            f"{p.explained} explained decisions ({_percent(p.rate)}); {p.adverse_with_protected} of "
            f"{p.adverse_explained} adverse ones ({_percent(p.adverse_rate)}).</strong> Protected here: {_e(why)}.</p>"
        )
    else:
        out.append(
            "<p>No input of this version is protected (none is marked protected, and no version of the model "
            "withholds one of its inputs as protected); look at the reason rates below for proxies.</p>"
        )
    out.append(f"<figure>{reason_rates_svg(m)}</figure>")
    out.append(
        _table(
            "Principal reasons per attribute",
            ["attribute", "protected", "principal reason", "rate", "first reason", "in adverse", "adverse rate"],
            [
                [
                    f"{r.label} ({r.attribute})",
                    "yes" if r.protected else "no",
                    r.principal,
                    _percent(r.rate),
                    r.first,
                    r.adverse,
                    _percent(r.adverse_rate),
                ]
                for r in m.reasons
            ],
            numeric=(2, 3, 4, 5, 6),
        )
    )
    out.append("</section>")
    return "\n".join(out)


def render_report(summary: MonitorSummary) -> str:
    """The whole summary as one self-contained HTML page."""
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                "<title>Verdict monitoring report</title>",
                f"<style>{_CSS}</style></head><body><main>",
                "<h1>Verdict monitoring report</h1>",
                report_body(summary),
                "</main></body></html>",
            ]
        )
        + "\n"
    )


def report_body(summary: MonitorSummary) -> str:
    """The report without its page: what it was read from, how to read it, a section per model
    version (the console's monitoring page shows exactly this)."""
    out = [
        f"<p>Computed from the audit trail <code>{_e(summary.store)}</code>, read at {_e(summary.refreshed_at or '-')}: "
        f"{summary.decisions} decisions of {len(summary.models)} model version(s) on {len(summary.chains)} chain(s).</p>",
        '<div class="note"><p><strong>Reading the population stability index (PSI)</strong>: '
        f"sum over the bins of (live share - reference share) x ln(live share / reference share), each share "
        f"floored at {PSI_FLOOR:g}. Below {PSI_STABLE}: stable. {PSI_STABLE} to {PSI_MAJOR}: a moderate shift, "
        f"worth a look. Above {PSI_MAJOR}: a major shift, the model is scoring a population it was not built on. "
        "Score bins are the deciles of the training reference's scores; numeric attributes are binned at the "
        "deciles of their training values, categorical ones by category.</p>"
        "<p><strong>Principal reasons</strong> are those of an adverse-action notice: the at most four attributes "
        "that raised the risk most, ranked from each decision's logged contributions.</p></div>",
    ]
    for chain, problem in summary.problems.items():
        out.append(f'<p class="note">Chain {_e(chain)}: {_e(problem)}</p>')
    if not summary.models:
        out.append("<p>No decisions in this trail yet.</p>")
    out.extend(_model_section(m) for m in summary.models)
    return "\n".join(out)

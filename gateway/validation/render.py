"""The validation report for people: plain text for the terminal, one self-contained HTML page.

Why self-contained: the page is attached to model-risk reviews and opened
years later, possibly offline; it loads nothing (charts are inline SVG, text
kept as text so it can be searched and read aloud). Every status is spelled
out (PASS, FAIL, SKIPPED, NOT RUN) and protected attributes are marked by
word and hatching, so nothing depends on colour.
"""

from __future__ import annotations

import html
import io
import re
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verdict.gateway.model_files import VALIDATION_FILE, VALIDATION_HTML
from verdict.gateway.plotting import chart_session
from verdict.gateway.validation.report import (
    Check,
    OutputDistribution,
    ReasonFrequency,
    ValidationReport,
    encode_report,
)

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = ["STATUS_WORDS", "render_html", "render_text", "write_reports"]

STATUS_WORDS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIPPED", "failed-dependency": "NOT RUN"}
_COUNTED = {"failed-dependency": "not run"}
"""A status as counted in the summary line, where it differs from its name."""
_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "verdict-validation",
    "font.family": "DejaVu Sans",
    "font.size": 9,
}


def _counts(report: ValidationReport) -> str:
    """``15 passed, 1 failed, 1 skipped, 7 not run``: the words of the rows below it."""
    tally: dict[str, int] = {}
    for check in report.checks:
        tally[check.status] = tally.get(check.status, 0) + 1
    return ", ".join(f"{tally[s]} {_COUNTED.get(s, s)}" for s in STATUS_WORDS if s in tally)


def _verdict(report: ValidationReport) -> str:
    if report.passed:
        return "PASSED: the model can be served deterministically"
    failed = sum(1 for c in report.checks if c.status == "failed")
    return f"REFUSED: {failed} check(s) failed"


def _measured(check: Check) -> str:
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in check.measured.items())


def render_text(report: ValidationReport) -> str:
    """The report as plain text (what ``verdict models validate`` prints)."""
    width = max(len(c.name) for c in report.checks) if report.checks else 10
    lines = [
        f"Validation of {report.model}: {_verdict(report)}",
        f"  {len(report.checks)} checks: {_counts(report)}",
        f"  validated {report.validated_at} by {report.validator} on "
        + ", ".join(f"{k} {v}" for k, v in report.environment.items() if k in ("python", "torch", "machine", "cpu")),
        f"  manifest sha256 {report.manifest_sha256}",
        f"  artifact sha256 {report.artifact_sha256}",
        "",
    ]
    for check in report.checks:
        rule = f" [{check.rule}]" if check.rule and check.status == "failed" else ""
        lines.append(f"{STATUS_WORDS[check.status]:<8} {check.name:<{width}}  {check.detail}{rule}")
    if report.reason_frequency and report.protected_among_reasons:
        summary = report.protected_among_reasons
        lines += ["", f"Principal reasons over {summary.explained_rows} explained rows (informational):"]
        for item in report.reason_frequency:
            if item.principal:
                mark = " (protected)" if item.protected else ""
                lines.append(f"  {item.principal:>4} x  {item.label}{mark}")
        if summary.withheld:
            lines.append("  withheld from the model: " + ", ".join(f"{w.label} ({w.reason})" for w in summary.withheld))
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.45em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;width:100%} td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} .status{font-weight:700;white-space:nowrap} .num{text-align:right;font-variant-numeric:tabular-nums}
.banner{padding:.7em 1em;margin:1em 0;font-weight:700;border:3px solid #222} .refused{border-style:double}
.failed td{background:#fbeaea} .failed-dependency td{background:#f6f6f6} code,.measured{font-family:ui-monospace,monospace;font-size:.85em}
.muted{color:#555;font-size:.85em} figure{margin:1em 0} svg{max-width:100%;height:auto}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_html(report: ValidationReport) -> str:
    """One self-contained page: verdict, checks, output distribution, principal reasons."""
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Validation of {_e(report.model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Validation of <code>{_e(report.model)}</code></h1>",
        f"<p class='muted'>{_e(report.format)} &middot; validated {_e(report.validated_at)} by {_e(report.validator)}</p>",
        f"<div class='banner{'' if report.passed else ' refused'}' role='status'>{_e(_verdict(report))} "
        f"({_e(_counts(report))})</div>",
        "<h2>What was validated</h2><table>",
    ]
    identity = [
        ("Model", report.model),
        ("manifest.json sha256", report.manifest_sha256),
        ("model.pt2 sha256", report.artifact_sha256),
        ("background.json sha256", report.background_sha256),
        ("heldout.json sha256", report.heldout_sha256 or "none"),
        *((f"Environment: {k}", v) for k, v in report.environment.items()),
    ]
    out += [f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in identity]
    out.append("</table>")
    out.append(
        "<h2>Checks</h2><p class='muted'>PASS and SKIPPED (nothing to check) let the model through; FAIL and "
        "NOT RUN (a check it depends on failed) refuse it. The rule names what was broken.</p>"
    )
    out.append("<table><tr><th>status</th><th>check</th><th>detail</th><th>rule</th><th>measured</th></tr>")
    for check in report.checks:
        out.append(
            f"<tr class='{_e(check.status)}'><td class='status'>{STATUS_WORDS[check.status]}</td>"
            f"<td><code>{_e(check.name)}</code></td><td>{_e(check.detail)}</td><td><code>{_e(check.rule)}</code></td>"
            f"<td class='measured'>{_e(_measured(check))}</td></tr>"
        )
    out.append("</table>")
    if report.output_distribution and report.output_distribution.counts:
        dist = report.output_distribution
        out.append("<h2>Outputs on the probe rows</h2>")
        sources = ", ".join(f"{n} {source}" for source, n in dist.rows.items())
        out.append(
            f"<p>{dist.finite} finite outputs ({_e(sources)} rows), min {dist.minimum:.6g}, max {dist.maximum:.6g}; "
            f"the dashed line is the decision threshold.</p>"
        )
        out.append(_figure(_output_chart(report.model, dist), "Histogram of the model's outputs on the probe rows"))
    if report.protected_among_reasons is not None:
        summary = report.protected_among_reasons
        out.append("<h2>Principal reasons and protected attributes (informational)</h2>")
        protected = ", ".join(summary.protected_attributes) or "none"
        out.append(
            f"<p>Over {summary.explained_rows} explained rows ({summary.adverse_rows} at or above the decision "
            f"threshold): a protected attribute ({_e(protected)}) is among the principal reasons of "
            f"{summary.rows_with_protected_reason} rows ({summary.share:.0%}), {summary.adverse_rows_with_protected_reason} "
            f"of them at or above the threshold. Principal reasons are the attributes that raised the risk most "
            f"(at most four, as for an adverse-action notice).</p>"
        )
        if report.reason_frequency:
            out.append(_figure(_reason_chart(report.reason_frequency, summary.explained_rows), "Principal reasons"))
            out.append(
                "<table><tr><th>attribute</th><th>protected</th><th>among principal reasons</th>"
                "<th>first reason</th><th>share</th><th>mean |contribution|</th></tr>"
            )
            for item in report.reason_frequency:
                out.append(
                    f"<tr><td>{_e(item.label)} <code>{_e(item.attribute)}</code></td>"
                    f"<td>{'yes' if item.protected else 'no'}</td><td class='num'>{item.principal}</td>"
                    f"<td class='num'>{item.first}</td><td class='num'>{item.share:.0%}</td>"
                    f"<td class='num'>{item.mean_abs_contribution:.4g}</td></tr>"
                )
            out.append("</table>")
        if summary.withheld:
            out.append(
                "<h3>Withheld from the model</h3><table><tr><th>attribute</th><th>protected</th><th>why</th></tr>"
            )
            for w in summary.withheld:
                out.append(
                    f"<tr><td>{_e(w.label)} <code>{_e(w.name)}</code></td><td>{'yes' if w.protected else 'no'}</td>"
                    f"<td>{_e(w.reason)}</td></tr>"
                )
            out.append("</table>")
    out.append(
        "<p class='muted'>The machine-readable report is validation.json (canonical JSON, format "
        f"{_e(report.format)}); the registry keeps its own copy as evidence.</p></body></html>"
    )
    return "\n".join(out)


def _figure(svg: str, caption: str) -> str:
    return f"<figure role='img' aria-label='{_e(caption)}'>{svg}<figcaption class='muted'>{_e(caption)}</figcaption></figure>"


def _svg(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]  # inline: no XML prologue or DOCTYPE inside HTML
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)  # RDF boilerplate


def _output_chart(model: str, dist: OutputDistribution) -> str:
    with chart_session(_STYLE) as plt:
        figure, axes = plt.subplots(figsize=(7.0, 2.8))
        try:
            edges = dist.bin_edges
            axes.bar(
                edges[:-1],
                dist.counts,
                width=[b - a for a, b in pairwise(edges)],
                align="edge",
                color="#bbbbbb",
                edgecolor="#222222",
                linewidth=0.6,
            )
            if dist.threshold is not None and edges[0] <= dist.threshold <= edges[-1]:
                axes.axvline(
                    dist.threshold,
                    color="#222222",
                    linestyle="--",
                    linewidth=1.0,
                    label=f"threshold {dist.threshold:.4g}",
                )
                axes.legend(loc="best", frameon=False)
            axes.set_xlabel("model output")
            axes.set_ylabel("probe rows")
            axes.set_title(f"{model}: outputs on held-out, background and boundary rows", fontsize=9)
            return _svg(figure)
        finally:
            plt.close(figure)


def _reason_chart(frequency: list[ReasonFrequency], explained: int) -> str:
    shown = [f for f in frequency if f.principal] or frequency[:10]
    shown = list(reversed(shown[:20]))
    with chart_session(_STYLE) as plt:
        figure, axes = plt.subplots(figsize=(7.0, 0.9 + 0.28 * len(shown)))
        try:
            bars = axes.barh(
                [f"{f.label} (protected)" if f.protected else f.label for f in shown],
                [f.principal for f in shown],
                color=["#ffffff" if f.protected else "#bbbbbb" for f in shown],
                edgecolor="#222222",
                linewidth=0.6,
            )
            for bar, item in zip(bars, shown, strict=True):
                if item.protected:
                    bar.set_hatch("///")
            axes.set_xlabel(f"explained rows where it is a principal reason (of {explained})")
            axes.set_xlim(0, max(1, explained))
            axes.set_title("Principal reasons (hatched: protected attribute)", fontsize=9)
            return _svg(figure)
        finally:
            plt.close(figure)


def write_reports(directory: Path, report: ValidationReport) -> None:
    """validation.json (canonical) and validation.html into the model directory."""
    directory = Path(directory)
    (directory / VALIDATION_FILE).write_bytes(encode_report(report))
    (directory / VALIDATION_HTML).write_text(render_html(report), encoding="utf-8")

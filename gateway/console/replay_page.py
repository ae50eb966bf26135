"""Replays for examiners in a browser: the start form, and a finished report as a page.

Why the report is read from the signed envelope in the trail (not from the replay's
memory): the page then shows exactly what the examiner downloads and can verify.

Why a banded chart of delta against tolerance rather than one dot per decision: a
quarter's replay is tens of thousands of decisions; what an examiner needs to see is
how close to its tolerance the worst ones came, band by band, with the counts written
on the bars (readable without colour, and the same picture at 20 or 200,000).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from verdict.replay.report import ReplayReport
from verdict.replay.service import ReplayRequest, ReplayRequestError

__all__ = ["ReplayReportPage", "replay_form_request", "replay_report_page", "tolerance_bands_svg"]

MODES = ("request_id", "range", "model")
PROBLEM_ROWS = 50
"""Decisions that did not reproduce listed on the page; the signed report lists every one."""


def replay_form_request(form: dict[str, str]) -> ReplayRequest:
    """The console's start form as the API's request: one id, a time range, or a model version."""
    mode = form.get("mode", "request_id")
    purpose = form.get("purpose", "").strip() or None
    require_checkpoint = form.get("allow_pending") != "on"
    if mode not in MODES:
        raise ReplayRequestError("mode", "enum", f"mode must be one of {', '.join(MODES)}")
    if mode == "request_id":
        request_id = form.get("request_id", "").strip()
        if not request_id:
            raise ReplayRequestError("request_id", "required", "enter the request id of the decision to replay")
        return ReplayRequest(request_id=request_id, purpose=purpose, require_checkpoint=require_checkpoint)
    if mode == "range":
        since, until = form.get("since", "").strip() or None, form.get("until", "").strip() or None
        if since is None and until is None:
            raise ReplayRequestError("since", "required", "enter a start date, an end date, or both")
        return ReplayRequest(since=since, until=until, purpose=purpose, require_checkpoint=require_checkpoint)
    model = form.get("model", "").strip()
    if not model:
        raise ReplayRequestError("model", "required", "enter a model as NAME or NAME:VERSION")
    return ReplayRequest(model=model, purpose=purpose, require_checkpoint=require_checkpoint)


@dataclass(frozen=True)
class ReplayReportPage:
    report: ReplayReport
    summary_rows: list[tuple[str, str]]
    environments: list[dict[str, Any]]
    problems: Sequence[tuple[str, str, str]]  # request id, verdict, why (the first PROBLEM_ROWS)
    problem_count: int
    reasons: list[tuple[str, int]]  # cannot_replay reason code, decisions
    chart_svg: str
    signed_by: str


def replay_report_page(envelope: bytes) -> ReplayReportPage:
    signed = msgspec.json.decode(envelope)
    report = msgspec.convert(signed["report"], ReplayReport)
    s = report.summary
    rows = [
        ("Decisions", str(s.decisions)),
        ("Bit-identical", str(s.identical)),
        ("Within tolerance", str(s.within_tolerance)),
        ("Out of tolerance", str(s.out_of_tolerance)),
        ("Could not be replayed", str(s.cannot_replay)),
        ("Erased (personal data destroyed)", str(s.erased)),
        ("Largest score difference", f"{s.max_abs_score_delta:.3g}"),
        ("Decisions that changed", str(s.decisions_changed)),
        ("Reason sets that changed", str(s.reasons_changed)),
    ]
    environments = [
        {
            "sha256": env.sha256,
            "decisions": env.decisions,
            "status": env.status,
            "identical": env.identical,
            "summary": list(env.summary),
            "differences": [(d.path, _brief(d.recorded), _brief(d.current)) for d in env.differences[:40]],
            "more": max(0, len(env.differences) - 40),
        }
        for env in report.recorded_environments
    ]
    problems = [
        (d.request_id, d.verdict, "; ".join(d.why) or (d.reason or ""))
        for d in report.decisions
        if d.verdict not in ("identical", "within_tolerance", "erased")
    ]
    signature = signed.get("signature") or {}
    return ReplayReportPage(
        report=report,
        summary_rows=rows,
        environments=environments,
        problems=problems[:PROBLEM_ROWS],
        problem_count=len(problems),
        reasons=sorted(s.by_reason.items(), key=lambda item: -item[1]),
        chart_svg=tolerance_bands_svg(report),
        signed_by=str(signature.get("key_id", "")),
    )


def _brief(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


BANDS = (
    ("bit-identical", None),
    ("up to 1% of tolerance", 0.01),
    ("1% to 10%", 0.10),
    ("10% to 50%", 0.50),
    ("50% to 100%", 1.0),
    ("over tolerance", math.inf),
)


def _bands(report: ReplayReport) -> list[int]:
    counts = [0] * len(BANDS)
    for decision in report.decisions:
        check = decision.score
        if check is None:
            continue
        if check.verdict == "identical" or not check.delta:
            counts[0] += 1
            continue
        ratio = abs(check.delta) / check.bound if check.bound else math.inf
        for i, (_, upper) in enumerate(BANDS[1:], start=1):
            if upper is not None and ratio <= upper:
                counts[i] += 1
                break
    return counts


def tolerance_bands_svg(report: ReplayReport) -> str:
    """How far each replayed score landed from the logged one, as a share of its tolerance."""
    counts = _bands(report)
    row, top, label_w, bar_w, value_w = 26, 8, 190, 300, 80
    height = top + row * len(BANDS) + 8
    width = label_w + bar_w + value_w
    biggest = max(counts) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tolerance-bands" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
        "<title>Replayed scores: difference from the logged score as a share of the tolerance</title>",
    ]
    for i, ((label, upper), count) in enumerate(zip(BANDS, counts, strict=True)):
        y = top + i * row
        length = bar_w * count / biggest
        over = upper == math.inf
        fill = "#b3261e" if over else "#1f5f8b"
        pattern = ' stroke="#000" stroke-dasharray="4 2"' if over else ""
        parts.append(
            f"<g><title>{html.escape(label)}: {count} decision(s)</title>"
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" fill="{fill}"{pattern}/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 17}">{count}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)

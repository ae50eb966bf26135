"""A readable letter for a subject-access request: what was decided about a person, and why.

Why a letter and not the JSON: GDPR Art. 15 gives the data subject "meaningful
information about the logic involved" in an automated decision (Art. 15(1)(h),
Art. 22), and the EU AI Act Art. 86 a "clear and meaningful explanation". A
person is not an examiner: they get sentences, the values of theirs that
mattered, and a picture, while the receipt (request id, chain position,
record hash) is kept so anyone can check the letter against the signed audit
trail.

Why one content model (``_Letter``) rendered twice: the HTML page and the PDF
must say the same thing, so the wording is decided once, in plain text, and
each renderer only lays it out (and escapes it: every value here can come from
an applicant, a manifest or a caller).

Why no template engine, plotting library or external asset: the page must open
offline, years later, exactly as sent (inline CSS, no JavaScript, a string-built
SVG), and this module imports only the standard library and the lookup types.
The PDF is made only where a pure-Python PDF library (fpdf2, else reportlab) is
already installed; otherwise ``render_letter_pdf`` answers None.
"""

from __future__ import annotations

import html
import importlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from verdict.gateway.contribution_chart import (
    LOWERED_COLOUR,
    RAISED_COLOUR,
    Bar,
    bar_size,
    chart_bars,
    contribution_svg,
)
from verdict.gateway.lookups import ExplanationView, ReasonView, SubjectDecisionsView

__all__ = ["render_letter_html", "render_letter_pdf"]

_ADVERSE = frozenset({"decline", "declined", "deny", "denied", "reject", "rejected", "refuse", "refused"})
_OUTCOME_WORDS = {
    "approve": "approved",
    "approved": "approved",
    "accept": "accepted",
    "accepted": "accepted",
    "decline": "declined",
    "declined": "declined",
    "deny": "declined",
    "denied": "declined",
    "reject": "rejected",
    "rejected": "rejected",
    "refer": "referred to a member of staff for review",
    "referred": "referred to a member of staff for review",
}
_STATUS_WORDS = {
    "verified": (
        "verified: the record's signature is valid and the record is included in a signed checkpoint of the audit trail"
    ),
    "verified_pending_checkpoint": (
        "verified_pending_checkpoint: the record's signature is valid; it is not yet included in a signed "
        "checkpoint (it will be in the next one)"
    ),
    "signature_verified": (
        "signature_verified: the record is unaltered and signed by a key the trail's root certified; its "
        "inclusion in a signed checkpoint can be shown for it on request"
    ),
}
_QUOTED_HEADING = "The details of yours these reasons refer to"
_CHECK_HEADING = "How you can check this record"
_UNICODE_FONTS = (  # a TTF with the glyphs of the reason texts (dashes, umlauts, accents); core PDF fonts are Latin-1
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)


# --- the content, in plain text -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DecisionPart:
    title: str
    facts: list[tuple[str, str]]  # date, model, outcome, score
    reasons_heading: str
    reasons: list[str]
    reasons_checked: str | None  # whether the reasons are certified; None: not recorded (an older decision)
    quoted: list[tuple[str, str]]  # (label, the applicant's value) for each attribute a reason quotes
    bars: list[Bar]
    chart_note: str
    check: list[tuple[str, str]]


@dataclass(frozen=True)
class _Letter:
    title: str
    subject_id: str
    opening: list[str]
    legal_hold: str | None
    nothing_on_file: str | None
    decisions: list[_DecisionPart]
    footer: str


def _letter(view: SubjectDecisionsView, controller: str) -> _Letter:
    """Everything the letter says, decided once so that the HTML and the PDF cannot drift apart."""
    ordered = sorted(view.decisions, key=lambda d: (d.decided_at, d.request_id))
    return _Letter(
        title="What we decided about you, and why",
        subject_id=view.subject_id,
        opening=_opening(view, controller),
        legal_hold=_legal_hold_note(controller) if view.legal_hold else None,
        nothing_on_file=None if ordered else _nothing_on_file(view.subject_id),
        decisions=[_decision_part(d, n) for n, d in enumerate(ordered, start=1)],
        footer=f"Generated {_when(view.generated_at)} from the signed audit trail of {controller}.",
    )


def _opening(view: SubjectDecisionsView, controller: str) -> list[str]:
    """The request restated and the person's rights named: Art. 15 answers a question, so the letter says which."""
    count = len(view.decisions)
    found = f"{count} automated decision{'s' if count != 1 else ''}" if count else "no automated decisions"
    return [
        "You asked what decisions we made about you and why (GDPR Art. 15, Art. 22; EU AI Act Art. 86). "
        f"This letter is {controller}'s answer for the reference {view.subject_id}: we hold {found} about you.",
        "For each decision it says when it was made, by which model, what the outcome was, the main reasons in "
        "plain words, the details of yours those reasons refer to, and how you can check that this is exactly "
        "what was recorded at the time.",
        "If you disagree with a decision, you have the right to have a person review it, to give your point of "
        "view and to contest the decision (GDPR Art. 22(3)). You may also ask us to correct details that are "
        "wrong (GDPR Art. 16).",
    ]


def _legal_hold_note(controller: str) -> str:
    """Why a later erasure request will not be carried out straight away: the person should hear it now."""
    return (
        f"Legal hold: {controller} is under a legal obligation to keep your records for now (for example for a "
        "legal claim or a regulator's inquiry). While the hold applies they cannot be erased, even on request; "
        "they are kept sealed and are used for nothing else (GDPR Art. 17(3))."
    )


def _nothing_on_file(subject_id: str) -> str:
    """An empty answer must still be an answer: say that nothing is on file, and the two reasons why."""
    return (
        f"We have no decisions on file about you under the reference {subject_id}. Either we never made an "
        "automated decision about you, or your records were erased (for example after a request under "
        "GDPR Art. 17) and can no longer be read by anyone."
    )


def _decision_part(decision: ExplanationView, number: int) -> _DecisionPart:
    """One decision's section: facts, reasons, quoted values, chart bars and the receipt."""
    heading, reasons = _principal_reasons(decision)
    return _DecisionPart(
        title=f"Decision {number}: {_when(decision.decided_at)}",
        facts=[
            ("Date", _when(decision.decided_at)),
            ("Model", f"{decision.model.get('name', '?')} version {decision.model.get('version', '?')}"),
            ("Outcome", _outcome(decision)),
            ("Score", _score(decision)),
        ],
        reasons_heading=heading,
        reasons=[r.text for r in reasons],
        reasons_checked=_reasons_checked(decision) if reasons else None,
        quoted=_quoted_values(reasons),
        bars=chart_bars(decision),
        chart_note=_chart_note(decision),
        check=_check_rows(decision),
    )


def _is_adverse(decision: ExplanationView) -> bool:
    """Adverse when the lookup found principal reasons for denial (it only does for the model's adverse
    outcome), or when the outcome's own word says so (an adverse decision that was not explained)."""
    return bool(decision.principal_reasons_for_denial) or decision.decision.lower() in _ADVERSE


def _outcome(decision: ExplanationView) -> str:
    """The outcome in words; a model-specific word not known here is quoted as the model wrote it."""
    word = _OUTCOME_WORDS.get(decision.decision.lower())
    if word is None:
        return f"the model's outcome was “{decision.decision}”"
    return f"your application was {word}"


def _score(decision: ExplanationView) -> str:
    """The score with its meaning: in probability space it is the estimated chance of the adverse outcome."""
    if decision.output_space == "probability" and math.isfinite(decision.score):
        return (
            f"{decision.score:.3f}: the model's estimate of the chance of the adverse outcome (for example, that "
            f"the credit is not repaid as agreed) was {decision.score:.1%}"
        )
    return f"{decision.score:.4g} (the model's score)"


def _principal_reasons(decision: ExplanationView) -> tuple[str, list[ReasonView]]:
    """For an adverse decision the principal reasons for denial (ECOA / Regulation B style, at most four);
    otherwise the reasons logged with the decision."""
    if _is_adverse(decision) and decision.principal_reasons_for_denial:
        return "The principal reasons for this decision", list(decision.principal_reasons_for_denial)
    if decision.reasons:
        return "The main reasons for this decision", list(decision.reasons)
    return (
        f"No reasons per detail were recorded for this decision (explanation method: {decision.method}).",
        [],
    )


def _reasons_checked(decision: ExplanationView) -> str | None:
    """One plain sentence on how far the reasons can be relied on: a sampled calculation is never exact,
    but its reasons can be certified (gateway.fidelity), and the person should know which. A decision
    recorded before this was recorded says nothing rather than guess."""
    fidelity = decision.fidelity
    if fidelity is None:
        return None
    if fidelity.certified:
        return (
            "These reasons were checked against the exact calculation for this model's reference data, "
            "and it gives the same reasons (certified)."
        )
    return (
        "These reasons come from a sampled calculation that could not be certified within its budget: "
        "the exact calculation for this model's reference data could rank your details differently and "
        "give other reasons."
    )


def _quoted_values(reasons: list[ReasonView]) -> list[tuple[str, str]]:
    """Each detail of the applicant a reason relies on, once: the person can see, and correct, what was used."""
    seen: dict[str, tuple[str, str]] = {}
    for reason in reasons:
        seen.setdefault(reason.attribute, (reason.label or reason.attribute, _value_text(reason.value)))
    return list(seen.values())


def _value_text(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _chart_note(decision: ExplanationView) -> str:
    if not decision.contributions:
        return "No chart: this decision was not explained detail by detail."
    return (
        f"Each bar shows how much one of your details moved the score away from the model's starting point "
        f"of {decision.base_value:.3f}: bars to the right raised the risk, bars to the left lowered it."
    )


def _check_rows(decision: ExplanationView) -> list[tuple[str, str]]:
    """The receipt: what to quote to us, a regulator or an auditor to have this exact record verified."""
    v = decision.verification
    rows = [
        ("Request id", decision.request_id),
        ("Audit chain / position", f"{v.chain_id} / {v.seq}"),
        ("Record hash (SHA-256)", v.record_hash),
        ("Signing key", v.key_id),
        ("Model fingerprint (SHA-256)", decision.model.get("sha256", "")),
        ("Verification status", _STATUS_WORDS.get(v.status, v.status)),
    ]
    if v.inclusion is not None:
        signers = ", ".join(v.inclusion.signed_by) or "—"
        rows.append(
            (
                "Signed checkpoint",
                f"leaf {v.inclusion.leaf_index} of {v.inclusion.checkpoint_size}, root {v.inclusion.checkpoint_root}, "
                f"signed by {signers}",
            )
        )
    return rows


def _when(timestamp: str) -> str:
    """An ISO timestamp as a date people read (UTC); anything else is shown as recorded."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M UTC")  # ISO order: unambiguous in every country of the reader
    return moment.isoformat(sep=" ", timespec="minutes")


# --- HTML ---------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; color: #1a1a1a; max-width: 46rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; }
h2 { font-size: 1.2rem; border-top: 1px solid #ccc; padding-top: 1rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin-bottom: .25rem; }
.ref { color: #555; margin-top: 0; }
.note { border-left: 4px solid #b7791f; background: #fdf6e3; padding: .5rem .75rem; }
.empty { border-left: 4px solid #555; background: #f3f3f3; padding: .5rem .75rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { text-align: left; vertical-align: top; padding: .2rem .6rem .2rem 0; }
th { font-weight: 600; white-space: nowrap; }
.check { background: #f5f7fa; padding: .5rem .75rem; margin-top: 1rem; }
.check td { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: .85rem; word-break: break-all; }
figure { margin: .75rem 0; }
figcaption { font-size: .9rem; color: #444; }
footer { margin-top: 2.5rem; border-top: 1px solid #ccc; font-size: .85rem; color: #555; }
@media print { body { margin: 0; max-width: none; } h2 { break-before: auto; } .check { break-inside: avoid; } }
"""


def _e(text: object) -> str:
    """Escape for HTML text and attribute values (also valid XML, so the inline SVG parses on its own)."""
    return html.escape(str(text), quote=True)


def render_letter_html(view: SubjectDecisionsView, *, controller: str = "the lender") -> str:
    """The letter as one self-contained HTML5 page (inline CSS, inline SVG, no script, no external asset)."""
    letter = _letter(view, controller)
    body = [
        f"<h1>{_e(letter.title)}</h1>",
        f'<p class="ref">Reference: {_e(letter.subject_id)}</p>',
        *(f"<p>{_e(p)}</p>" for p in letter.opening),
    ]
    if letter.legal_hold:
        body.append(f'<p class="note legal-hold">{_e(letter.legal_hold)}</p>')
    if letter.nothing_on_file:
        body.append(f'<p class="empty">{_e(letter.nothing_on_file)}</p>')
    body.extend(_html_decision(part) for part in letter.decisions)
    body.append(f"<footer><p>{_e(letter.footer)}</p></footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(letter.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_decision(part: _DecisionPart) -> str:
    """One decision's section; the reasons come first because they are what the person asked for."""
    pieces = [
        f'<section class="decision">\n<h2>{_e(part.title)}</h2>',
        _html_table(part.facts, "facts"),
        f"<h3>{_e(part.reasons_heading)}</h3>",
    ]
    if part.reasons:
        pieces.append('<ol class="reasons">' + "".join(f"<li>{_e(t)}</li>" for t in part.reasons) + "</ol>")
    if part.reasons_checked:
        pieces.append(f'<p class="reasons-checked">{_e(part.reasons_checked)}</p>')
    if part.quoted:
        pieces.append(f"<h3>{_e(_QUOTED_HEADING)}</h3>")
        pieces.append(_html_table(part.quoted, "quoted", header=("Detail", "Your value")))
    pieces.append(_html_chart(part))
    pieces.append(f'<div class="check">\n<h3>{_e(_CHECK_HEADING)}</h3>')
    pieces.append(
        "<p>Quote these to us, a regulator or an auditor: they identify the signed record this letter was "
        "read from, and the record hash changes if a single character of it changes.</p>"
    )
    pieces.append(_html_table(part.check, "receipt"))
    pieces.append("</div>\n</section>")
    return "\n".join(pieces)


def _html_table(rows: list[tuple[str, str]], css_class: str, header: tuple[str, str] | None = None) -> str:
    head = f"<thead><tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr></thead>" if header else ""
    cells = "".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in rows)
    return f'<table class="{_e(css_class)}">{head}<tbody>{cells}</tbody></table>'


def _html_chart(part: _DecisionPart) -> str:
    if not part.bars:
        return f'<p class="chart-note">{_e(part.chart_note)}</p>'
    return f"<figure>\n{contribution_svg(part.bars)}\n<figcaption>{_e(part.chart_note)}</figcaption>\n</figure>"


# --- PDF ----------------------------------------------------------------------------------------------------------


def render_letter_pdf(view: SubjectDecisionsView, *, controller: str = "the lender") -> bytes | None:
    """The same letter as a PDF, or None when no pure-Python PDF library (fpdf2, else reportlab) is installed.

    Why optional: a PDF is a convenience for posting the letter; the HTML page is the letter. The gateway
    does not depend on a PDF library, so a caller offers the PDF only when this returns bytes.
    """
    fpdf = _optional("fpdf")
    if fpdf is not None and _major(getattr(fpdf, "__version__", "0")) >= 2:  # not the unmaintained PyFPDF 1.x
        return _pdf_with_fpdf2(_letter(view, controller), fpdf)
    if _optional("reportlab") is not None:
        return _pdf_with_reportlab(_letter(view, controller))
    return None


def _optional(module: str) -> ModuleType | None:
    """An optional package, or None. Loaded by name so the type checker needs neither package installed."""
    try:
        # lazy: PDF libraries are optional (no gateway dependency); only a PDF export looks for them
        return importlib.import_module(module)
    except ImportError:
        return None


def _major(version: object) -> int:
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _unicode_font() -> Path | None:
    """A system TTF with the glyphs of the reason texts; None: the core Latin-1 font with ``_latin1`` text."""
    return next((path for path in _UNICODE_FONTS if path.is_file()), None)


def _latin1(text: str) -> str:
    """Text the core PDF fonts can show: typographic marks spelled plainly, anything else outside Latin-1 as '?'."""
    return text.translate(_PLAIN_MARKS).encode("latin-1", "replace").decode("latin-1")


_PLAIN_MARKS = str.maketrans({"—": "-", "–": "-", "−": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "..."})


def _pdf_lines(letter: _Letter) -> list[tuple[str, str]]:
    """The letter as (style, text) lines in reading order; a "chart" line is followed by that decision's bars."""
    lines = [("title", letter.title), ("p", f"Reference: {letter.subject_id}")]
    lines += [("p", p) for p in letter.opening]
    lines += [("p", text) for text in (letter.legal_hold, letter.nothing_on_file) if text]
    for part in letter.decisions:
        lines.append(("h2", part.title))
        lines += [("p", f"{k}: {v}") for k, v in part.facts]
        lines.append(("h3", part.reasons_heading))
        lines += [("item", f"{n}. {t}") for n, t in enumerate(part.reasons, start=1)]
        if part.reasons_checked:
            lines.append(("p", part.reasons_checked))
        if part.quoted:
            lines.append(("h3", _QUOTED_HEADING))
            lines += [("item", f"{k}: {v}") for k, v in part.quoted]
        lines.append(("chart", part.chart_note))
        lines.append(("h3", _CHECK_HEADING))
        lines += [("mono", f"{k}: {v}") for k, v in part.check]
    lines.append(("p", letter.footer))
    return lines


_PDF_SIZES = {"title": 16, "h2": 13, "h3": 11, "p": 10, "item": 10, "mono": 8, "chart": 9}


def _pdf_with_fpdf2(letter: _Letter, fpdf: ModuleType) -> bytes:
    """Lay the lines out with fpdf2; each decision's chart as filled bars after its note."""
    pdf = fpdf.FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_creator("Verdict subject-access letter")
    font = _unicode_font()
    if font:
        pdf.add_font("Letter", fname=str(font))
    family, clean = ("Letter", str) if font else ("Helvetica", _latin1)
    pdf.add_page()
    parts = iter(letter.decisions)
    for style, text in _pdf_lines(letter):
        pdf.set_font(family, size=_PDF_SIZES[style])
        if style in ("title", "h2", "h3"):
            pdf.ln(2)
        wrap = "CHAR" if style == "mono" else "WORD"  # a 64-digit hash is one "word" wider than the page
        pdf.multi_cell(0, _PDF_SIZES[style] * 0.5, clean(text), new_x="LMARGIN", new_y="NEXT", wrapmode=wrap, align="L")
        if style == "chart":
            _fpdf2_bars(pdf, next(parts).bars, family, clean)
    return bytes(pdf.output())


def _fpdf2_bars(pdf: Any, bars: list[Bar], family: str, clean: Callable[[str], str]) -> None:
    label_w, bar_w, row = 60.0, 90.0, 5.0
    scale = (bar_w / 2) / (max((bar_size(b.value) for b in bars), default=0.0) or 1.0)
    axis = pdf.l_margin + label_w + bar_w / 2
    pdf.set_font(family, size=8)
    for bar in bars:
        y = pdf.get_y()
        pdf.cell(label_w, row, clean(bar.attribute[:40]))
        length = bar_size(bar.value) * scale
        if length > 0:
            pdf.set_fill_color(*_rgb(RAISED_COLOUR if bar.value > 0 else LOWERED_COLOUR))
            pdf.rect(axis if bar.value > 0 else axis - length, y + 1, length, row - 2, style="F")
        pdf.set_x(pdf.l_margin + label_w + bar_w + 2)
        pdf.cell(20, row, f"{bar.value:+.3f}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _reportlab(submodule: str) -> ModuleType:
    """A part of reportlab, loaded by name like ``_optional`` (only once ``render_letter_pdf`` found it installed)."""
    # lazy: reportlab is optional (no gateway dependency); only a PDF export without fpdf2 uses it
    return importlib.import_module(f"reportlab.{submodule}")


def _pdf_with_reportlab(letter: _Letter) -> bytes:
    """Lay the lines out with reportlab's platypus (its paragraphs read markup, so every text is escaped)."""
    platypus, styles_module = _reportlab("platypus"), _reportlab("lib.styles")
    font = _unicode_font()
    if font:
        ttfonts = _reportlab("pdfbase.ttfonts")
        _reportlab("pdfbase.pdfmetrics").registerFont(ttfonts.TTFont("Letter", str(font)))
    family, clean = ("Letter", str) if font else ("Helvetica", _latin1)
    styles = {
        name: styles_module.ParagraphStyle(
            name,
            fontName=family,
            fontSize=size,
            leading=size * 1.3,
            spaceBefore=size * 0.3,
            wordWrap="CJK" if name == "mono" else None,  # breaks anywhere: a 64-digit hash wraps, not overflows
        )
        for name, size in _PDF_SIZES.items()
    }
    parts = iter(letter.decisions)
    story: list[Any] = []
    for style, text in _pdf_lines(letter):
        story.append(platypus.Paragraph(html.escape(clean(text), quote=False), styles[style]))
        if style == "chart" and (bars := next(parts).bars):
            story += [_reportlab_bars(bars, family, clean), platypus.Spacer(1, 6)]
    out = io.BytesIO()
    document = platypus.SimpleDocTemplate(out, title=clean(letter.title), creator="Verdict subject-access letter")
    document.build(story)
    return out.getvalue()


def _reportlab_bars(bars: list[Bar], family: str, clean: Callable[[str], str]) -> Any:
    shapes, colors = _reportlab("graphics.shapes"), _reportlab("lib.colors")
    label_w, bar_w, row = 170.0, 250.0, 14.0
    scale = (bar_w / 2) / (max((bar_size(b.value) for b in bars), default=0.0) or 1.0)
    axis = label_w + bar_w / 2
    drawing = shapes.Drawing(label_w + bar_w + 60, row * len(bars))
    for i, bar in enumerate(bars):
        y, length = row * (len(bars) - 1 - i), bar_size(bar.value) * scale
        fill = colors.HexColor(RAISED_COLOUR if bar.value > 0 else LOWERED_COLOUR)
        name = clean(bar.attribute[:40])
        drawing.add(shapes.String(label_w - 6, y + 3, name, fontName=family, fontSize=8, textAnchor="end"))
        x = axis if bar.value > 0 else axis - length
        drawing.add(shapes.Rect(x, y + 2, length, row - 4, fillColor=fill, strokeWidth=0))
        drawing.add(shapes.String(label_w + bar_w + 4, y + 3, f"{bar.value:+.3f}", fontName=family, fontSize=8))
    return drawing

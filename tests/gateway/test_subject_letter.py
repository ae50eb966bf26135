"""The subject-access letter: what a person reads about the decisions on file about them.

Built from the lookup structs directly (no store, no model): the letter is a pure rendering of a
``SubjectDecisionsView``, so what matters here is that it says everything the view holds, escapes
every value (reason texts, labels and the subject id can come from a manifest or a caller), stays
one self-contained page, and draws a chart whose bars match the contributions.
"""

from __future__ import annotations

import html
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import msgspec
import pytest

from verdict.gateway.contribution_chart import LOWERED_COLOUR, MAX_BARS, RAISED_COLOUR
from verdict.gateway.fidelity import Fidelity
from verdict.gateway.lookups import (
    ExplanationView,
    InclusionView,
    ReasonView,
    SubjectDecisionsView,
    Verification,
)
from verdict.gateway.subject_letter import render_letter_html, render_letter_pdf

SVG = "{http://www.w3.org/2000/svg}"
SUBJECT = "Kundin Jürgen-Müller <b>&</b> 42"
HOSTILE_VALUE = 'checking balance < 0 DM & "überzogen" <script>alert(1)</script>'
GENERATED_AT = "2026-11-30T09:00:00.000000Z"


def reason(attribute: str, label: str, value: str, direction: str) -> ReasonView:
    """A reason as the default manifest template words it (gateway.reasons.DEFAULT_REASON_TEMPLATES)."""
    effect = "increased risk" if direction == "increased_risk" else "decreased risk"
    return ReasonView(attribute, label, value, direction, f"{label}: {value} — {effect}")


def verification(seq: int, record_hash: str, *, included: bool) -> Verification:
    inclusion = None
    if included:
        inclusion = InclusionView(
            checkpoint_size=128,
            checkpoint_root="5d1c0e9a" * 8,
            leaf_index=seq,
            proof=["a3" * 32, "b4" * 32],
            checkpoint_note="verdict.example/log\n128\nXRwOmk=\n",
            signed_by=["gateway-2026", "witness-eu-1"],
        )
    return Verification(
        record_hash=record_hash,
        signature="c2lnbmF0dXJl",
        signature_valid=True,
        key_id="gateway-2026",
        chain_id="gateway-0",
        seq=seq,
        inclusion=inclusion,
        status="verified" if included else "verified_pending_checkpoint",
    )


DECLINE_CONTRIBUTIONS = {  # 12 attributes: more than the chart shows
    "checking_account": 0.142,
    "duration_months": 0.097,
    "credit_history": 0.061,
    "savings": 0.044,
    "credit_amount": -0.038,
    "age_years": 0.021,
    "employment_since": -0.019,
    "purpose": 0.012,
    "housing": -0.009,
    "property": 0.006,
    "job": -0.003,
    "telephone": 0.0,
}
APPROVE_CONTRIBUTIONS = {
    "checking_account": -0.121,
    "duration_months": -0.044,
    "credit_history": -0.030,
    "credit_amount": 0.015,
    "age_years": -0.008,
}


@pytest.fixture
def declined() -> ExplanationView:
    principal = [
        reason("checking_account", "Status of existing checking account", HOSTILE_VALUE, "increased_risk"),
        reason("duration_months", "Duration of credit", "48 months", "increased_risk"),
        reason("credit_history", "Credit history", "critical account / other credits elsewhere", "increased_risk"),
        reason("savings", "Savings account/bonds", "savings below 100 DM", "increased_risk"),
    ]
    return ExplanationView(
        request_id="loan-2026-000123",
        subject_id=SUBJECT,
        decided_at="2026-11-22T08:19:17.187993Z",
        model={"name": "german-credit", "version": "2.0.0", "sha256": "e3b0c442" * 8},
        decision="decline",
        score=0.632,
        output_space="probability",
        base_value=0.3,
        contributions=DECLINE_CONTRIBUTIONS,
        reasons=[*principal[:3], reason("credit_amount", "Credit amount", "1295 DM", "decreased_risk")],
        principal_reasons_for_denial=principal,
        method="kernel_shap",
        verification=verification(12, "9b1c" * 16, included=True),
    )


@pytest.fixture
def approved() -> ExplanationView:
    return ExplanationView(
        request_id="loan-2026-000007",
        subject_id=SUBJECT,
        decided_at="2026-03-05T14:02:11.000001Z",
        model={"name": "german-credit", "version": "1.4.1", "sha256": "7f83b165" * 8},
        decision="approve",
        score=0.118,
        output_space="probability",
        base_value=0.3,
        contributions=APPROVE_CONTRIBUTIONS,
        reasons=[
            reason("checking_account", "Status of existing checking account", "no checking account", "decreased_risk"),
            reason("duration_months", "Duration of credit", "12 months", "decreased_risk"),
        ],
        principal_reasons_for_denial=[],
        method="kernel_shap",
        verification=verification(3, "44aa" * 16, included=False),
    )


def view_of(*decisions: ExplanationView, legal_hold: bool = False) -> SubjectDecisionsView:
    return SubjectDecisionsView(SUBJECT, list(decisions), legal_hold, GENERATED_AT)


class _Structure(HTMLParser):
    """Checks that every opened element is closed in order, and collects the tags seen."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "rect", "line"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def structure(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.open == []
    return parser


def svgs(page: str) -> list[ET.Element]:
    """Each inline chart, parsed on its own as XML (the SVG must stand alone as an .svg file)."""
    return [ET.fromstring(fragment) for fragment in re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)]


def bars(chart: ET.Element) -> list[ET.Element]:
    return [r for r in chart.iter(f"{SVG}rect") if "bar" in (r.get("class") or "").split()]


def bar_labels(chart: ET.Element) -> list[str]:
    return [g.findall(f"{SVG}text")[0].text or "" for g in chart.iter(f"{SVG}g")]


def test_the_letter_says_every_decision_with_its_receipt_and_reasons(declined, approved):
    page = render_letter_html(view_of(declined, approved))
    for decision in (declined, approved):
        assert decision.request_id in page
        assert decision.verification.record_hash in page
        assert decision.model["version"] in page
    for text in (r.text for r in [*declined.principal_reasons_for_denial, *approved.reasons]):
        assert html.escape(text) in page
    assert "GDPR Art. 15" in page and "EU AI Act Art. 86" in page
    assert "your application was declined" in page and "your application was approved" in page
    assert "63.2%" in page  # the score in words, as a chance of the adverse outcome
    assert "The principal reasons for this decision" in page  # adverse: the ECOA-style principal reasons
    assert "verified_pending_checkpoint" in page  # the approval is not yet in a checkpoint
    assert "leaf 12 of 128" in page  # the decline is
    assert GENERATED_AT[:10] in page  # footer


def test_decisions_are_in_date_order_whatever_the_view_order(declined, approved):
    page = render_letter_html(view_of(declined, approved))
    assert page.index(approved.request_id) < page.index(declined.request_id)  # March before November
    assert page.count("<h2>") == 2


def test_every_value_is_escaped(declined):
    page = render_letter_html(view_of(declined), controller="Bank & <Partner> GmbH")
    assert "<script" not in page  # neither injected nor the page's own: the letter runs no code
    assert "<b>" not in page
    assert html.escape(SUBJECT) in page
    assert html.escape(HOSTILE_VALUE) in page  # in the reason text and in the quoted-values table
    assert "Bank &amp; &lt;Partner&gt; GmbH" in page
    assert "Jürgen-Müller" in page  # non-ASCII kept as text (the page is UTF-8)
    structure(page)


def test_the_quoted_values_are_the_applicants_values_in_the_reasons(declined):
    page = render_letter_html(view_of(declined))
    table = re.search(r'<table class="quoted">.*?</table>', page, flags=re.DOTALL)
    assert table is not None
    for r in declined.principal_reasons_for_denial:
        assert f'<th scope="row">{html.escape(r.label)}</th><td>{html.escape(r.value)}</td>' in table.group(0)


def test_the_page_is_self_contained(declined, approved):
    parsed = structure(render_letter_html(view_of(declined, approved)))
    tags = {tag for tag, _ in parsed.tags}
    assert {"html", "head", "body", "style", "svg"} <= tags
    assert not tags & {"script", "link", "img", "iframe", "object"}
    attributes = {name for _, attrs in parsed.tags for name in attrs}
    assert not attributes & {"src", "href"}
    assert not any(name.startswith("on") for name in attributes)  # no event handlers either


def test_one_chart_per_decision_with_the_largest_contributions_first(declined, approved):
    page = render_letter_html(view_of(declined, approved))
    charts = svgs(page)
    assert len(charts) == 2
    for chart, decision in zip(charts, (approved, declined), strict=True):  # date order
        drawn = bars(chart)
        assert len(drawn) == min(MAX_BARS, len(decision.contributions))
        expected = sorted(decision.contributions, key=lambda name: -abs(decision.contributions[name]))
        assert bar_labels(chart) == expected[:MAX_BARS]
        for rect, name in zip(drawn, expected, strict=False):
            value = decision.contributions[name]
            assert rect.get("fill") == (RAISED_COLOUR if value > 0 else LOWERED_COLOUR)
            assert float(rect.get("width") or "nan") >= 0


def test_bar_lengths_follow_the_contributions(declined):
    (chart,) = svgs(render_letter_html(view_of(declined)))
    widths = [float(r.get("width") or "nan") for r in bars(chart)]
    assert widths == sorted(widths, reverse=True)
    ratio = abs(DECLINE_CONTRIBUTIONS["duration_months"] / DECLINE_CONTRIBUTIONS["checking_account"])
    assert widths[1] / widths[0] == pytest.approx(ratio, abs=0.01)


def test_a_decision_without_contributions_has_no_chart(approved):
    unexplained = ExplanationView(
        **{f: getattr(approved, f) for f in approved.__struct_fields__ if f not in ("contributions", "reasons")},
        contributions={},
        reasons=[],
    )
    page = render_letter_html(view_of(unexplained))
    assert svgs(page) == []
    assert "No chart" in page
    assert "No reasons per detail were recorded" in page


CERTIFIED_SENTENCE = "checked against the exact calculation for this model's reference data"
UNCERTIFIED_SENTENCE = "come from a sampled calculation that could not be certified within its budget"


def test_the_letter_says_whether_the_reasons_are_certified_right_after_them(declined, approved):
    bounds = dict.fromkeys(DECLINE_CONTRIBUTIONS, 0.004)
    certified = msgspec.structs.replace(declined, fidelity=Fidelity(True, 7297, 4, bounds, 3.0))
    sampled = msgspec.structs.replace(approved, fidelity=Fidelity(False, 913, 1))
    page = render_letter_html(view_of(certified, sampled))
    sampled_part, certified_part = page.split('<section class="decision">')[1:]  # date order
    for part, sentence, other in (
        (certified_part, CERTIFIED_SENTENCE, UNCERTIFIED_SENTENCE),
        (sampled_part, UNCERTIFIED_SENTENCE, CERTIFIED_SENTENCE),
    ):
        assert html.escape(sentence) in part and html.escape(other) not in part
        assert part.index('<ol class="reasons">') < part.index("reasons-checked") < part.index("<figure>")
    structure(page)


def test_an_older_decision_without_fidelity_says_nothing_about_it(declined, approved):
    assert declined.fidelity is None and approved.fidelity is None  # as a record from before fidelity reads
    page = render_letter_html(view_of(declined, approved))
    assert "reasons-checked" not in page
    assert html.escape(CERTIFIED_SENTENCE) not in page and html.escape(UNCERTIFIED_SENTENCE) not in page


def test_nothing_on_file_is_said_plainly():
    page = render_letter_html(SubjectDecisionsView("erased-subject-ß", [], False, GENERATED_AT))
    assert "We have no decisions on file about you under the reference erased-subject-ß" in page
    assert "never made an automated decision about you, or your records were erased" in page
    assert svgs(page) == [] and "<h2>" not in page
    structure(page)


def test_a_legal_hold_is_mentioned_only_when_there_is_one(declined):
    held = render_letter_html(view_of(declined, legal_hold=True))
    assert "Legal hold:" in held and "cannot be erased" in held
    assert "Legal hold" not in render_letter_html(view_of(declined))
    assert "Legal hold:" in render_letter_html(SubjectDecisionsView(SUBJECT, [], True, GENERATED_AT))


def test_the_same_view_renders_the_same_page(declined, approved):
    assert render_letter_html(view_of(declined, approved)) == render_letter_html(view_of(approved, declined))


def test_pdf_is_a_pdf_or_none_when_no_library_is_installed(declined, approved):
    pdf = render_letter_pdf(view_of(declined, approved), controller="Bank & <Partner> GmbH")
    assert pdf is None or pdf.startswith(b"%PDF")


def test_pdf_is_none_without_a_pdf_library(monkeypatch, declined):
    monkeypatch.setitem(sys.modules, "fpdf", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "reportlab", None)
    assert render_letter_pdf(view_of(declined)) is None

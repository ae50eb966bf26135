"""Replay reports: JSON a machine can check, HTML an examiner can read.

JSON (``verdict.replay-report/v1``): the selection, the tolerance each model
was registered with and the one applied, the environment the replay ran in
(its full fingerprint) and how each recorded environment differs from it,
summary counts per verdict, and one entry per decision with the verdict of its
score, base value, every contribution (counts for all, numbers for each one
that is not bit-identical), the explanation's fidelity where the record has one
(its exact fields, its error bounds like contributions), decision label and reasons.

Signature: the report is stored inside an envelope
``{"format": "verdict.signed-replay-report/v1", "report": {...}, "signature": {...}}``
whose signature is Ed25519 over ``b"verdict.replay.report.v1\\x00" || JCS(report)``
(RFC 8785 canonical JSON of the report object) with the key store's current
key; the key is published in the trail (``keys/``), so anyone can check a
report with the store alone (:func:`verify_signed_report`). The envelope is
stored content-addressed at ``evidence/sha256/<hex>`` and referenced by an
``evidence`` record on the replay chain, after one ``access`` record
(action ``replay``) per replayed decision: who replayed whose decision is
itself on the trail.

HTML: one self-contained file (inline CSS, the chart as an embedded PNG),
also stored as evidence and referenced from the signed JSON.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import html as _html
import io
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from cryptography.exceptions import InvalidSignature

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import ChainWriter
from verdict.audit.records import AccessBody, EvidenceBody, utc_now
from verdict.audit.signing import FileKeyStore, KeyDocumentError, check_key_document, decode_key_document
from verdict.audit.stores import ObjectExists, ObjectMissing, WormStore, open_store
from verdict.audit.trust import local_root
from verdict.gateway.plotting import chart_session
from verdict.replay import environment as envs
from verdict.replay.verdicts import CANNOT_REPLAY_REASONS, VALUE_VERDICTS, VERDICTS, DecisionResult

__all__ = [
    "REPORT_FORMAT",
    "SIGNATURE_DOMAIN",
    "SIGNED_FORMAT",
    "ReplayReport",
    "StoredReport",
    "Summary",
    "build_report",
    "default_actor",
    "finish",
    "render_html",
    "score_chart_png",
    "sign_report",
    "verify_signed_report",
]

REPORT_FORMAT = "verdict.replay-report/v1"
SIGNED_FORMAT = "verdict.signed-replay-report/v1"
SIGNATURE_DOMAIN = b"verdict.replay.report.v1\x00"
_ACCESS_BATCH = 1000


def default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "cli"


class ReplayOutcome(msgspec.Struct):
    """What a finished replay produced (the report itself is in ``report``)."""

    replay_id: str
    report: Any
    """replay.report.ReplayReport"""
    results: list[DecisionResult]
    stored: Any = None
    """replay.report.StoredReport when recorded in the trail"""
    html: str = ""
    exit_code: int = 0
    html_path: str | None = None
    json_path: str | None = None


class Summary(msgspec.Struct):
    decisions: int
    identical: int = 0
    within_tolerance: int = 0
    out_of_tolerance: int = 0
    cannot_replay: int = 0
    erased: int = 0
    """Decisions whose personal data was erased before the replay (spec §3a)."""
    passed: bool = False
    """True when every decision is identical, within tolerance or erased (nothing left to judge)."""
    by_reason: dict[str, int] = {}
    """cannot_replay reason codes"""
    score: dict[str, int] = {}
    base_value: dict[str, int] = {}
    contributions: dict[str, int] = {}
    """verdict counts over every contribution of every replayed decision"""
    fidelity: dict[str, int] = {}
    """verdict counts over the decisions whose record has an explanation fidelity"""
    decisions_changed: int = 0
    reasons_changed: int = 0
    max_abs_score_delta: float = 0.0


class HtmlRef(msgspec.Struct, frozen=True):
    object_key: str
    sha256: str


class ReplayEnvironment(msgspec.Struct, omit_defaults=True):
    mode: str
    """"current": this installation; "rebuilt": a fresh virtualenv from the recorded pins (see ``rebuilt``)."""
    fingerprints: dict[str, Any] = {}
    """sha256 -> the full fingerprint of the environment(s) the replay ran in"""
    rebuilt: list[dict[str, Any]] = []
    overrides: dict[str, int] = {}
    """Counterfactual runtime settings forced instead of the recorded ones."""


class Timing(msgspec.Struct, omit_defaults=True):
    elapsed_s: float
    decisions_per_s: float
    workers: int
    replayed_now: int
    resumed: int = 0


class ReplayReport(msgspec.Struct, omit_defaults=True):
    format: str
    replay_id: str
    created_at: str
    started_at: str
    store: str
    actor: str
    selection: dict[str, Any]
    selection_text: str
    scope: str
    require_checkpoint: bool
    tolerances: list[Any]
    environment: ReplayEnvironment
    recorded_environments: list[envs.RecordedEnvironment]
    summary: Summary
    timing: Timing
    decisions: list[DecisionResult]
    purpose: str | None = None
    counterfactual: bool = False
    notes: list[str] = []
    html: HtmlRef | None = None


class StoredReport(msgspec.Struct, frozen=True):
    object_key: str
    sha256: str
    key_id: str
    html_key: str | None
    replay_chain: str
    evidence_seq: int | None
    access_records: int


# --- building ---------------------------------------------------------------------------------


def summarize(results: list[DecisionResult]) -> Summary:
    summary = Summary(decisions=len(results))
    by_reason: dict[str, int] = {}
    score: dict[str, int] = {}
    base: dict[str, int] = {}
    contributions: dict[str, int] = {}
    fidelity: dict[str, int] = {}
    for r in results:
        setattr(summary, r.verdict, getattr(summary, r.verdict) + 1)
        if r.reason:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
        if r.score is not None:
            score[r.score.verdict] = score.get(r.score.verdict, 0) + 1
            if r.score.delta is not None:
                summary.max_abs_score_delta = max(summary.max_abs_score_delta, abs(r.score.delta))
        if r.base_value is not None:
            base[r.base_value.verdict] = base.get(r.base_value.verdict, 0) + 1
        if r.contributions is not None:
            for k, v in r.contributions.counts.items():
                contributions[k] = contributions.get(k, 0) + v
        if r.fidelity is not None:
            fidelity[r.fidelity.verdict] = fidelity.get(r.fidelity.verdict, 0) + 1
        if r.decision is not None:
            summary.decisions_changed += r.decision.logged != r.decision.replayed
            summary.reasons_changed += r.decision.reasons_match is False
    summary.by_reason = dict(sorted(by_reason.items()))
    summary.score, summary.base_value, summary.contributions, summary.fidelity = (
        dict(sorted(d.items())) for d in (score, base, contributions, fidelity)
    )
    summary.passed = summary.out_of_tolerance == 0 and summary.cannot_replay == 0 and len(results) > 0
    return summary


def build_report(
    *,
    replay_id: str,
    job: Any,
    results: list[DecisionResult],
    notes: list[str],
    tolerances: list[Any],
    recorded_environments: list[envs.RecordedEnvironment],
    replay_fingerprints: dict[str, bytes],
    started_at: str,
    elapsed_s: float,
    workers: int,
    resumed: int,
    replayed_now: int,
    rebuilt: list[dict[str, Any]] | None,
    store: WormStore | None = None,
) -> ReplayReport:
    store = store or open_store(job.store_url)
    fingerprints = {sha: msgspec.json.decode(data) for sha, data in sorted(replay_fingerprints.items())}
    used: dict[str, dict[str, int]] = {}
    for r in results:
        if r.environment_sha256 and r.replay_environment_sha256:
            counts = used.setdefault(r.environment_sha256, {})
            counts[r.replay_environment_sha256] = counts.get(r.replay_environment_sha256, 0) + 1
    for entry in recorded_environments:
        if entry.status != "ok":
            continue
        mine = used.get(entry.sha256)
        if not mine:
            entry.summary = ["no decision of this environment was re-scored"]
            continue
        replay_sha = max(mine, key=mine.__getitem__)
        entry.identical = replay_sha == entry.sha256
        recorded = envs.fetch(store, entry.sha256)
        entry.differences = envs.diff(recorded, fingerprints.get(replay_sha, {}))
        entry.summary = envs.summarize(entry.differences)
        if len(mine) > 1:
            entry.summary.append(
                f"its decisions were replayed in {len(mine)} environments; differences shown against {replay_sha[:16]}..."
            )
    overrides = job.options.overrides()
    summary = summarize(results)
    return ReplayReport(
        format=REPORT_FORMAT,
        replay_id=replay_id,
        created_at=utc_now(),
        started_at=started_at,
        store=job.store_url,
        actor=job.actor,
        purpose=job.purpose,
        selection=msgspec.to_builtins(job.selection),
        selection_text=job.selection.describe(),
        scope=job.options.scope,
        require_checkpoint=job.require_checkpoint,
        tolerances=[msgspec.to_builtins(t) for t in tolerances],
        environment=ReplayEnvironment(
            mode=_mode(rebuilt), fingerprints=fingerprints, rebuilt=rebuilt or [], overrides=overrides
        ),
        recorded_environments=recorded_environments,
        summary=summary,
        timing=Timing(
            elapsed_s=round(elapsed_s, 3),
            decisions_per_s=round(replayed_now / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            workers=workers,
            replayed_now=replayed_now,
            resumed=resumed,
        ),
        decisions=results,
        counterfactual=bool(overrides),
        notes=notes,
    )


def _mode(rebuilt: list[dict[str, Any]] | None) -> str:
    if rebuilt is None:
        return "current"
    return "rebuilt" if any(r.get("venv") for r in rebuilt) else "rebuild_failed"


# --- signing --------------------------------------------------------------------------------------


class ReportSignature(msgspec.Struct, frozen=True):
    algorithm: str
    key_id: str
    domain: str
    signature: str


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a large JSON value, composed from audit.canonical.canonical_bytes.

    Same bytes as ``canonical_bytes(value)`` (JCS is defined member by member:
    an object is its members sorted by UTF-16 code units, each value in
    canonical form), but each decision of a report takes canonical_bytes'
    fast or slow path on its own, so one ``null`` in an environment fingerprint
    does not send ten thousand decisions down the slow path (tests check equality)."""
    return _jcs(msgspec.to_builtins(value), 0)


def _jcs(value: Any, depth: int) -> bytes:
    if depth < 3 and type(value) is dict:
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return b"{" + b",".join(canonical_bytes(k) + b":" + _jcs(value[k], depth + 1) for k in keys) + b"}"
    if depth < 3 and type(value) is list and len(value) > 32:
        return b"[" + b",".join(canonical_bytes(item) for item in value) + b"]"
    return canonical_bytes(value)


def sign_report(report: ReplayReport, signer: Any) -> bytes:
    """The stored envelope: canonical JSON of the report and its Ed25519 signature."""
    body = canonical_json(report)
    signature = signer.sign(SIGNATURE_DOMAIN + body)
    sig = ReportSignature(
        algorithm="ed25519",
        key_id=signer.key_id,
        domain=SIGNATURE_DOMAIN.rstrip(b"\x00").decode(),
        signature=base64.b64encode(signature).decode("ascii"),
    )
    # {"format", "report", "signature"}: keys already in canonical order.
    return (
        b'{"format":'
        + canonical_bytes(SIGNED_FORMAT)
        + b',"report":'
        + body
        + b',"signature":'
        + canonical_bytes(sig)
        + b"}"
    )


class ReportVerification(msgspec.Struct, frozen=True):
    ok: bool
    key_id: str | None
    message: str
    report: dict[str, Any] | None = None


def verify_signed_report(store: WormStore, data: bytes) -> ReportVerification:
    """Check a stored report with nothing but the store: canonical form, the
    signature with the published key named in it."""

    try:
        envelope = msgspec.json.decode(data)
        report, sig = envelope["report"], envelope["signature"]
        if envelope.get("format") != SIGNED_FORMAT or sig.get("algorithm") != "ed25519":
            return ReportVerification(False, None, "not a signed replay report")
        if _jcs(envelope, 0) != data:
            return ReportVerification(False, sig.get("key_id"), "the envelope is not in canonical form")
        key_id = sig["key_id"]
        public_key = check_key_document(decode_key_document(store.get(layout.public_key_key(key_id))))
        public_key.verify(base64.b64decode(sig["signature"]), SIGNATURE_DOMAIN + _jcs(report, 0))
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return ReportVerification(False, None, "not a signed replay report")
    except ObjectMissing:
        return ReportVerification(False, None, "the signing key is not published in the store")
    except (KeyDocumentError, layout.LayoutError) as exc:
        return ReportVerification(False, None, f"bad key document: {exc}")
    except InvalidSignature:
        return ReportVerification(False, sig.get("key_id"), "the signature does not verify: the report was altered")
    return ReportVerification(True, key_id, "signature verifies", report)


def _put(store: WormStore, data: bytes) -> tuple[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    key = layout.evidence_key(digest)
    try:
        store.put_once(key, data)
    except ObjectExists:
        if hashlib.sha256(store.get(key)).hexdigest() != digest:
            raise
    return key, digest


# --- finishing: sign, store, record, render -------------------------------------------------


def finish(
    store: WormStore,
    job: Any,
    report: ReplayReport,
    *,
    signer: Any = None,
    keyring: Any = None,
    html_path: Path | None = None,
    json_path: Path | None = None,
    root: Any = None,
) -> ReplayOutcome:
    outcome = ReplayOutcome(
        replay_id=report.replay_id, report=report, results=report.decisions, exit_code=0 if report.summary.passed else 1
    )
    stored = None
    if job.record:
        keys = FileKeyStore.default()
        if signer is None:
            signer, _ = keys.init()
        for data in report.environment.fingerprints.values():  # the replay's own environment, in the trail too
            envs.publish(store, canonical_bytes(data))
        page = render_html(report)
        html_key, html_sha = _put(store, page.encode("utf-8"))
        report.html = HtmlRef(html_key, html_sha)
        outcome.html = page
        envelope = sign_report(report, signer)
        key, digest = _put(store, envelope)
        s = report.summary
        text = (
            f"replay {report.replay_id} of {report.selection_text} ({report.scope}): {s.decisions} decisions, "
            f"{s.identical} identical, {s.within_tolerance} within tolerance, {s.out_of_tolerance} out of tolerance, "
            f"{s.cannot_replay} cannot replay" + ("; COUNTERFACTUAL runtime overrides" if report.counterfactual else "")
        )
        accessed = [r.request_id for r in report.decisions if r.reason != "not_found"]
        # The replay chain is certified by the same root as the gateway's (spec §5a): the
        # gateway's own root, else this machine's, else it stays unanchored like its verifier.
        writer = ChainWriter.open(
            store,
            job.replay_chain,
            signer,
            keyring=keyring or keys,
            created_by="verdict replay",
            root=root if root is not None else local_root(),
        )
        try:
            now = utc_now()
            bodies: list[Any] = [
                AccessBody(
                    action="replay",
                    actor_key_id=job.actor,
                    target_request_id=rid,
                    accessed_at=now,
                    purpose=f"replay {report.replay_id}" + (f": {job.purpose}" if job.purpose else ""),
                )
                for rid in accessed
            ]
            for i in range(0, len(bodies), _ACCESS_BATCH):
                writer.append_batch(bodies[i : i + _ACCESS_BATCH])
            (receipt,) = writer.append_batch(
                [EvidenceBody(evidence_kind="replay_report", object_key=key, sha256=digest, summary=text)]
            )
        finally:
            writer.close()
        stored = StoredReport(
            object_key=key,
            sha256=digest,
            key_id=signer.key_id,
            html_key=html_key,
            replay_chain=job.replay_chain,
            evidence_seq=getattr(receipt, "seq", None),
            access_records=len(accessed),
        )
        if json_path is not None:
            Path(json_path).write_bytes(envelope)
    else:
        outcome.html = render_html(report)
        if json_path is not None:
            Path(json_path).write_bytes(canonical_json(report))
    if html_path is not None:
        Path(html_path).write_text(outcome.html, encoding="utf-8")
    outcome.stored = stored
    return outcome


# --- chart --------------------------------------------------------------------------------------

_COLOURS = {"identical": "#7f8c8d", "within_tolerance": "#2e86c1", "out_of_tolerance": "#c0392b"}


def score_chart_png(report: ReplayReport) -> bytes | None:
    """Score delta (replayed - logged) against the logged score, with each model's
    tolerance band shaded; symmetric-log y axis so one-ulp deltas and the band both show."""
    points = [
        (r.score.logged, r.score.delta or 0.0, r.score.verdict)
        for r in report.decisions
        if r.score is not None and r.score.logged is not None and r.score.verdict != "not_replayed"
    ]
    if not points:
        return None

    with chart_session() as plt:
        fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=110)
        try:
            return _draw_score_chart(report, points, fig, ax)
        finally:
            plt.close(fig)


def _draw_score_chart(report: ReplayReport, points: list, fig, ax) -> bytes:  # noqa: ANN001
    """Draw the score-delta chart on ``fig``/``ax`` (the caller holds the chart session)."""
    lo, hi = min(p[0] for p in points), max(p[0] for p in points)
    xs = np.linspace(min(0.0, lo), max(1.0, hi), 200)
    bounds = []
    for i, t in enumerate(report.tolerances):
        eff = t["effective"]
        band = eff["absolute"] + eff["relative"] * np.abs(xs)
        bounds.append(float(band.min()))
        ax.fill_between(
            xs,
            -band,
            band,
            color="#58d68d",
            alpha=0.18 if i == 0 else 0.1,
            label=f"tolerance {t['model']}: ±({eff['absolute']:g} + {eff['relative']:g}·|score|)",
        )
    nonzero = [abs(d) for _, d, _ in points if d]
    smallest = min(nonzero + bounds, default=1e-9)
    ax.set_yscale("symlog", linthresh=max(smallest / 10, 1e-300))
    for verdict, colour in _COLOURS.items():
        sel = [(x, d) for x, d, v in points if v == verdict]
        if sel:
            ax.scatter(
                [x for x, _ in sel], [d for _, d in sel], s=9, color=colour, label=f"{verdict} ({len(sel)})", zorder=3
            )
    ax.axhline(0.0, color="#444", linewidth=0.6)
    ax.set_xlabel("logged score")
    ax.set_ylabel("replayed − logged (symlog)")
    cannot = report.summary.cannot_replay
    ax.set_title(
        "Score deltas against the registered tolerance band"
        + (f" ({cannot} cannot_replay not shown)" if cannot else ""),
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f6f7} .num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,monospace}
.identical{background:#eef2f3} .within_tolerance{background:#e8f4fc} .out_of_tolerance{background:#fdecea;font-weight:600}
.cannot_replay{background:#fcf3cf;font-weight:600} .banner{padding:.7em 1em;border-radius:4px;margin:1em 0;font-weight:600}
.pass{background:#e9f7ef;border:1px solid #27ae60} .fail{background:#fdecea;border:1px solid #c0392b}
.warn{background:#fcf3cf;border:1px solid #b7950b} code{font-size:.9em} .muted{color:#666;font-size:.85em}
details{margin:.4em 0}
"""


def _e(value: Any) -> str:
    return _html.escape("" if value is None else str(value))


def _num(x: float | None) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.9g}" if 1e-4 <= abs(x) < 1e6 else f"{x:.3e}"


def render_html(report: ReplayReport) -> str:
    s = report.summary
    out: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Replay report {_e(report.replay_id)}</title><style>{_CSS}</style></head><body>",
    ]
    out.append(f"<h1>Replay report <code>{_e(report.replay_id)}</code></h1>")
    out.append(
        f"<p class='muted'>Created {_e(report.created_at)} by {_e(report.actor)}"
        + (f" for {_e(report.purpose)}" if report.purpose else "")
        + f" &middot; store <code>{_e(report.store)}</code> &middot; format {_e(report.format)}</p>"
    )
    if s.passed:
        out.append(
            f"<div class='banner pass'>PASSED: all {s.decisions} decisions reproduced "
            f"({s.identical} bit-identical, {s.within_tolerance} within the registered tolerance).</div>"
        )
    elif not s.decisions:
        out.append("<div class='banner fail'>NOT PASSED: no logged decision matched the selection.</div>")
    else:
        out.append(
            f"<div class='banner fail'>NOT PASSED: {s.out_of_tolerance} decision(s) out of tolerance, "
            f"{s.cannot_replay} could not be replayed, of {s.decisions}.</div>"
        )
    if report.counterfactual:
        forced = ", ".join(f"{k} = {v}" for k, v in report.environment.overrides.items())
        out.append(
            f"<div class='banner warn'>COUNTERFACTUAL replay: runtime settings were forced ({_e(forced)}) instead "
            f"of the recorded ones. This measures sensitivity; it is not a faithful replay.</div>"
        )
    if report.scope == "score_only":
        out.append(
            "<div class='banner warn'>Scope: score only. Scores and decisions were replayed; base values, "
            "contributions and reasons were NOT (marked not_replayed).</div>"
        )

    out.append("<h2>What was replayed</h2><table>")
    rows = [
        ("Selection", report.selection_text),
        ("Scope", report.scope),
        (
            "Record proof required",
            "signature, chain position and inclusion in a signed checkpoint"
            if report.require_checkpoint
            else "signature and chain position (checkpoint not required)",
        ),
        ("Environment", _environment_line(report)),
        (
            "Elapsed",
            f"{report.timing.elapsed_s:.1f} s, {report.timing.decisions_per_s:g} decisions/s, "
            f"{report.timing.workers or 'no'} worker process(es)"
            + (f", resumed {report.timing.resumed} time(s)" if report.timing.resumed else ""),
        ),
    ]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows]
    out.append("</table>")

    out.append("<h2>Summary</h2><table><tr><th>verdict</th><th>decisions</th><th>meaning</th></tr>")
    meanings = {
        "identical": "same bits as logged (score, base value, every contribution, fidelity)",
        "within_tolerance": "not bit-identical, inside the tolerance registered with the model",
        "erased": "personal data erased (GDPR Art. 17 or retention): the record verified, nothing left to re-score",
        "out_of_tolerance": "outside the registered tolerance, or decision/reasons changed: flagged",
        "cannot_replay": "the record, model or environment could not be proven or run",
    }
    for v in VERDICTS:
        out.append(
            f"<tr class='{v}'><td>{v}</td><td class='num'>{getattr(s, v, 0)}</td><td>{_e(meanings[v])}</td></tr>"
        )
    out.append("</table>")
    detail = [
        ("score", s.score),
        ("base value", s.base_value),
        ("contributions (all values)", s.contributions),
        ("explanation fidelity (per decision)", s.fidelity),
    ]
    out.append("<table><tr><th>value</th>" + "".join(f"<th>{v}</th>" for v in VALUE_VERDICTS) + "</tr>")
    for name, counts in detail:
        out.append(
            f"<tr><td>{_e(name)}</td>"
            + "".join(f"<td class='num'>{counts.get(v, 0)}</td>" for v in VALUE_VERDICTS)
            + "</tr>"
        )
    out.append("</table>")
    out.append(
        f"<p>Decisions whose label changed: <b>{s.decisions_changed}</b>; whose reasons changed: "
        f"<b>{s.reasons_changed}</b>; largest |score delta|: <b>{_num(s.max_abs_score_delta)}</b>.</p>"
    )
    if s.by_reason:
        out.append("<table><tr><th>cannot_replay reason</th><th>decisions</th><th>meaning</th></tr>")
        out += [
            f"<tr><td><code>{_e(k)}</code></td><td class='num'>{n}</td><td>{_e(CANNOT_REPLAY_REASONS.get(k, ''))}</td></tr>"
            for k, n in s.by_reason.items()
        ]
        out.append("</table>")

    out.append(
        "<h2>Tolerance (fixed at registration)</h2><table><tr><th>model</th><th>registered absolute</th>"
        "<th>registered relative</th><th>applied absolute</th><th>applied relative</th></tr>"
    )
    for t in report.tolerances:
        m, e = t["manifest"], t["effective"]
        out.append(
            f"<tr><td>{_e(t['model'])}</td><td class='num'>{m['absolute']:g}</td><td class='num'>{m['relative']:g}</td>"
            f"<td class='num'>{e['absolute']:g}</td><td class='num'>{e['relative']:g}</td></tr>"
        )
    out.append(
        "</table><p class='muted'>A value is within tolerance when |replayed − logged| ≤ absolute + relative·|logged|. "
        "A replay may tighten these bounds, never widen them.</p>"
    )

    png = score_chart_png(report)
    if png:
        out.append("<h2>Score deltas against the tolerance band</h2>")
        out.append(f"<img alt='score deltas' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")

    out.append("<h2>Environment</h2>")
    out.append(f"<p>{_e(_environment_line(report))}</p>")
    for sha, fp in report.environment.fingerprints.items():
        out.append(f"<details><summary>Replay environment fingerprint <code>{_e(sha)}</code></summary><table>")
        out += [
            f"<tr><th>{_e(k)}</th><td>{_e(_brief(fp.get(k)))}</td></tr>"
            for k in (
                "python",
                "platform",
                "machine",
                "project_version",
                "project_source_sha256",
                "key_packages",
                "determinism",
            )
        ]
        out.append(
            f"<tr><th>torch</th><td>{_e((fp.get('torch') or {}).get('version'))}</td></tr>"
            f"<tr><th>accelerator</th><td>{_e(fp.get('accelerator'))}</td></tr>"
            f"<tr><th>cpu</th><td>{_e((fp.get('cpu') or {}).get('model'))}</td></tr></table></details>"
        )
    for rebuilt in report.environment.rebuilt:
        out.append("<details open><summary>Rebuilt virtualenv</summary><table>")
        out += [f"<tr><th>{_e(k)}</th><td>{_e(_brief(v))}</td></tr>" for k, v in rebuilt.items()]
        out.append("</table></details>")
    for entry in report.recorded_environments:
        state = "identical to the replay's" if entry.identical else entry.status
        out.append(
            f"<h3>Recorded environment <code>{_e(entry.sha256[:16])}…</code> ({entry.decisions} decisions): {_e(state)}</h3>"
        )
        if entry.problem:
            out.append(f"<p class='cannot_replay'>{_e(entry.problem)}</p>")
        if entry.summary:
            out.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in entry.summary) + "</ul>")
        if entry.differences:
            out.append(
                f"<details><summary>All {len(entry.differences)} differences</summary><table>"
                "<tr><th>path</th><th>recorded</th><th>replay</th></tr>"
            )
            out += [
                f"<tr><td><code>{_e(d.path)}</code></td><td>{_e(_brief(d.recorded))}</td><td>{_e(_brief(d.current))}</td></tr>"
                for d in entry.differences
            ]
            out.append("</table></details>")

    if report.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")

    out.append(f"<h2>Decisions ({len(report.decisions)})</h2>")
    out.append(
        "<p class='muted'>Flagged decisions first. Contribution verdicts: counts over all attributes; "
        "the signed JSON report lists every contribution that is not bit-identical with its numbers.</p>"
    )
    out.append(
        "<table><tr><th>request id</th><th>chain/seq</th><th>model</th><th>decided at</th><th>verdict</th>"
        "<th>logged score</th><th>replayed score</th><th>delta</th><th>bound</th><th>contributions</th>"
        "<th>fidelity</th><th>decision</th><th>why</th></tr>"
    )
    order = {v: i for i, v in enumerate(reversed(VERDICTS))}
    for r in sorted(report.decisions, key=lambda r: order.get(r.verdict, 9)):
        sc = r.score
        contrib = ""
        if r.contributions is not None:
            contrib = ", ".join(f"{k} {v}" for k, v in r.contributions.counts.items())
            if r.contributions.max_abs_delta:
                contrib += f" (max |Δ| {_num(r.contributions.max_abs_delta)})"
        fidelity = _fidelity_cell(r)
        decision = ""
        if r.decision is not None:
            decision = (
                r.decision.logged
                if r.decision.logged == r.decision.replayed
                else f"{r.decision.logged} → {r.decision.replayed}"
            )
        why = "; ".join(r.why) + (f" [{r.reason}]" if r.reason else "")
        out.append(
            f"<tr class='{r.verdict}'><td><code>{_e(r.request_id)}</code></td><td>{_e(r.chain_id)}/{_e(r.seq)}</td>"
            f"<td>{_e(r.model)}</td><td>{_e(r.decided_at)}</td><td>{r.verdict}</td>"
            f"<td class='num'>{_num(sc.logged) if sc else ''}</td><td class='num'>{_num(sc.replayed) if sc else ''}</td>"
            f"<td class='num'>{_num(sc.delta) if sc else ''}</td><td class='num'>{_num(sc.bound) if sc else ''}</td>"
            f"<td>{_e(contrib)}</td><td>{_e(fidelity)}</td><td>{_e(decision)}</td><td>{_e(why)}</td></tr>"
        )
    out.append("</table>")
    out.append(
        "<p class='muted'>The machine-checkable version of this report is the signed JSON stored as evidence in the "
        "trail (evidence/sha256/…), referenced by an evidence record on the replay chain; verify it with "
        "<code>verdict replay --verify-report FILE</code>.</p></body></html>"
    )
    return "\n".join(out)


def _fidelity_cell(result: DecisionResult) -> str:
    """A decision's fidelity check in a few words: verdict, the logged certificate, what differs."""
    check = result.fidelity
    if check is None:
        return ""
    text = f"{check.verdict}, {'certified' if check.certified else 'not certified'}"
    if check.differences:
        text += "; differs: " + ", ".join(d.name for d in check.differences)
    return text


def _environment_line(report: ReplayReport) -> str:
    env = report.environment
    shas = ", ".join(s[:16] + "…" for s in env.fingerprints) or "unknown"
    if env.mode == "rebuild_failed":
        return "a rebuild of the recorded environment was asked for and failed: " + "; ".join(
            str(r.get("problem")) for r in env.rebuilt
        )
    if env.mode == "rebuilt":
        where = "; ".join(
            f"{r.get('venv')} (from recorded environment {str(r.get('recorded_environment', ''))[:16]}…)"
            for r in env.rebuilt
        )
        return f"rebuilt: a fresh virtualenv from the recorded pins and project source: {where}; fingerprint {shas}"
    return f"current installation (not rebuilt); fingerprint {shas}"


def _brief(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode() if value is not None else "—"
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Monitoring computed from the audit trail (gateway.monitoring): real decisions of the real
reference model, made by the engine's pipeline and appended by the real chain writer (sealed
where a subject is named), folded incrementally; the same figures through the CLI's HTML
report and the Prometheus collector.

Oracles are independent of the monitor: expected counts come from the decisions as decided,
the training rows from the split rule the manifest records, principal reasons from
gateway.reasons.principal_reasons_for_denial on each decision's clear attributes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from verdict.audit.chain import ChainWriter
from verdict.audit.personal_data import PersonalData, configured_keyring
from verdict.audit.records import DecisionBody, utc_now
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import FilesystemStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.engine import Engine, decide_rows, decision_body
from verdict.gateway.explanation import ExplanationResult, seed_for
from verdict.gateway.manifest import Manifest, WithheldAttribute, decode_manifest, encode_manifest
from verdict.gateway.metrics import GatewayMetrics
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE
from verdict.gateway.monitoring import PSI_MAJOR, ModelSummary, TrailMonitor, psi
from verdict.gateway.monitoring_fold import principal_attributes
from verdict.gateway.reasons import principal_reasons_for_denial
from verdict.gateway.registry import Registry, blob_key, manifest_key
from verdict.gateway.registry_log import RegistryLog
from verdict.gateway.subjects import SUBJECTS_CHAIN, SubjectRights

MODEL, VERSION = "german-credit", "1.0.0"
WITHHOLDING = "2.0.0-withholding"
"""A manifest that withholds personal_status as protected (as the reference 2.0.0 does): never
scored here, it only declares the attribute protected for the model's other versions."""
DAYS = ("2025-03-03", "2025-03-04", "2025-03-05")


@dataclass(frozen=True)
class _Request:
    request_id: str
    attributes: dict[str, Any]
    received_at: str
    subject_id: str | None = None

    @property
    def request_sha256(self) -> str:
        return hashlib.sha256(self.request_id.encode()).hexdigest()


@dataclass
class Trail:
    """A store holding the model (as the registry lays it out) and decisions on chain gateway-0."""

    store: FilesystemStore
    engine: Engine
    home: Path
    decisions: list[DecisionBody] = field(default_factory=list)
    """As decided, in the clear (sealed ones were written sealed)."""

    def monitor(self, personal: PersonalData | None = None, state_dir: Path | None = None) -> TrailMonitor:
        return TrailMonitor(self.store, self.engine, personal, state_dir=state_dir, discover_every_s=0)

    def append(self, bodies: list[DecisionBody], personal: PersonalData | None = None) -> None:
        signer, _ = FileKeyStore(self.home / "keys").init()
        written = personal.seal_all(bodies, now=utc_now()) if personal is not None else bodies
        with ChainWriter.open(self.store, "gateway-0", signer, lease=None) as writer:
            writer.append_batch(written)
        self.decisions += bodies

    def personal(self) -> PersonalData:
        return PersonalData(configured_keyring(str(self.home / "keyring"), ""))


def _install_model(store: FilesystemStore, source: Path) -> Manifest:
    """The model's blobs and manifests as the registry stores them (registered and validated once
    by the session fixtures; copied here so each trail's store is self-contained, as in production)."""
    manifest = decode_manifest((source / MANIFEST_FILE).read_bytes())
    store.put_once(blob_key(manifest.artifact_sha256), (source / ARTIFACT_FILE).read_bytes())
    store.put_once(blob_key(manifest.explainer.background_sha256), (source / BACKGROUND_FILE).read_bytes())
    store.put_once(manifest_key(MODEL, VERSION), encode_manifest(manifest))
    withholding = msgspec.structs.replace(
        manifest,
        version=WITHHOLDING,
        inputs=tuple(s for s in manifest.inputs if s.name != "personal_status"),
        withheld=(
            WithheldAttribute(
                name="personal_status", label="Personal status and sex", reason="sex and marital status: protected"
            ),
        ),
    )
    store.put_once(manifest_key(MODEL, WITHHOLDING), encode_manifest(withholding))
    return manifest


@pytest.fixture(scope="module")
def new_trail(tmp_path_factory, trained_dirs):
    counter = iter(range(1000))

    def make() -> Trail:
        home = tmp_path_factory.mktemp(f"monitor-{next(counter)}")
        store = FilesystemStore(home / "store")
        _install_model(store, trained_dirs[MODEL])
        return Trail(store=store, engine=Engine(Registry(store)), home=home)

    return make


def decide(
    engine: Engine,
    rows: list[dict[str, Any]],
    prefix: str,
    day: str,
    *,
    explain: bool,
    subjects: list[str] | None = None,
) -> list[DecisionBody]:
    """Real decisions: the engine's pipeline, the gateway's record builder."""
    runtime = engine.runtime(engine.manifest(MODEL, VERSION))
    ids = [f"{prefix}-{n:05d}" for n in range(len(rows))]
    decided = decide_rows(
        runtime, rows, [seed_for(r) for r in ids], explainer=engine.explainer(runtime) if explain else None
    )
    at = f"{day}T12:00:00.000000Z"
    return [
        decision_body(
            _Request(r, row, at, subjects[n] if subjects else None),
            runtime,
            outcome,
            decided,
            decided_at=at,
            environment_sha256="0" * 64,
            manifest_sha256=None,
        )
        for n, (r, row, outcome) in enumerate(zip(ids, rows, decided.outcomes, strict=True))
    ]


def training_rows() -> list[dict[str, Any]]:
    """The rows the model was trained on, by the split rule its manifest records (not the monitor's code)."""
    data = load_dataset(MODEL)
    return [row for row, key in zip(data.rows, data.row_keys, strict=True) if hashlib.sha256(key).digest()[0] % 5]


def shifted(row: dict[str, Any]) -> dict[str, Any]:
    """A population the model was not built on: long, large loans, no checking account."""
    return {
        **row,
        "duration_months": 60,
        "credit_amount": min(18424, row["credit_amount"] * 4),
        "checking_account": "A11",
    }


def only(summary, version: str = VERSION) -> ModelSummary:
    [found] = [m for m in summary.models if m.version == version]
    return found


@pytest.fixture(scope="module")
def reference_trail(new_trail) -> Trail:
    """The training rows themselves, decided over three days (not explained: fast)."""
    trail = new_trail()
    rows = training_rows()
    thirds = [rows[k::3] for k in range(3)]
    for day, part in zip(DAYS, thirds, strict=True):
        trail.append(decide(trail.engine, part, f"ref-{day}", day, explain=False))
    return trail


def test_decisions_per_day_and_outcomes_are_exact(reference_trail):
    monitor = reference_trail.monitor()
    monitor.refresh()
    m = only(monitor.summary(MODEL))
    decided = reference_trail.decisions
    assert m.decisions == len(decided) == 781
    per_day = Counter((b.decided_at[:10], b.decision) for b in decided)
    assert {(d.day, o): c for d in m.days for o, c in d.outcomes.items()} == dict(per_day)
    assert [d.day for d in m.days] == list(DAYS)
    assert {o.decision: o.count for o in m.outcomes} == dict(Counter(b.decision for b in decided))
    assert {o.decision: o.rate for o in m.outcomes} == {
        d: c / len(decided) for d, c in Counter(b.decision for b in decided).items()
    }
    assert [o.decision for o in m.outcomes if o.adverse] == ["decline"]
    assert (m.first_decided_at, m.last_decided_at) == (f"{DAYS[0]}T12:00:00.000000Z", f"{DAYS[-1]}T12:00:00.000000Z")
    assert m.score_min == min(b.score for b in decided) and m.score_max == max(b.score for b in decided)


def test_psi_is_zero_when_the_live_population_is_the_training_sample(reference_trail):
    monitor = reference_trail.monitor()
    monitor.refresh()
    m = only(monitor.summary())
    assert m.reference is not None and m.reference.rows == 781 and m.no_reference is None
    assert "training rows" in m.reference.source
    assert m.score is not None and len(m.score.bins) == 10
    assert [b.live for b in m.score.bins] == [b.reference for b in m.score.bins]
    assert m.score.psi == pytest.approx(0.0, abs=1e-12) and m.score.shift == "stable"
    assert len(m.attributes) == 20
    for dist in m.attributes:
        assert [b.live for b in dist.bins] == [b.reference for b in dist.bins], dist.attribute
        assert dist.psi == pytest.approx(0.0, abs=1e-12), dist.attribute
    assert m.attributes_read == 781 and m.attributes_erased == m.attributes_sealed == 0


def test_psi_flags_a_shifted_population(new_trail):
    trail = new_trail()
    trail.append(decide(trail.engine, [shifted(r) for r in training_rows()[:300]], "shift", DAYS[0], explain=False))
    monitor = trail.monitor()
    monitor.refresh()
    m = only(monitor.summary())
    by_name = {d.attribute: d for d in m.attributes}
    assert m.score is not None and m.score.psi is not None and m.score.psi > PSI_MAJOR and m.score.shift == "major"
    for name in ("duration_months", "credit_amount", "checking_account"):
        assert by_name[name].psi > PSI_MAJOR and by_name[name].shift == "major", name
    # an attribute left as it was stays close to its training distribution (300 of the 781 rows)
    assert by_name["purpose"].psi < PSI_MAJOR
    # the definition, on a case worked by hand: an empty live bin is floored at 1e-4
    assert psi([10, 0], [5, 5]) == pytest.approx((1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))


@pytest.fixture(scope="module")
def sealed_trail(new_trail) -> Trail:
    """Explained decisions, sealed under their subjects' keys; subject-3 then erased for real."""
    trail = new_trail()
    rows = load_dataset(MODEL).rows[:120]
    subjects = [f"subject-{n % 10}" for n in range(len(rows))]
    personal = trail.personal()
    trail.append(decide(trail.engine, rows, "sealed", DAYS[1], explain=True, subjects=subjects), personal)
    signer, _ = FileKeyStore(trail.home / "keys").init()
    log = RegistryLog(trail.store, signer, chain_id=SUBJECTS_CHAIN)
    SubjectRights(trail.store, personal, log).erase("subject-3", "GDPR Art. 17(1)(a), test", "test")
    personal.keyring.close()
    return trail


def test_principal_reasons_and_protected_attributes(sealed_trail):
    personal = sealed_trail.personal()
    monitor = sealed_trail.monitor(personal)
    monitor.refresh()
    m = only(monitor.summary())
    manifest = sealed_trail.engine.manifest(MODEL, VERSION)
    principal, adverse, with_protected = Counter(), Counter(), 0
    for body in sealed_trail.decisions:
        e = body.explanation
        result = ExplanationResult(e.method, e.output_space, e.base_value, dict(e.contributions), e.seed, 0, 0, 0.0)
        names = [r.attribute for r in principal_reasons_for_denial(manifest, body.inputs.attributes, result)]
        assert principal_attributes([s.name for s in manifest.inputs], e.contributions) == names
        principal.update(names)
        if body.decision == "decline":
            adverse.update(names)
        with_protected += "personal_status" in names
    explained = len(sealed_trail.decisions)
    assert m.explained == explained == 120
    assert {r.attribute: r.principal for r in m.reasons if r.principal} == dict(principal)
    assert {r.attribute: r.adverse for r in m.reasons if r.adverse} == dict(adverse)
    assert {r.attribute: r.rate for r in m.reasons if r.principal} == {a: c / explained for a, c in principal.items()}
    assert list(m.protected.attributes) == ["personal_status"]
    assert WITHHOLDING in m.protected.attributes["personal_status"]
    assert m.protected.with_protected == with_protected > 0
    assert m.protected.rate == with_protected / explained
    assert [r.protected for r in m.reasons if r.attribute == "personal_status"] == [True]
    personal.keyring.close()


def test_erased_decisions_count_everywhere_but_in_the_attributes(sealed_trail):
    personal = sealed_trail.personal()
    monitor = sealed_trail.monitor(personal)
    monitor.refresh()
    m = only(monitor.summary())
    erased = sum(1 for b in sealed_trail.decisions if b.subject_id == "subject-3")
    assert erased == 12
    assert m.decisions == 120 and m.explained == 120 and m.score is not None and m.score.live_total == 120
    assert m.attributes_erased == erased and m.attributes_read == 120 - erased and m.attributes_sealed == 0
    assert all(d.live_total == 120 - erased for d in m.attributes)
    assert monitor.summary().chains[SUBJECTS_CHAIN] == 2  # genesis and the erasure record, read and skipped
    personal.keyring.close()
    without_keys = sealed_trail.monitor(None)
    without_keys.refresh()
    m = only(without_keys.summary())
    assert m.attributes_sealed == 120 and m.attributes_read == 0 and m.decisions == 120


def test_refresh_reads_only_what_is_new_and_agrees_with_a_full_fold(new_trail):
    trail = new_trail()
    rows = training_rows()
    trail.append(decide(trail.engine, rows[:50], "inc-a", DAYS[0], explain=True))
    monitor = trail.monitor()
    first = monitor.refresh()
    assert first is not None and first.records_read == 51 and first.decisions_folded == 50  # genesis + 50
    again = monitor.refresh()
    assert again is not None and again.records_read == 0 and again.decisions_folded == 0
    trail.append(decide(trail.engine, rows[50:80], "inc-b", DAYS[1], explain=True))
    trail.append(decide(trail.engine, rows[80:90], "inc-c", DAYS[2], explain=True))
    later = monitor.refresh()
    assert later is not None and later.records_read == 40 and later.decisions_folded == 40
    assert monitor.records_read == 91
    fresh = trail.monitor()
    fresh.refresh()
    assert fresh.records_read == 91
    strip = {"refreshed_at": None, "records_read": 0}
    assert msgspec.structs.replace(monitor.summary(), **strip) == msgspec.structs.replace(fresh.summary(), **strip)
    assert only(monitor.summary()).decisions == 90


def test_the_summary_is_kept_across_restarts_and_rebuilt_when_it_does_not_match(new_trail, tmp_path):
    trail = new_trail()
    trail.append(decide(trail.engine, training_rows()[:40], "keep", DAYS[0], explain=False))
    state = tmp_path / "monitor"
    first = trail.monitor(state_dir=state)
    first.refresh()
    assert first.references.computed == 1
    restarted = trail.monitor(state_dir=state)
    result = restarted.refresh()
    assert result is not None and result.records_read == 0 and restarted.loaded_from_disk
    assert restarted.references.computed == 0  # kept with the summary (and cached on disk)
    assert only(restarted.summary()) == only(first.summary())
    trail.append(decide(trail.engine, training_rows()[40:45], "keep-more", DAYS[1], explain=False))
    assert restarted.refresh().records_read == 5
    # a state whose last record no longer hashes as recorded (another store at this URL) is not used
    [path] = state.glob("state-*.json")
    document = json.loads(path.read_bytes())
    document["chains"]["gateway-0"]["last_hash"] = "0" * 64
    path.write_text(json.dumps(document))
    rebuilt = trail.monitor(state_dir=state)
    assert rebuilt.refresh().records_read == 1 + 40 + 5 and not rebuilt.loaded_from_disk
    assert only(rebuilt.summary()).decisions == 45
    path.write_text("not json")
    assert trail.monitor(state_dir=state).refresh().records_read == 46


def test_a_version_without_a_resolvable_training_set_says_so(new_trail):
    trail = new_trail()
    manifest = trail.engine.manifest(MODEL, VERSION)
    own = msgspec.structs.replace(
        manifest,
        version="9.0.0-own-data",
        training=msgspec.structs.replace(
            manifest.training,
            dataset=msgspec.structs.replace(manifest.training.dataset, name="bank-internal-2024", sha256="ab" * 32),
        ),
    )
    trail.store.put_once(manifest_key(MODEL, own.version), encode_manifest(own))
    decided = decide(trail.engine, training_rows()[:20], "own", DAYS[0], explain=False)
    # the records such a version writes (only the version differs; the monitor never re-scores)
    trail.append(
        [msgspec.structs.replace(b, model=msgspec.structs.replace(b.model, version=own.version)) for b in decided]
    )
    monitor = trail.monitor()
    monitor.refresh()
    m = only(monitor.summary(), own.version)
    assert m.reference is None and m.no_reference is not None and "bank-internal-2024" in m.no_reference
    assert m.attributes == [] and m.score is not None and m.score.psi is None and m.score.reference_total is None
    assert sum(b.live for b in m.score.bins) == 20 and len(m.score.bins) == 10  # tenths of [0, 1]


def test_the_cli_writes_a_report_with_the_figures(reference_trail, tmp_path, monkeypatch):
    monkeypatch.setenv("VERDICT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VERDICT_STORE", raising=False)
    monkeypatch.delenv("VERDICT_KEYRING", raising=False)
    from verdict.gateway.cli import app

    out = tmp_path / "report.html"
    args = ["monitor", "report", "--store", reference_trail.store.url, "--model", MODEL, "-o", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    decided = Counter(b.decision for b in reference_trail.decisions)
    assert f"german-credit 1.0.0: 781 decisions (decline {decided['decline']}" in result.output
    assert "score PSI 0.000 (stable)" in result.output
    assert f"Report: {out}" in result.output
    page = out.read_text()
    assert (
        page.startswith("<!DOCTYPE html>")
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert "german-credit version 1.0.0" in page and "781 decisions" in page
    assert "Score PSI 0.000: stable" in page and "Below 0.1: stable" in page and "Above 0.25: a major shift" in page
    assert page.count("<svg") >= 4 and "Duration of credit: PSI 0.000 (stable)" in page
    for day in DAYS:
        assert day in page
    # the summary was kept: a second report reads nothing new
    again = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    summary = json.loads(again.output)
    assert summary["decisions"] == 781 and summary["models"][0]["score"]["psi"] == pytest.approx(0.0, abs=1e-12)


def test_gauges_come_from_the_summary_and_a_scrape_never_scans(reference_trail):
    monitor = reference_trail.monitor()
    metrics = GatewayMetrics()
    metrics.watch_monitor(monitor.collector(refresh_every_s=3600))
    assert monitor.records_read == 0  # registering reads nothing
    generate_latest(metrics.registry)  # starts a refresh on a background thread and answers with what it has
    monitor.wait_background()
    text = generate_latest(metrics.registry).decode()
    decided = Counter(b.decision for b in reference_trail.decisions)
    for decision, count in decided.items():
        assert (
            f'verdict_monitor_decisions_total{{decision="{decision}",model="{MODEL}",version="{VERSION}"}} {count}.0'
            in text
        )
    assert f'verdict_monitor_psi{{attribute="score",model="{MODEL}",version="{VERSION}"}} 0.0' in text
    assert f'verdict_monitor_psi{{attribute="duration_months",model="{MODEL}",version="{VERSION}"}}' in text
    assert f'verdict_monitor_attributes_unavailable{{model="{MODEL}",version="{VERSION}",why="erased"}} 0.0' in text
    assert "verdict_monitor_records_read_total 782.0" in text
    read = monitor.records_read
    generate_latest(metrics.registry)  # within refresh_every_s: no refresh at all
    assert monitor.records_read == read
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    assert "verdict_monitor_reason_rate" in generate_latest(registry).decode()

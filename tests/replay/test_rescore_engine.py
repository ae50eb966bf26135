"""Replay runs the gateway's own pipeline (gateway.engine), and reads the explain
bucket off old and new records alike (audit-format §3, "Explain bucket")."""

from __future__ import annotations

import ast
from pathlib import Path

import msgspec
import pytest

from tests.support.pending import Pending
from verdict.audit import records as rec
from verdict.audit.stores import FilesystemStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.engine import Engine, decide_rows, decision_body
from verdict.gateway.explanation import seed_for
from verdict.gateway.registry import Registry
from verdict.gateway.schema import validate_attributes
from verdict.replay.rescore import ReplayOptions, Rescorer

RESCORE = Path(__file__).resolve().parents[2] / "replay" / "rescore.py"
FORBIDDEN_CALLS = {
    "score_matrix",
    "evaluate_for_explanation",
    "explain",
    "contributions",
    "reasons",
    "load_model",
    "encode_rows",
    "Explainer",
    "LoadedModel",
}
"""What scores, explains, words or loads: replay may reach these only through gateway.engine."""


def test_replay_rescores_only_through_the_engine():
    tree = ast.parse(RESCORE.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    gateway = {name for name in imported if name.startswith("verdict.gateway.")}
    assert "verdict.gateway.engine.Engine" in gateway and "verdict.gateway.engine.decide_rows" in gateway
    allowed = ("verdict.gateway.engine", "verdict.gateway.registry.", "verdict.gateway.manifest.ManifestError")
    allowed += ("verdict.gateway.determinism", "verdict.gateway.explanation.ExplainerConfigError")
    allowed += ("verdict.gateway.schema.InputValidationError", "verdict.gateway.schema.validate_attributes")
    allowed += ("verdict.gateway.fidelity.to_record",)  # a conversion to the record's shape, no computation
    assert {name for name in gateway if not name.startswith(allowed)} == set()
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None))
    assert called & FORBIDDEN_CALLS == set()
    assert {"decide_rows", "runtime", "explainer"} <= called  # the engine's entry points


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained_dirs) -> FilesystemStore:
    store = FilesystemStore(tmp_path_factory.mktemp("rescore-store"))
    Registry(store).register(trained_dirs["german-credit"])
    return store


def _records(store: FilesystemStore, explain_bucket: int | None, count: int = 3) -> list[rec.DecisionBody]:
    """Decision bodies made by the gateway's pipeline, explained at ``explain_bucket``
    (None: the manifest's), in the record shape of today (``runtime.explain_bucket``)."""
    engine = Engine(Registry(store), "cpu")
    loaded = engine.loaded("german-credit", "1.0.0")
    explainer = loaded.explainer if explain_bucket is None else engine.explainer(loaded.runtime, explain_bucket)
    manifest = loaded.runtime.manifest
    rows = [validate_attributes(manifest.inputs, row) for row in load_dataset("german-credit").rows[:count]]
    pending = [Pending(f"style-{explain_bucket}-{i}", row) for i, row in enumerate(rows)]
    decided = decide_rows(loaded.runtime, rows, [seed_for(p.request_id) for p in pending], explainer=explainer)
    return [
        decision_body(
            p,
            loaded.runtime,
            outcome,
            decided,
            decided_at="2025-01-02T03:04:06.000000Z",
            environment_sha256="e" * 64,
            manifest_sha256=loaded.manifest_sha256,
        )
        for p, outcome in zip(pending, decided.outcomes, strict=True)
    ]


def _legacy(body: rec.DecisionBody, *, with_bucket: bool = True) -> rec.DecisionBody:
    """The same decision as written before ``runtime.explain_bucket``: the bucket in the budget
    (``with_bucket``), or nowhere at all (the oldest records: the manifest's applies)."""
    budget = dict(body.explanation.budget)
    if with_bucket:
        budget["bucket"] = body.runtime.explain_bucket
    return msgspec.structs.replace(
        body,
        runtime=msgspec.structs.replace(body.runtime, explain_bucket=None),
        explanation=msgspec.structs.replace(body.explanation, budget=budget),
    )


def _record_bytes(bodies: list[rec.DecisionBody]) -> list[bytes]:
    return [
        rec.record_bytes(
            rec.Record(
                chain_id="styles",
                seq=seq + 1,
                prev_hash="0" * 64,
                time="2025-01-02T03:04:07.000000Z",
                key_id="ed25519:" + "0" * 16,
                body=body,
            )
        )
        for seq, body in enumerate(bodies)
    ]


def test_old_and_new_style_records_replay_identical(store):
    new = _records(store, None)
    assert all(b.runtime.explain_bucket == 4096 and "bucket" not in b.explanation.budget for b in new)
    oldest = [_legacy(b, with_bucket=False) for b in new]
    legacy = [_legacy(b) for b in new]
    assert rec.explain_bucket(legacy[0]) == 4096 and rec.explain_bucket(oldest[0]) is None
    results = Rescorer(store.url, ReplayOptions()).rescore(_record_bytes(new + legacy + oldest))
    assert [r.verdict for r in results] == ["identical"] * 9, [r.why for r in results]
    assert {r.runtime["explain_bucket"] for r in results} == {4096}
    assert all(r.contributions.counts == {"identical": 20} and r.decision.reasons_match for r in results)


def test_a_recorded_explain_bucket_other_than_the_manifests_is_honoured(store):
    """A decision explained at 64 rows (not the manifest's 4096), in both record shapes:
    replay explains at 64 again, and gets the same bits."""
    new = _records(store, 64, count=2)
    assert all(b.runtime.explain_bucket == 64 for b in new)
    results = Rescorer(store.url, ReplayOptions()).rescore(_record_bytes(new + [_legacy(b) for b in new]))
    assert [r.verdict for r in results] == ["identical"] * 4, [r.why for r in results]
    assert {r.runtime["explain_bucket"] for r in results} == {64}


def test_counterfactual_explain_bucket_and_not_explained_records(store):
    new = _records(store, None, count=1)
    off = msgspec.structs.replace(
        new[0],
        request_id="style-off",
        explanation=rec.Explanation(
            method=rec.NOT_EXPLAINED, output_space="probability", base_value=0.0, contributions={}, seed=0
        ),
        reasons=[],
        runtime=msgspec.structs.replace(new[0].runtime, explain_bucket=None),
    )
    results = Rescorer(store.url, ReplayOptions(override_explain_bucket=64)).rescore(_record_bytes([new[0], off]))
    assert {r.runtime["explain_bucket"] for r in results} == {64}
    assert results[0].contributions.verdict != "not_replayed"
    assert results[1].verdict == "identical" and results[1].contributions.verdict == "not_replayed"

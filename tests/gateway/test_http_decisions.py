"""Decisions over real HTTP: concurrency, durability, bit-identity, idempotency, lookups."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import httpx
import msgspec
import numpy as np

from tests.gateway.conftest import auth
from verdict.audit.reader import read_decision
from verdict.audit.records import record_bytes
from verdict.audit.signing import check_key_document, load_published_keys, verify_record_signature
from verdict.audit.stores import open_store
from verdict.audit.verifier import verify_store
from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import Explainer, seed_for
from verdict.gateway.schema import encode_rows

ROWS = load_dataset("german-credit").rows


def chain_records(store, chain_id: str):
    from verdict.audit import layout
    from verdict.audit.records import decode_record, iter_lines, split_line

    for key in store.list_keys(layout.segments_prefix(chain_id)):
        for line in iter_lines(store.get(key)):
            yield decode_record(split_line(line)[0])


def _body(i: int, request_id: str | None = None) -> dict:
    return {"model": "german-credit", "request_id": request_id or f"conc-{i:05d}", "attributes": ROWS[i % len(ROWS)]}


async def _post_all(url: str, token: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, headers=auth(token), limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/decisions", json=b) for b in bodies))


def test_500_concurrent_decisions_are_durable_verified_and_bit_identical(live_gateway, registry, german_model):
    bodies = [_body(i) for i in range(500)]
    responses = asyncio.run(_post_all(live_gateway.url, live_gateway.tokens["client"], bodies))
    assert [r.status_code for r in responses] == [200] * 500, responses[0].text
    store = open_store((live_gateway.home / "store").as_uri())

    report = verify_store(store)
    assert report.ok, report.first_failure

    published = {k: check_key_document(doc) for k, doc in load_published_keys(store).items()}
    answers = [r.json() for r in responses]
    for body, answer in zip(bodies, answers, strict=True):
        verified = read_decision(store, body["request_id"])
        receipt = answer["receipt"]
        assert (receipt["chain_id"], receipt["seq"], receipt["record_hash"], receipt["key_id"]) == (
            verified.chain_id,
            verified.seq,
            verified.record_hash,
            verified.key_id,
        )
        assert receipt["signature"] == verified.signature
        digest = hashlib.sha256(record_bytes(verified.record)).digest()
        assert digest.hex() == receipt["record_hash"]
        assert verify_record_signature(published[receipt["key_id"]], digest, base64.b64decode(receipt["signature"]))
        assert (
            verified.body.score == answer["score"]
            and verified.body.explanation.contributions == answer["contributions"]
        )

    # The same bits as scoring and explaining each request alone, in another process (this one).
    assert answers[0]["model"]["sha256"] == german_model.manifest.artifact_sha256
    explainer = Explainer(german_model, registry.background(german_model.manifest))
    for body, answer in zip(bodies[:120], answers[:120], strict=True):
        x = encode_rows(german_model.manifest.inputs, [body["attributes"]])
        alone, _ = german_model.score_matrix(x)
        assert np.float32(answer["score"]).tobytes() == alone[0].tobytes()
        assert answer["score"] == float(alone[0])
        (result,) = explainer.explain(x, alone, [seed_for(body["request_id"])])
        assert answer["contributions"] == result.contributions
        assert answer["base_value"] == result.base_value


def test_response_fields_and_lookups(live_gateway):
    tokens = live_gateway.tokens
    with httpx.Client(base_url=live_gateway.url, timeout=30) as client:
        made = client.post("/v1/decisions", json=_body(7, "lookup-0001"), headers=auth(tokens["client"]))
        assert made.status_code == 200
        decision = made.json()
        assert set(decision) >= {
            "request_id",
            "model",
            "score",
            "decision",
            "reasons",
            "contributions",
            "base_value",
            "receipt",
        }
        assert len(decision["contributions"]) == 20
        assert abs(decision["base_value"] + sum(decision["contributions"].values()) - decision["score"]) <= 1e-6
        assert decision["decision"] in ("approve", "decline")

        record = client.get("/v1/decisions/lookup-0001", headers=auth(tokens["staff"]))
        assert record.status_code == 200
        view = record.json()
        assert view["record"]["body"]["request_id"] == "lookup-0001"
        assert view["verification"]["signature_valid"] is True

        explanation = client.get("/v1/decisions/lookup-0001/explanation", headers=auth(tokens["staff"]))
        assert explanation.status_code == 200
        gdpr = explanation.json()
        assert gdpr["reasons"] and all(r["text"] for r in gdpr["reasons"])
        assert gdpr["verification"]["status"] in ("verified", "verified_pending_checkpoint")
        if decision["decision"] == "decline":
            assert 1 <= len(gdpr["principal_reasons_for_denial"]) <= 4
        # fidelity: the record's, as logged (whatever algorithm the reference model uses)
        logged = read_decision(open_store((live_gateway.home / "store").as_uri()), "lookup-0001").body
        fidelity = logged.explanation.fidelity
        assert fidelity is not None and gdpr["fidelity"] == msgspec.to_builtins(fidelity)
        assert set(gdpr["fidelity"]) >= {"certified", "evaluations", "pairs"} and gdpr["fidelity"]["evaluations"] >= 1
        assert set(gdpr["fidelity"].get("error_bounds", {})) <= set(gdpr["contributions"])
        assert all(set(r) == {"attribute", "label", "value", "direction", "text"} for r in gdpr["reasons"])

        png = client.get("/v1/decisions/lookup-0001/explanation.png", headers=auth(tokens["staff"]))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

        missing = client.get("/v1/decisions/never-made/explanation", headers=auth(tokens["staff"]))
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")

    # every lookup above is itself on the trail
    store = open_store((live_gateway.home / "store").as_uri())
    from verdict.audit.records import AccessBody

    accesses = [r.body for r in chain_records(store, "gateway-0") if isinstance(r.body, AccessBody)]
    actions = {(a.action, a.target_request_id) for a in accesses}
    assert {("lookup", "lookup-0001"), ("explanation", "lookup-0001"), ("explanation_chart", "lookup-0001")} <= actions


def test_idempotency(live_gateway):
    token = live_gateway.tokens["client"]
    with httpx.Client(base_url=live_gateway.url, headers=auth(token), timeout=30) as client:
        first = client.post("/v1/decisions", json=_body(3, "idem-0001"))
        again = client.post("/v1/decisions", json=_body(3, "idem-0001"))
        other = client.post("/v1/decisions", json=_body(4, "idem-0001"))
    assert first.status_code == again.status_code == 200
    a, b = first.json(), again.json()
    assert b.pop("idempotent_replay") is True and a.pop("idempotent_replay") is False
    assert a == b
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "idem-0001" in other.json()["detail"]


def test_same_request_id_concurrently_gives_one_decision(live_gateway):
    bodies = [_body(11, "idem-race")] * 20
    responses = asyncio.run(_post_all(live_gateway.url, live_gateway.tokens["client"], bodies))
    assert {r.status_code for r in responses} == {200}
    receipts = {json.dumps(r.json()["receipt"], sort_keys=True) for r in responses}
    assert len(receipts) == 1


def test_same_request_id_with_different_bodies_signs_only_the_delivered_decision(live_gateway):
    """16 concurrent posts per request id, each with another body: one 200, fifteen
    409, and the chain holds exactly the one decision the client received (the
    losers are refused before scoring, not signed and superseded)."""
    from verdict.audit.records import DecisionBody

    ids = [f"race-{n:02d}" for n in range(20)]
    bodies = [_body(100 + 16 * n + k, request_id) for k in range(16) for n, request_id in enumerate(ids)]
    responses = asyncio.run(_post_all(live_gateway.url, live_gateway.tokens["client"], bodies))
    by_id: dict[str, list[httpx.Response]] = {}
    for body, response in zip(bodies, responses, strict=True):
        by_id.setdefault(body["request_id"], []).append(response)
    for request_id, answers in by_id.items():
        assert sorted(r.status_code for r in answers) == [200] + [409] * 15, (request_id, [r.text for r in answers])
    store = open_store((live_gateway.home / "store").as_uri())
    signed: dict[str, list] = {}
    for record in chain_records(store, "gateway-0"):
        if isinstance(record.body, DecisionBody) and record.body.request_id in by_id:
            signed.setdefault(record.body.request_id, []).append(record)
    for request_id, answers in by_id.items():
        (winner,) = [r.json() for r in answers if r.status_code == 200]
        assert [(r.seq, r.body.score) for r in signed[request_id]] == [(winner["receipt"]["seq"], winner["score"])]
    report = verify_store(store)
    assert report.ok, report.first_failure
    assert not [n for n in report.notes if n.reason == "superseded_duplicate"]


def test_models_endpoints_and_operations(live_gateway):
    token = live_gateway.tokens["client"]
    with httpx.Client(base_url=live_gateway.url, headers=auth(token), timeout=30) as client:
        assert client.get("/v1/models").json()[0]["production"] == "1.0.0"
        manifest = client.get("/v1/models/german-credit").json()
        assert manifest["name"] == "german-credit" and len(manifest["inputs"]) == 20
        assert client.get("/v1/models/german-credit/versions/1.0.0").json() == manifest
        unknown = client.get("/v1/models/german-credit/versions/9")
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"models": "ok", "store": "ok", "signer": "ok"}
        metrics = client.get("/metrics").text
        for name in (
            "verdict_http_requests_total",
            "verdict_batch_size_bucket",
            "verdict_audit_append_seconds_bucket",
            "verdict_chain_length",
            "verdict_http_request_seconds_bucket",
        ):
            assert name in metrics
        schema = client.get("/schema/openapi.json").json()
        assert "/v1/decisions" in schema["paths"]

"""The examiner API over real HTTP: start a replay, poll it, fetch the reports;
who may read a replay, and that every read is on the trail."""

from __future__ import annotations

import threading
import time

import httpx
import msgspec
import pytest

from tests.gateway.conftest import auth
from tests.gateway.test_http_decisions import chain_records
from verdict.audit.records import AccessBody
from verdict.audit.stores import open_store
from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import Explainer, seed_for
from verdict.gateway.schema import encode_rows
from verdict.gateway.waterfall import render_waterfall
from verdict.replay.report import ReplayReport, score_chart_png

ROWS = load_dataset("german-credit").rows


def _decide(client: httpx.Client, token: str, ids: list[str], first_row: int) -> None:
    for i, request_id in enumerate(ids):
        made = client.post(
            "/v1/decisions",
            headers=auth(token),
            json={"model": "german-credit", "request_id": request_id, "attributes": ROWS[first_row + i]},
        )
        assert made.status_code == 200, made.text


def test_examiner_replays_decisions_over_http(live_gateway):
    tokens = live_gateway.tokens
    ids = [f"examined-{i}" for i in range(5)]
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        _decide(client, tokens["client"], ids, first_row=20)
        refused = client.post("/v1/replays", headers=auth(tokens["client"]), json={"request_ids": ids})
        assert refused.status_code == 403
        bad = client.post(
            "/v1/replays", headers=auth(tokens["examiner"]), json={"request_ids": ids, "tighten_absolute": 1.0}
        )  # may only tighten the manifest's bound
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["errors"][0]["field"] == "tighten_absolute"

        started = client.post(
            "/v1/replays",
            headers=auth(tokens["examiner"]),
            json={"request_ids": ids, "require_checkpoint": False, "purpose": "test examination"},
        )
        assert started.status_code == 202, started.text
        replay_id = started.json()["replay_id"]
        assert started.headers["location"] == f"/v1/replays/{replay_id}"
        deadline = time.monotonic() + 240
        status = started.json()
        while status["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            status = client.get(f"/v1/replays/{replay_id}", headers=auth(tokens["examiner"])).json()
        assert status["state"] == "finished", status
        assert status["passed"] is True
        assert status["summary"]["decisions"] == 5 and status["summary"]["identical"] == 5
        report = client.get(f"/v1/replays/{replay_id}/report.json", headers=auth(tokens["examiner"]))
        assert report.status_code == 200 and report.json()
        html = client.get(f"/v1/replays/{replay_id}/report.html", headers=auth(tokens["examiner"]))
        assert html.status_code == 200 and "<html" in html.text.lower()
        assert client.get("/v1/replays/nope", headers=auth(tokens["examiner"])).status_code == 404


def _finished_replay(client: httpx.Client, token: str, ids: list[str]) -> str:
    started = client.post("/v1/replays", headers=auth(token), json={"request_ids": ids, "require_checkpoint": False})
    assert started.status_code == 202, started.text
    replay_id = started.json()["replay_id"]
    for _ in range(480):  # status polls
        state = client.get(f"/v1/replays/{replay_id}", headers=auth(token)).json()["state"]
        if state not in ("queued", "running"):
            assert state == "finished"
            return replay_id
        time.sleep(0.5)
    raise AssertionError(f"replay {replay_id} still not finished after 480 status polls")


@pytest.fixture(scope="module")
def read_replay(live_gateway):
    """A finished replay started by the examiner key, and a second examiner's key."""
    tokens = dict(live_gateway.tokens)
    keys = ApiKeyStore(live_gateway.home / "apikeys.json")
    tokens["examiner2"] = keys.create(["replay"], name="examiner2")[1]
    ids = [f"scoped-{i}" for i in range(3)]
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        _decide(client, tokens["client"], ids, first_row=40)
        replay_id = _finished_replay(client, tokens["examiner"], ids)
    key_ids = {role: keys.authenticate(token).key_id for role, token in tokens.items()}
    return replay_id, tokens, key_ids


def _replay_reads(live_gateway, replay_id: str) -> list[tuple[str, str]]:
    store = open_store((live_gateway.home / "store").as_uri())
    return [
        (r.body.action, r.body.actor_key_id)
        for r in chain_records(store, "gateway-0")
        if isinstance(r.body, AccessBody) and r.body.target_request_id == replay_id
    ]


def test_replay_reads_are_scoped_to_their_starter_and_recorded(live_gateway, read_replay):
    replay_id, tokens, key_ids = read_replay
    before = _replay_reads(live_gateway, replay_id)
    paths = {
        "replay_status": f"/v1/replays/{replay_id}",
        "replay_report": f"/v1/replays/{replay_id}/report.json",
        "replay_report_html": f"/v1/replays/{replay_id}/report.html",
    }
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        for path in paths.values():
            other = client.get(path, headers=auth(tokens["examiner2"]))
            assert other.status_code == 404 and other.headers["content-type"].startswith("application/problem+json")
            assert replay_id not in other.json()["title"]
        for role in ("examiner", "admin"):
            for path in paths.values():
                assert client.get(path, headers=auth(tokens[role])).status_code == 200, (role, path)
    recorded = _replay_reads(live_gateway, replay_id)[len(before) :]
    assert sorted(recorded) == sorted((action, key_ids[role]) for role in ("examiner", "admin") for action in paths)


def test_charts_render_correctly_while_a_replay_chart_renders(live_gateway, read_replay, registry, german_model):
    """The explanation waterfall and the replay report's chart share one process:
    rendered at once from several threads, every chart comes out, and each is the
    same picture as when drawn alone."""
    replay_id, tokens, _ = read_replay
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        envelope = client.get(f"/v1/replays/{replay_id}/report.json", headers=auth(tokens["examiner"])).json()
    report = msgspec.convert(envelope["report"], ReplayReport)
    manifest = german_model.manifest
    attributes = ROWS[7]
    x = encode_rows(manifest.inputs, [attributes])
    scores, _ = german_model.score_matrix(x)
    result = Explainer(german_model, registry.background(manifest)).explain(x, scores, [seed_for("race")])[0]
    alone = render_waterfall(manifest, attributes, result, fmt="svg")
    failures: list[BaseException] = []
    outputs: list[bytes] = []

    def draw(fn, *args) -> None:
        try:
            for _ in range(6):
                outputs.append(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=draw, args=(score_chart_png, report)) for _ in range(3)]
    threads += [
        threading.Thread(target=draw, args=(render_waterfall, manifest, attributes, result, "svg")) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    svgs = [o for o in outputs if o.lstrip().startswith(b"<?xml")]
    assert len(outputs) == 36 and len(svgs) == 18 and set(svgs) == {alone}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "a b"}, "model"),
        ({"model": "german-credit:1.0.0 "}, "model"),
        ({"model": "a\u0000"}, "model"),
        ({"chain": "../x"}, "chain"),
    ],
)
def test_replay_filters_outside_the_store_alphabet_are_refused(live_gateway, body, field):
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        refused = client.post("/v1/replays", headers=auth(live_gateway.tokens["examiner"]), json={"all": True, **body})
    assert refused.status_code == 422, refused.text
    assert [(e["field"], e["rule"]) for e in refused.json()["errors"]] == [(field, "format")]

"""The examiner API over real HTTP: start a replay, poll it, fetch the reports."""

from __future__ import annotations

import time

import httpx

from gateway.datasets import load_dataset
from tests.gateway.conftest import auth

ROWS = load_dataset("german-credit").rows


def test_examiner_replays_decisions_over_http(live_gateway):
    tokens = live_gateway.tokens
    ids = [f"examined-{i}" for i in range(5)]
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        for i, request_id in enumerate(ids):
            made = client.post("/v1/decisions", headers=auth(tokens["client"]),
                               json={"model": "german-credit", "request_id": request_id, "attributes": ROWS[20 + i]})
            assert made.status_code == 200
        refused = client.post("/v1/replays", headers=auth(tokens["client"]), json={"request_ids": ids})
        assert refused.status_code == 403
        bad = client.post("/v1/replays", headers=auth(tokens["examiner"]),
                          json={"request_ids": ids, "tighten_absolute": 1.0})  # may only tighten the manifest's bound
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["errors"][0]["field"] == "tighten_absolute"

        started = client.post("/v1/replays", headers=auth(tokens["examiner"]),
                              json={"request_ids": ids, "require_checkpoint": False, "purpose": "test examination"})
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

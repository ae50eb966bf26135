"""An idle gateway still checkpoints: a decision is covered by a signed
checkpoint within the configured interval though no other request comes."""

from __future__ import annotations

import time

import httpx

from tests.gateway.conftest import auth
from tests.support.gateway_server import GatewayServer, prepare_home
from verdict.audit.reader import read_decision
from verdict.audit.stores import open_store
from verdict.gateway.datasets import load_dataset


def test_an_idle_gateway_checkpoints_its_last_decision(tmp_path, trained_dirs):
    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    store = open_store((home / "store").as_uri())
    with GatewayServer(home, env={"VERDICT_CHECKPOINT_INTERVAL_S": "1"}).start() as server:
        with httpx.Client(base_url=server.url, headers=auth(tokens["client"]), timeout=30) as client:
            made = client.post(
                "/v1/decisions",
                json={
                    "model": "german-credit",
                    "request_id": "idle-1",
                    "attributes": load_dataset("german-credit").rows[2],
                },
            )
        assert made.status_code == 200, made.text
        # No more requests: only the gateway's own timer can cover the record now.
        verified = read_decision(store, "idle-1")
        for _ in range(240):  # polls of the store; the timer ticks every 0.25 s at this interval
            if verified.inclusion is not None or server.process.poll() is not None:
                break
            time.sleep(0.5)
            verified = read_decision(store, "idle-1")
        assert verified.inclusion is not None, "the idle gateway never checkpointed its last decision"
        assert verified.inclusion.tree_size > made.json()["receipt"]["seq"]

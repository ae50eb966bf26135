"""Fail-closed behaviour of a real gateway process: crashes and storage outages.

No receipt without a record, ever; and the service comes back by itself.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import httpx
import pytest

from audit.reader import read_decision
from audit.stores import open_store
from audit.verifier import verify_store
from gateway.datasets import load_dataset
from tests.gateway.conftest import auth
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.tcp_proxy import TcpProxy

ROWS = load_dataset("german-credit").rows
pytestmark = pytest.mark.slow


class Load:
    """Concurrent decision traffic in a background thread; remembers every 200."""

    def __init__(self, url: str, token: str, prefix: str, concurrency: int = 16) -> None:
        self.url, self.token, self.prefix, self.concurrency = url, token, prefix, concurrency
        self.ok: dict[str, dict] = {}
        self.statuses: list[int] = []
        self.problems: list[httpx.Response] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._counter = 0

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            self._counter += 1
            request_id = f"{self.prefix}-{self._counter:06d}"
            body = {"model": "german-credit", "request_id": request_id, "attributes": ROWS[self._counter % len(ROWS)]}
            try:
                response = await client.post("/v1/decisions", json=body)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            self.statuses.append(response.status_code)
            if response.status_code == 200:
                self.ok[request_id] = response.json()
            else:
                self.problems.append(response)
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=auth(self.token), timeout=30) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))


def _assert_every_receipt_has_its_record(store, answered: dict[str, dict]) -> None:
    for request_id, answer in answered.items():
        verified = read_decision(store, request_id)
        assert verified.record_hash == answer["receipt"]["record_hash"]
        assert verified.seq == answer["receipt"]["seq"]


def test_sigkill_under_load_loses_no_receipted_decision(tmp_path, trained_dirs):
    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    store = open_store((home / "store").as_uri())
    answered: dict[str, dict] = {}
    rng = random.Random(5)
    server = GatewayServer(home)
    for round_no in range(4):
        server.start()
        with Load(server.url, tokens["client"], f"kill{round_no}") as load:
            time.sleep(rng.uniform(1.0, 2.5))
            server.kill()
        answered.update(load.ok)
        assert load.ok, f"round {round_no}: no decision succeeded before the kill:\n{server.log()}"
    server.start()  # the chain continues after the last crash
    with httpx.Client(base_url=server.url, headers=auth(tokens["client"]), timeout=30) as client:
        after = client.post("/v1/decisions", json={"model": "german-credit", "request_id": "after-crashes", "attributes": ROWS[0]})
    server.stop()
    assert after.status_code == 200
    _assert_every_receipt_has_its_record(store, answered)
    report = verify_store(store)
    assert report.ok, report.first_failure
    assert after.json()["receipt"]["seq"] > max(a["receipt"]["seq"] for a in answered.values())


def test_storage_outage_fails_closed_and_recovers(tmp_path, trained_dirs, moto_server, s3_client, s3_env):
    from audit.stores.s3 import create_audit_bucket

    bucket = f"outage-{random.randrange(10**9)}"
    create_audit_bucket(s3_client, bucket, 1)
    direct_url = f"s3://{bucket}/trail?endpoint_url={moto_server.endpoint_url}&region=us-east-1&retention_days=1&timeout=2"
    proxy = TcpProxy(moto_server.port)
    gateway_url = f"s3://{bucket}/trail?endpoint_url={proxy.endpoint_url}&region=us-east-1&retention_days=1&timeout=2"
    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"], store_url=direct_url)
    server = GatewayServer(home, env={"VERDICT_STORE": gateway_url, "VERDICT_REQUEST_TIMEOUT_S": "15"}).start()
    try:
        with Load(server.url, tokens["client"], "outage", concurrency=8) as load:
            time.sleep(2.0)
            before_outage = len(load.ok)
            proxy.down()
            time.sleep(4.0)
            during = list(load.problems)
            ready = httpx.get(server.url + "/readyz", timeout=10)
            ok_when_restored = len(load.ok)
            proxy.up()
            deadline = time.monotonic() + 30
            recovered = False
            while time.monotonic() < deadline and not recovered:
                recovered = len(load.ok) > ok_when_restored + 5  # new decisions after the store returned
                time.sleep(0.25)
    finally:
        server.stop()
        proxy.close()
    assert before_outage > 0
    assert during, "no request failed while the store was unreachable"
    for response in during:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "Retry-After" in response.headers
        assert "receipt" not in response.json()
    assert ready.status_code == 503 and ready.json()["checks"]["store"].startswith("unreachable")
    assert recovered, "the gateway did not resume after the store came back"
    store = open_store(direct_url)
    _assert_every_receipt_has_its_record(store, load.ok)
    report = verify_store(store)
    assert report.ok, report.first_failure

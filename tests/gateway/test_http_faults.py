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

from tests.audit.helpers import wait_out_newest_lease
from tests.gateway.conftest import auth
from tests.support.filesystems import fill, small_tmpfs
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.tcp_proxy import TcpProxy
from verdict.audit.chain_leaves import LeafCache
from verdict.audit.reader import read_decision
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store
from verdict.gateway.datasets import load_dataset

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


def _staged_by_others(home, pid: int) -> list[str]:
    """Staging files in the store owned neither by the gateway process ``pid``
    nor by this test process (both alive: their locks and pre-staged files are
    expected; a killed gateway's are not)."""
    import os

    alive = (f"{pid}-", f"{os.getpid()}-")
    return sorted(n for n in os.listdir(home / "store" / ".incoming") if not n.startswith(alive))


def _assert_every_receipt_has_its_record(store, answered: dict[str, dict]) -> None:
    """Each receipt's record, read by its request id and proved in the final checkpoint.

    One LeafCache for all of them (as the gateway's lookups keep one): the chain's leaves
    are read once, not once per receipt (O(n^2) reads, tens of seconds on S3). Each
    lookup still checks its record against the leaves and the checkpoint's signed root;
    what a kept view skips, re-reading the other records, the callers' verify_store does."""
    leaves = LeafCache(store)
    for request_id, answer in answered.items():
        verified = read_decision(store, request_id, leaves=leaves)
        assert verified.record_hash == answer["receipt"]["record_hash"]
        assert verified.seq == answer["receipt"]["seq"]


def test_sigkill_under_load_loses_no_receipted_decision(tmp_path, trained_dirs):
    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    store = open_store((home / "store").as_uri())
    answered: dict[str, dict] = {}
    rng = random.Random(5)
    server = GatewayServer(home)
    try:
        for round_no in range(3):  # three crashes, each under load (benchmarks/ and the runbook have more)
            server.start()
            assert _staged_by_others(home, server.process.pid) == [], "recovery left a killed writer's staging behind"
            with Load(server.url, tokens["client"], f"kill{round_no}") as load:
                time.sleep(rng.uniform(1.0, 2.5))
                server.kill()
            answered.update(load.ok)
            assert load.ok, f"round {round_no}: no decision succeeded before the kill:\n{server.log()}"
        server.start()  # the chain continues after the last crash
        assert _staged_by_others(home, server.process.pid) == [], "recovery left a killed writer's staging behind"
        with httpx.Client(base_url=server.url, headers=auth(tokens["client"]), timeout=30) as client:
            after = client.post(
                "/v1/decisions", json={"model": "german-credit", "request_id": "after-crashes", "attributes": ROWS[0]}
            )
    finally:
        server.stop()
    assert after.status_code == 200
    _assert_every_receipt_has_its_record(store, answered)
    report = verify_store(store, trust=RootKey.load(home / "trust" / "root.pem").policy())
    assert report.ok and report.anchored, report.first_failure
    assert after.json()["receipt"]["seq"] > max(a["receipt"]["seq"] for a in answered.values())


def test_storage_outage_fails_closed_and_recovers(tmp_path, trained_dirs, moto_server, s3_client, s3_env):
    from verdict.audit.stores.s3 import create_audit_bucket

    bucket = f"outage-{random.randrange(10**9)}"
    create_audit_bucket(s3_client, bucket, 1)
    direct_url = (
        f"s3://{bucket}/trail?endpoint_url={moto_server.endpoint_url}&region=us-east-1&retention_days=1&timeout=2"
    )
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


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 48 MiB tmpfs that the test can fill (needs root, as in CI)."""
    yield from small_tmpfs(tmp_path / "small-fs")


def test_full_disk_makes_the_replica_unready_and_it_recovers_by_itself(tmp_path, trained_dirs, small_filesystem):
    home = tmp_path / "home"
    store_url = (small_filesystem / "store").as_uri()
    tokens = prepare_home(home, trained_dirs["german-credit"], store_url=store_url)
    server = GatewayServer(home, env={"VERDICT_STORE": store_url}).start()
    try:
        with httpx.Client(base_url=server.url, headers=auth(tokens["client"]), timeout=30) as client:

            def decide(request_id: str) -> httpx.Response:
                return client.post(
                    "/v1/decisions", json={"model": "german-credit", "request_id": request_id, "attributes": ROWS[1]}
                )

            assert decide("before-full").status_code == 200
            fill(small_filesystem / "filler")
            refused = [decide(f"full-{n}") for n in range(3)]  # unready_after_failures = 3
            unready = client.get("/readyz")
            still_unready = client.get("/readyz")  # no traffic in between: the probe keeps it out
            (small_filesystem / "filler").unlink()
            ready_again = client.get("/readyz")  # no decision needed to come back
            after = decide("after-full")
    finally:
        server.stop()
    for response in refused:
        assert response.status_code == 503 and response.headers["content-type"].startswith("application/problem+json")
        assert "Retry-After" in response.headers
    for response in (unready, still_unready):
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["store"].startswith("cannot take appends: 3 consecutive appends failed")
        assert "No space left on device" in response.json()["checks"]["store"]
    assert ready_again.status_code == 200 and ready_again.json()["checks"]["store"] == "ok"
    assert after.status_code == 200, after.text
    store = open_store(store_url)
    assert [read_decision(store, r).body.request_id for r in ("before-full", "after-full")] == [
        "before-full",
        "after-full",
    ]
    report = verify_store(store)
    assert report.ok, report.first_failure


def test_a_gateway_whose_lease_was_taken_over_stops_deciding_and_says_why(tmp_path, trained_dirs):
    """A frozen gateway (SIGSTOP) lets its lease lapse; a second one takes the
    chain over; the first, thawed, must not append another record: it answers
    503, reports unready, and its log names the new holder."""
    import signal

    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    short = {
        "VERDICT_LEASE_TTL_S": "4",
        "VERDICT_LEASE_RENEW_S": "1",
        "VERDICT_LEASE_SKEW_S": "0.5",
        "VERDICT_CHECKPOINT_INTERVAL_S": "1",
    }
    first, second = GatewayServer(home, env=short), GatewayServer(home, env=short)
    body = {"model": "german-credit", "attributes": ROWS[3]}
    try:
        first.start()
        first.process.send_signal(signal.SIGSTOP)
        store = open_store((home / "store").as_uri())
        for _ in range(3):  # a renewal in flight at SIGSTOP may land once more: then wait out that one too
            wait_out_newest_lease(store, "gateway-0", float(short["VERDICT_LEASE_SKEW_S"]))
            try:
                second.start()
                break
            except RuntimeError as refused:
                assert "LeaseHeld" in str(refused), str(refused)
        assert second.process.poll() is None, "the frozen gateway's lease was still held after three of its expiries"
        first.process.send_signal(signal.SIGCONT)
        with httpx.Client(headers=auth(tokens["client"]), timeout=30) as client:
            taken = client.post(second.url + "/v1/decisions", json={**body, "request_id": "after-takeover"})
            for _ in range(300):  # the thawed gateway's next renewal (every second) finds the new lease
                if client.get(first.url + "/readyz").status_code != 200:
                    break
                time.sleep(0.2)
            unready = client.get(first.url + "/readyz")
            refused = client.post(first.url + "/v1/decisions", json={**body, "request_id": "to-the-old-holder"})
    finally:
        if first.process is not None and first.process.poll() is None:
            first.process.send_signal(signal.SIGCONT)
        first.stop()
        second.stop()
    assert taken.status_code == 200, taken.text
    assert unready.status_code == 503 and "chain writer stopped" in unready.json()["checks"]["signer"], unready.text
    assert refused.status_code == 503 and refused.headers["content-type"].startswith("application/problem+json")
    assert str(second.process.pid) in first.log(), first.log()
    store = open_store((home / "store").as_uri())
    assert read_decision(store, "after-takeover").body.request_id == "after-takeover"
    report = verify_store(store)
    assert report.ok, report.first_failure

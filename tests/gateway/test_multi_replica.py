"""Two real gateway processes sharing one S3 Object Lock store (moto over HTTP).

Each replica writes its own chain (one by ``VERDICT_CHAIN_ID``, the other by
the StatefulSet pod name ``POD_NAME=gateway-1``); the request index is shared
and write-once, so a request id sent to both replicas at once is decided once.
The nightly immutability test runs against the live store without touching
the gateway chains, and a key rotation keeps the gateway verifying.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import httpx
import pytest

from tests.audit.test_immutability import MOTO_EXPECTED
from tests.gateway.conftest import PROJECT, auth
from tests.support.gateway_server import GatewayServer, prepare_home
from verdict.audit.immutability import TrailView
from verdict.audit.reader import read_decision
from verdict.audit.records import KeyRotationBody
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store
from verdict.gateway.datasets import load_dataset

ROWS = load_dataset("german-credit").rows
REGION = "us-east-1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, trained_dirs, moto_server):
    from verdict.audit.stores.s3 import create_audit_bucket

    with pytest.MonkeyPatch.context() as mp:
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_CONFIG_FILE", os.devnull),
            ("AWS_SHARED_CREDENTIALS_FILE", os.devnull),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ):
            mp.setenv(name, value)
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "VERDICT_CHAIN_ID",
            "VERDICT_STORE",
            "POD_NAME",
        ):
            mp.delenv(name, raising=False)
        bucket = f"replicas-{uuid.uuid4().hex[:12]}"
        create_audit_bucket(boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name=REGION), bucket, 1)
        url = f"s3://{bucket}/trail?endpoint_url={moto_server.endpoint_url}&region={REGION}&retention_days=1&timeout=5"
        servers = []
        # One trust root for the deployment (production: a KMS key), so each replica's chain
        # and every lookup across replicas verify under the same policy.
        root_file = tmp_path_factory.mktemp("trust-root") / "root.pem"
        RootKey.load_or_create(root_file)
        # One data keyring for the deployment too: a decision sealed by one replica opens on the other.
        keyring = tmp_path_factory.mktemp("keyring")
        for n, env in enumerate(({"VERDICT_CHAIN_ID": "gateway-0"}, {"POD_NAME": "gateway-1"})):
            home = tmp_path_factory.mktemp(f"replica-{n}")
            tokens = prepare_home(home, trained_dirs["german-credit"], store_url=url)
            server = GatewayServer(
                home,
                env={
                    "VERDICT_STORE": url,
                    "VERDICT_TRUST_ROOT": str(root_file),
                    "VERDICT_KEYRING": str(keyring),
                    **env,
                },
            )
            server.tokens = tokens
            servers.append(server)
        try:
            for server in servers:
                server.start(wait=False)
            for server in servers:
                server.wait_ready()
            yield servers, url
        finally:
            for server in servers:
                server.stop()


def chain_records(store, chain_id: str):
    from verdict.audit import layout
    from verdict.audit.records import decode_record, iter_lines, split_line

    for key in store.list_keys(layout.segments_prefix(chain_id)):
        for line in iter_lines(store.get(key)):
            yield decode_record(split_line(line)[0])


def _body(i: int, request_id: str) -> dict:
    return {"model": "german-credit", "request_id": request_id, "attributes": ROWS[i % len(ROWS)]}


async def _post(pairs: list[tuple[GatewayServer, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(f"{server.url}/v1/decisions", json=body, headers=auth(server.tokens["client"]))
                for server, body in pairs
            )
        )


def test_same_request_id_on_both_replicas_is_decided_once(replicas):
    (r0, r1), url = replicas
    ids = [f"both-{n:03d}" for n in range(12)]
    own = [(r0, _body(100 + n, f"only0-{n}")) for n in range(5)] + [
        (r1, _body(200 + n, f"only1-{n}")) for n in range(5)
    ]
    pairs = [(server, _body(n, rid)) for n, rid in enumerate(ids) for server in (r0, r1)]
    responses = asyncio.run(_post(pairs + own))
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text for r in responses if r.status_code != 200
    ]
    answers = [r.json() for r in responses]
    for n, rid in enumerate(ids):
        a, b = answers[2 * n], answers[2 * n + 1]
        assert a["receipt"] == b["receipt"] and a["score"] == b["score"] and a["decision"] == b["decision"], rid
        assert sorted([a["idempotent_replay"], b["idempotent_replay"]]) == [False, True], rid
    assert {a["receipt"]["chain_id"] for a in answers[len(pairs) : len(pairs) + 5]} == {"gateway-0"}
    assert {a["receipt"]["chain_id"] for a in answers[len(pairs) + 5 :]} == {"gateway-1"}  # from POD_NAME

    # the same id with another payload is a conflict on either replica
    other = asyncio.run(_post([(r1, _body(50, ids[0])), (r0, _body(50, ids[0]))]))
    assert [r.status_code for r in other] == [409, 409]

    store = open_store(url)
    for n, rid in enumerate(ids):
        verified = read_decision(store, rid)
        assert (verified.chain_id, verified.seq, verified.record_hash) == (
            answers[2 * n]["receipt"]["chain_id"],
            answers[2 * n]["receipt"]["seq"],
            answers[2 * n]["receipt"]["record_hash"],
        )
    report = verify_store(TrailView(store), trust=RootKey.load(Path(r0.env["VERDICT_TRUST_ROOT"])).policy())
    assert report.ok and report.anchored, report.first_failure
    chains = {c.chain_id: c for c in report.chains}
    assert {"gateway-0", "gateway-1"} <= set(chains) and all(chains[c].records > 5 for c in ("gateway-0", "gateway-1"))
    # a racing loser's record stays in its chain as a superseded duplicate (a note, never a failure)
    assert {n.reason for n in report.notes} <= {
        "superseded_duplicate",
        "not_yet_checkpointed",
        "index_pending",
        "written_during_verification",
        "no_checkpoint",
        "registry_unbound",
    }  # the test set-up registers without a log
    # a lookup on one replica finds and verifies a decision made on the other
    with httpx.Client(timeout=30) as client:
        view = client.get(f"{r1.url}/v1/decisions/only0-0/explanation", headers=auth(r1.tokens["staff"]))
    assert view.status_code == 200 and view.json()["verification"]["status"] in (
        "verified",
        "verified_pending_checkpoint",
    )


def test_immutability_test_against_the_live_replicas(replicas, tmp_path):
    (r0, r1), url = replicas
    asyncio.run(_post([(r0, _body(1, "imm-live-0")), (r1, _body(2, "imm-live-1"))]))
    store = open_store(url)
    before = {c.chain_id: c.records for c in verify_store(TrailView(store)).chains}
    env = {
        **os.environ,
        "VERDICT_HOME": str(tmp_path / "cron-home"),  # the CronJob's own key, the shared root
        "VERDICT_TRUST_ROOT": r0.env["VERDICT_TRUST_ROOT"],
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verdict",
            "audit",
            "immutability-test",
            "--store",
            url,
            "--json",
            str(tmp_path / "ev.json"),
            "--junit",
            str(tmp_path / "junit.xml"),
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # moto's honest FAILED probes
    report = json.loads((tmp_path / "ev.json").read_text())
    # the gateways lengthened each decision segment's lock to the retention policy (five years)
    assert {p["name"]: p["status"] for p in report["probes"]} == {
        **MOTO_EXPECTED,
        "retention_matches_policy": "enforced",
    }
    target = next(p for p in report["probes"] if p["name"] == "record_delete_version")["evidence"]["key"]
    assert target.startswith("trail/chains/gateway-")
    after = {c.chain_id: c.records for c in verify_store(TrailView(store)).chains}
    assert {k: after[k] for k in ("gateway-0", "gateway-1")} == {k: before[k] for k in ("gateway-0", "gateway-1")}
    assert after["immutability-0"] >= 2 and report["filed"]["receipt"]["chain_id"] == "immutability-0"
    # the gateways never noticed
    again = asyncio.run(_post([(r0, _body(3, "imm-live-2")), (r1, _body(4, "imm-live-3"))]))
    assert [r.status_code for r in again] == [200, 200]


def test_key_rotation_keeps_the_gateway_verifying(replicas):
    (r0, r1), url = replicas
    old = asyncio.run(_post([(r0, _body(9, "before-rotation"))]))[0].json()
    r0.stop()
    env = {
        **os.environ,
        "VERDICT_HOME": str(r0.home),
        "VERDICT_STORE": url,
        "VERDICT_TRUST_ROOT": r0.env["VERDICT_TRUST_ROOT"],
    }
    rotated = subprocess.run(
        [sys.executable, "-m", "verdict", "keys", "rotate", "--chain", "gateway-0", "--reason", "scheduled"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    r0.start()
    new = asyncio.run(_post([(r0, _body(10, "after-rotation"))]))[0].json()
    assert new["receipt"]["chain_id"] == "gateway-0" and new["receipt"]["key_id"] != old["receipt"]["key_id"]
    with httpx.Client(timeout=30) as client:  # the old decision still verifies, from either replica
        for server in (r0, r1):
            view = client.get(
                f"{server.url}/v1/decisions/before-rotation/explanation", headers=auth(server.tokens["staff"])
            )
            assert view.status_code == 200 and view.json()["verification"]["status"] in (
                "verified",
                "verified_pending_checkpoint",
            )
    store = open_store(url)
    report = verify_store(TrailView(store), trust=RootKey.load(Path(r0.env["VERDICT_TRUST_ROOT"])).policy())
    assert report.ok, report.first_failure
    assert report.anchored
    gateway0 = next(c for c in report.chains if c.chain_id == "gateway-0")
    assert gateway0.keys == [old["receipt"]["key_id"], new["receipt"]["key_id"]]
    rotations = [r for r in chain_records(store, "gateway-0") if isinstance(r.body, KeyRotationBody)]
    assert len(rotations) == 1 and rotations[0].key_id == old["receipt"]["key_id"]


def test_a_second_gateway_on_a_taken_chain_refuses_to_start_naming_the_holder(replicas, trained_dirs, tmp_path):
    """The same chain id configured twice: the second `verdict serve` exits at
    start-up naming the lease holder; the first keeps serving (issue 15 item 6)."""
    (r0, _r1), url = replicas
    home = tmp_path / "intruder"
    prepare_home(home, trained_dirs["german-credit"], store_url=url)
    intruder = GatewayServer(home, env={"VERDICT_STORE": url, "VERDICT_CHAIN_ID": "gateway-0"})
    try:
        intruder.start(wait=False)
        intruder.process.wait(timeout=180)
    finally:
        intruder.stop()
    log = intruder.log()
    assert intruder.process.returncode != 0, log
    assert "cannot start: LeaseHeld: another writer owns chain 'gateway-0'" in log, log
    assert f"pid {r0.process.pid}" in log and "verdict serve" in log, log
    assert httpx.get(r0.url + "/readyz", timeout=10).status_code == 200  # the holder was not cut off
    response = httpx.post(
        f"{r0.url}/v1/decisions",
        json=_body(7, f"after-intruder-{uuid.uuid4().hex[:8]}"),
        headers=auth(r0.tokens["client"]),
        timeout=60,
    )
    assert response.status_code == 200, response.text

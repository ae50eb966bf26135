"""Data-subject rights end to end (issue 18), over real HTTP against a real ``verdict serve``,
on the filesystem store and on S3 Object Lock (moto's server over HTTP):

decide for several subjects -> access by subject -> export one -> erase one -> the trail
still verifies, lookups answer 410 naming the erasure record, replay says ``erased``, the
index no longer resolves the subject, and every other subject is untouched and still
replays ``identical``; a legal hold refuses erasure; a retention sweep erases exactly the
expired subjects; a process stopped in the middle of an erasure is finished on restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import auth
from tests.support.gateway_server import PROJECT, GatewayServer, prepare_home
from tests.support.s3_fixtures import REGION
from verdict.audit.index import RequestIndex
from verdict.audit.personal_data import DEFAULT_RETENTION_DAYS
from verdict.audit.reader import read_decision
from verdict.audit.records import ErasureBody, SealedInputs, decode_record, iter_lines, parse_time, split_line
from verdict.audit.stores import open_store
from verdict.audit.verifier import verify_store
from verdict.gateway.datasets import load_dataset

ROWS = load_dataset("german-credit").rows
SUBJECTS = {"alice-\u00e9-1": 3, "bob-2": 2, "carol-3": 1}
"""Subject id -> how many decisions about them."""
_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class Site:
    """One gateway home with its store, server and the commands an operator would run."""

    def __init__(self, home: Path, store_url: str, env: dict[str, str], tokens: dict[str, str]) -> None:
        self.home, self.store_url, self.env, self.tokens = home, store_url, env, tokens
        self.server = GatewayServer(home, env=env)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "VERDICT_HOME": str(self.home), "VERDICT_STORE": self.store_url}
        return subprocess.run(
            [sys.executable, "-m", "verdict", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
        )

    def store(self):
        return open_store(self.store_url)

    @property
    def on_s3(self) -> bool:
        return self.store_url.startswith("s3://")

    def client(self, role: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=auth(self.tokens[role]), timeout=60)


def _decide_for_everyone(site: Site) -> dict[str, list[str]]:
    made: dict[str, list[str]] = {}
    n = 0
    with site.client("client") as client:
        for subject, count in SUBJECTS.items():
            for _ in range(count):
                request_id = f"sr-{n:03d}"
                body = {
                    "model": "german-credit",
                    "request_id": request_id,
                    "subject_id": subject,
                    "attributes": ROWS[n],
                }
                answer = client.post("/v1/decisions", json=body)
                assert answer.status_code == 200, answer.text
                assert answer.json()["reasons"] and answer.json()["reasons"][0]["value"]  # the answer is in clear
                made.setdefault(subject, []).append(request_id)
                n += 1
        answer = client.post(
            "/v1/decisions", json={"model": "german-credit", "request_id": "sr-anon", "attributes": ROWS[n]}
        )
        assert answer.status_code == 200
    return made


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def site(request, tmp_path_factory, trained_dirs):
    home = tmp_path_factory.mktemp(f"subjects-{request.param}")
    env: dict[str, str] = {}
    if request.param == "s3":
        moto = request.getfixturevalue("moto_server")
        import boto3

        from verdict.audit.stores.s3 import create_audit_bucket

        client = boto3.client(
            "s3",
            endpoint_url=moto.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        bucket = f"subjects-{os.getpid()}"
        create_audit_bucket(client, bucket, default_retention_days=1)
        store_url = f"s3://{bucket}/trail?endpoint_url={moto.endpoint_url}&region={REGION}&retention_days=1&timeout=5"
        env = {**_AWS, "VERDICT_STORE": store_url}
    else:
        store_url = (home / "store").as_uri()
    with pytest.MonkeyPatch.context() as patch:  # this process talks to moto too (registration, checks)
        for name, value in (_AWS if request.param == "s3" else {}).items():
            patch.setenv(name, value)
        tokens = prepare_home(home, trained_dirs["german-credit"], store_url)
        made = Site(home, store_url, env, tokens)
        made.server.start()
        try:
            made.decisions = _decide_for_everyone(made)  # type: ignore[attr-defined]
            yield made
        finally:
            made.server.stop()


def _segments(store, chain: str):
    from verdict.audit import layout

    for key in sorted(store.list_keys(layout.segments_prefix(chain))):
        for line in iter_lines(store.get(key)):
            yield decode_record(split_line(line)[0])


def test_records_hold_personal_data_only_sealed(site):
    store = site.store()
    decisions = [r.body for r in _segments(store, "gateway-0") if type(r.body).__struct_config__.tag == "decision"]
    assert len(decisions) == sum(SUBJECTS.values()) + 1
    for body in decisions:
        assert isinstance(body.inputs, SealedInputs) and body.subject_id is None
        assert all(r.value is None and r.text is None for r in body.reasons)
    raw = b"".join(store.get(k) for k in store.list_keys("chains/gateway-0/segments/"))
    for subject in SUBJECTS:
        assert subject.encode() not in raw and json.dumps(subject)[1:-1].encode() not in raw
    keys = {b.request_id: b.inputs.key_ref for b in decisions}
    alice = site.decisions["alice-\u00e9-1"]
    assert len({keys[r] for r in alice}) == 1  # one key per subject
    assert keys["sr-anon"] not in {keys[r] for r in keys if r != "sr-anon"}  # a key of its own


def test_subject_access_finds_every_decision_explained_and_verified(site):
    with site.client("staff") as staff:
        answer = staff.get("/v1/subjects/alice-\u00e9-1/decisions")
        assert answer.status_code == 200, answer.text
        view = answer.json()
        assert sorted(d["request_id"] for d in view["decisions"]) == site.decisions["alice-\u00e9-1"]
        for decision in view["decisions"]:
            assert decision["subject_id"] == "alice-\u00e9-1" and decision["reasons"]
            assert decision["verification"]["signature_valid"] and decision["verification"]["record_hash"]
        assert staff.get("/v1/subjects/nobody/decisions").json()["decisions"] == []
    with site.client("client") as client:  # scope explain
        assert client.get("/v1/subjects/alice-\u00e9-1/decisions").status_code == 403


def test_export_writes_json_and_a_letter(site, tmp_path):
    result = site.cli("subjects", "export", "bob-2", "--out", str(tmp_path / "bob"))
    assert result.returncode == 0, result.stderr
    exported = json.loads((tmp_path / "bob" / "decisions.json").read_text())
    assert sorted(d["request_id"] for d in exported["decisions"]) == site.decisions["bob-2"]
    letter = (tmp_path / "bob" / "letter.html").read_text()
    for request_id in site.decisions["bob-2"]:
        assert request_id in letter
    access = [r.body for r in _segments(site.store(), "subjects") if type(r.body).__struct_config__.tag == "access"]
    assert {a.target_request_id for a in access if a.action == "subject_access"} >= set(site.decisions["bob-2"])


def _object_holds(site: Site, request_ids: list[str]) -> set[str | None]:
    """The Object Lock legal-hold status of the segments holding these decisions (S3)."""
    store = site.store()
    index = RequestIndex(store)
    entries = [index.get(r) for r in request_ids]
    return {store.retention(e.segment_key, e.segment_version).legal_hold for e in entries}


def test_legal_hold_refuses_erasure_until_released(site):
    held = site.cli("subjects", "hold", "carol-3", "--basis", "litigation hold, case 7")
    assert held.returncode == 0, held.stderr
    if site.on_s3:
        assert _object_holds(site, site.decisions["carol-3"]) == {"ON"}
    with site.client("admin") as admin:
        refused = admin.request("DELETE", "/v1/subjects/carol-3", json={"basis": "GDPR Art. 17"})
        assert refused.status_code == 409 and refused.json()["type"].endswith("/legal-hold"), refused.text
    assert site.cli("subjects", "erase", "carol-3", "--basis", "GDPR Art. 17").returncode != 0
    released = site.cli("subjects", "release", "carol-3", "--basis", "case 7 closed")
    assert released.returncode == 0, released.stderr
    if site.on_s3:
        assert _object_holds(site, site.decisions["carol-3"]) == {"OFF"}
    with site.client("staff") as staff:  # nothing was erased by the refusals
        assert staff.get(f"/v1/decisions/{site.decisions['carol-3'][0]}/explanation").status_code == 200


def test_erasure_lifecycle(site):
    alice = site.decisions["alice-\u00e9-1"]
    with site.client("admin") as admin:
        no_basis = admin.request("DELETE", "/v1/subjects/alice-\u00e9-1", json={})
        assert no_basis.status_code == 422 and "basis" in no_basis.text
        done = admin.request("DELETE", "/v1/subjects/alice-\u00e9-1", json={"basis": "GDPR Art. 17(1)(a), DPO-114"})
        assert done.status_code == 200, done.text
        erasure = done.json()
        assert sorted(erasure["erased_decisions"]) == alice and erasure["record"]["chain_id"] == "subjects"
        again = admin.request("DELETE", "/v1/subjects/alice-\u00e9-1", json={"basis": "again"})
        assert again.status_code == 404  # the index no longer resolves the subject
    store = site.store()
    report = verify_store(store)
    assert report.ok, report.failures
    erasures = [r for r in _segments(store, "subjects") if isinstance(r.body, ErasureBody)]
    assert erasures[-1].seq == erasure["record"]["seq"] and erasures[-1].body.request_ids == alice
    with site.client("staff") as staff:
        for path in (f"/v1/decisions/{alice[0]}/explanation", f"/v1/decisions/{alice[0]}"):
            gone = staff.get(path)
            assert gone.status_code == 410 and gone.headers["content-type"].startswith("application/problem+json")
            assert gone.json()["erasure"]["seq"] == erasure["record"]["seq"]
            assert gone.json()["erasure"]["record_hash"] == erasure["record"]["record_hash"]
        assert staff.get("/v1/subjects/alice-\u00e9-1/decisions").json()["decisions"] == []
        bob = staff.get(f"/v1/decisions/{site.decisions['bob-2'][0]}/explanation")
        assert bob.status_code == 200 and bob.json()["subject_id"] == "bob-2"
    with site.client("client") as client:  # the same request again: the logged decision is gone
        body = {"model": "german-credit", "request_id": alice[0], "subject_id": "alice-\u00e9-1", "attributes": ROWS[0]}
        assert client.post("/v1/decisions", json=body).status_code == 410
    out = site.home / "replay-report.json"
    replay = site.cli(
        "replay",
        alice[0],
        site.decisions["bob-2"][0],
        "--allow-pending",
        "--workers",
        "0",
        "--no-progress",
        "--json",
        str(out),
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    verdicts = {d["request_id"]: d["verdict"] for d in json.loads(out.read_text())["report"]["decisions"]}
    assert verdicts == {alice[0]: "erased", site.decisions["bob-2"][0]: "identical"}


def test_retention_sweep_erases_exactly_the_expired(site):
    with site.client("staff") as staff:
        listing = {s: staff.get(f"/v1/subjects/{s}/decisions").json()["decisions"] for s in ("bob-2", "carol-3")}
    assert all(listing.values())
    not_yet = site.cli("retention", "sweep")
    assert not_yet.returncode == 0 and json.loads(not_yet.stdout)["erased_keys"] == 0, not_yet.stderr
    held = site.cli("subjects", "hold", "bob-2", "--basis", "regulator inquiry 12")
    assert held.returncode == 0, held.stderr
    later = site.cli("retention", "sweep", "--now", "2099-01-01T00:00:00.000000Z")
    assert later.returncode == 0, later.stderr
    swept = json.loads(later.stdout)
    # carol and the decision without a subject expire; bob is held; alice was erased before
    assert swept["erased_keys"] == 2 and swept["erased_decisions"] == 2
    with site.client("staff") as staff:
        assert staff.get(f"/v1/decisions/{site.decisions['carol-3'][0]}/explanation").status_code == 410
        assert staff.get("/v1/decisions/sr-anon/explanation").status_code == 410
        assert staff.get(f"/v1/decisions/{site.decisions['bob-2'][0]}/explanation").status_code == 200
    causes = [r.body.cause for r in _segments(site.store(), "subjects") if isinstance(r.body, ErasureBody)]
    assert causes.count("retention") == 2
    assert verify_store(site.store()).ok


@pytest.mark.parametrize("site", ["s3"], indirect=True)  # the filesystem store has no retention dates
def test_segments_are_locked_as_long_as_the_retention_policy_requires(site, tmp_path):
    """S3: written with the store's 1-day retention, each decision segment is lengthened to
    decided_at + the model's retention (default five years); the immutability test checks it."""
    store = site.store()
    index = RequestIndex(store)
    for request_ids in site.decisions.values():
        for request_id in request_ids:
            entry = index.get(request_id)
            lock = store.retention(entry.segment_key, entry.segment_version)
            decided = parse_time(read_decision(store, request_id, prove=False).body.decided_at)
            assert lock.mode == "COMPLIANCE" and lock.retain_until >= decided + dt.timedelta(
                days=DEFAULT_RETENTION_DAYS
            )
    result = site.cli("audit", "immutability-test", "--json", str(tmp_path / "evidence.json"))
    report = json.loads((tmp_path / "evidence.json").read_text())
    probe = next(p for p in report["probes"] if p["name"] == "retention_matches_policy")
    assert probe["status"] == "enforced" and probe["evidence"]["checked"] >= 1, (probe, result.stderr)

"""Bring-your-own models end to end (issue 17): packaged, registered, promoted,
served, decided, looked up and replayed through one real gateway.

One real ``verdict serve`` process on loopback serves three models a user
brought: the claims-triage example (a factory and a weights file), a program
the user exported with ``torch.export`` (``[model] artifact = "model.pt2"``),
and a claim-cost regression (``kind = "score"``) packaged from an ``nn.Module``
in memory, later upgraded to 2.0.0. Real filesystem store, real signatures,
the real CLI (``python -m verdict ...`` in fresh processes) for one
registration, every promotion, the revocation, ``models show``, the final
replay and ``audit verify``; the other registrations run in this process
through the same ``Registry`` and registry chain (the CLI validates again in
its own process, seconds per model).

Every decision made here is remembered with the model version that made it;
the last test stops the server (its shutdown writes the final signed
checkpoint), replays the whole trail with ``verdict replay --all`` and expects
every one of them ``identical`` against the version its record names, then
``verdict audit verify`` to pass.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import verdict
from tests.gateway.conftest import auth, run_verdict
from tests.support.byo_models import package_claims_example, tiny_frame, tiny_package
from tests.support.gateway_server import GatewayServer
from tests.support.model_dirs import write_model_dir
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import WormStore, open_store
from verdict.audit.trust import RootKey
from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.manifest import Manifest, decode_manifest
from verdict.gateway.model_files import HELDOUT_FILE, MANIFEST_FILE, HeldOut
from verdict.gateway.registry import Registry
from verdict.gateway.registry_log import RegistryLog
from verdict.preprocessing import AttributeSpec, TabularEncoder, encode_frame, heldout_mask, infer_schema

PROBLEM = "application/problem+json"
CLAIMS = "claims-triage"
EXPORTED = "risk-exported"
COST = "claim-cost"
EXAMINER_PURPOSE = "issue 17 end-to-end test"


# -- the models a user brings ----------------------------------------------------------------------


def claim_costs(rows: int = 1500, seed: int = 20261207) -> pd.DataFrame:
    """Synthetic settled motor claims and what each cost (EUR), from a seeded generator."""
    rng = np.random.Generator(np.random.PCG64(seed))
    vehicle_class = rng.choice(["compact", "estate", "suv", "van"], rows)
    class_cost = pd.Series(vehicle_class).map({"compact": 0.0, "estate": 150.0, "suv": 400.0, "van": 250.0})
    frame = pd.DataFrame(
        {
            "vehicle_value": np.round(rng.lognormal(9.6, 0.5, rows), 2),
            "repair_hours": np.round(rng.gamma(2.0, 3.0, rows), 1),
            "parts_replaced": rng.integers(0, 10, rows),
            "vehicle_class": vehicle_class,
            "region": rng.choice(["east", "north", "south", "west"], rows),
        }
    )
    noise = rng.normal(0.0, 60.0, rows)
    frame["cost"] = np.round(
        180
        + 0.015 * frame["vehicle_value"]
        + 75 * frame["repair_hours"]
        + 110 * frame["parts_replaced"]
        + class_cost.to_numpy()
        + noise,
        2,
    )
    return frame


COST_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "vehicle_value": {"label": "Value of the vehicle", "unit": "EUR", "minimum": 0, "maximum": 500000},
    "repair_hours": {"label": "Estimated repair hours", "unit": "hours", "minimum": 0, "maximum": 400},
    "parts_replaced": {"label": "Parts replaced", "minimum": 0, "maximum": 60},
    "vehicle_class": {"label": "Vehicle class"},
    "region": {"label": "Region of the garage"},
}


class ClaimCost(nn.Module):
    """Encoded claim attributes ``[B, d]`` -> expected cost in EUR ``[B]`` (a linear model)."""

    def __init__(self, specs: tuple[AttributeSpec, ...]) -> None:
        super().__init__()
        self.encoder = TabularEncoder(specs, scaling={"vehicle_value": "asinh"})
        self.linear = nn.Linear(self.encoder.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.encoder(x)).squeeze(-1)


def fit_claim_cost(frame: pd.DataFrame, *, resample_seed: int | None = None, inflation: float = 1.0) -> ClaimCost:
    """Least squares on the rows the packager will not hold out; ``resample_seed``: on a
    bootstrap sample of them instead (another version's weights)."""
    specs = infer_schema(frame, target="cost", overrides=COST_ATTRIBUTES)
    train = frame[~heldout_mask(frame)].reset_index(drop=True)
    if resample_seed is not None:
        picks = np.random.Generator(np.random.PCG64(resample_seed)).integers(0, len(train), len(train))
        train = train.iloc[picks].reset_index(drop=True)
    x = encode_frame(train, specs)
    model = ClaimCost(specs)
    model.encoder.fit_to(x)
    with torch.no_grad():
        features = model.encoder(torch.from_numpy(x)).double().numpy()
    design = np.c_[features, np.ones(len(features))]
    coef, *_ = np.linalg.lstsq(design, train["cost"].to_numpy(dtype=np.float64) * inflation, rcond=None)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(coef[:-1]).float()[None, :])
        model.linear.bias.fill_(float(coef[-1]))
    return model.eval()


def package_claim_cost(out: Path, version: str, model: ClaimCost, frame: pd.DataFrame) -> Path:
    """``verdict.package`` of an nn.Module and a DataFrame: the Python API route."""
    return verdict.package(
        model,
        frame,
        out=out,
        name=COST,
        version=version,
        target="cost",
        kind="score",
        description="Expected cost of a motor claim (issue 17 end-to-end test model)",
        decision={"threshold": 2000.0, "at_or_above": "adjuster-review", "below": "fast-settle"},
        attributes=COST_ATTRIBUTES,
        settings={"explainer": {"background_rows": 12}, "training": {"seed": 7}},
    )


class ExportedRisk(nn.Module):
    """Encoded applicant attributes -> probability of ``bad``; exported by the user, not by Verdict."""

    def __init__(self, specs: tuple[AttributeSpec, ...], x: np.ndarray) -> None:
        super().__init__()
        self.encoder = TabularEncoder.fit(specs, x, scaling={"income": "asinh"})
        self.linear = nn.Linear(self.encoder.width, 1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.encoder(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def export_risk_model(directory: Path) -> Path:
    """Train a small logistic model on ``tiny_frame`` and save it with torch.export (a dynamic
    batch dimension) as ``directory/model.pt2``, beside a spec that names that artifact."""
    frame = tiny_frame()
    specs = infer_schema(frame, target="bad", exclude=["cost"])
    x = torch.from_numpy(encode_frame(frame, specs))
    y = torch.from_numpy(frame["bad"].to_numpy(dtype=np.float32))
    torch.manual_seed(3)
    model = ExportedRisk(specs, x.numpy())
    optimiser = torch.optim.Adam(model.linear.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model.logit(x), y).backward()
        optimiser.step()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model.eval(), (x[:16],), dynamic_shapes=({0: batch},))
    directory.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, directory / "model.pt2")
    return tiny_package(
        directory,
        frame=frame,
        factory=None,
        spec={
            "name": EXPORTED,
            "description": "A user's own torch.export program (issue 17 end-to-end test model)",
            "model": {"artifact": "model.pt2"},
        },
    )


def heldout_rows(directory: Path) -> list[dict[str, Any]]:
    return msgspec.json.decode((directory / HELDOUT_FILE).read_bytes(), type=HeldOut).rows


def manifest_of(directory: Path) -> Manifest:
    return decode_manifest((directory / MANIFEST_FILE).read_bytes())


# -- one gateway home, one server ------------------------------------------------------------------


@dataclass
class World:
    home: Path
    env: dict[str, str]
    tokens: dict[str, str]
    registry: Registry
    dirs: dict[str, Path]
    rows: dict[str, list[dict[str, Any]]]
    server: GatewayServer | None = None
    made: dict[str, str] = field(default_factory=dict)
    """Every decision made in this module: request id -> ``name:version`` that made it."""

    @property
    def store(self) -> WormStore:
        return self.registry.store

    def cli(self, *args: str) -> Any:
        return run_verdict(*args, env=self.env)

    def client(self) -> httpx.Client:
        assert self.server is not None
        return httpx.Client(base_url=self.server.url, timeout=60)


def recorded_registry(home: Path) -> Registry:
    """The registry as ``verdict models register`` opens it, in this process: the home's
    store, its signing key and trust root, every change recorded on the registry chain
    (``RegistryLog.local`` reads $VERDICT_HOME; this process's environment is not the home's)."""
    store = open_store((home / "store").as_uri())
    keys = FileKeyStore(home / "keys")
    signer, _ = keys.init()
    root, _ = RootKey.load_or_create(home / "trust" / "root.pem")
    return Registry(store, events=RegistryLog(store, signer, keyring=keys, root=root))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("byo-e2e")
    home = work / "home"
    home.mkdir()
    registry = recorded_registry(home)
    keys = ApiKeyStore(home / "apikeys.json")
    roles = {"client": ["score"], "staff": ["explain"], "examiner": ["replay"], "admin": ["admin"]}
    tokens = {role: keys.create(scopes, name=role)[1] for role, scopes in roles.items()}
    # the home's store and trust root, whatever this process's environment says
    env = {"VERDICT_HOME": str(home), "VERDICT_STORE": "", "VERDICT_TRUST_ROOT": "", "COLUMNS": "200"}

    claims = package_claims_example(work / "claims").directory  # factory + weights, validated
    frame = claim_costs()
    cost = package_claim_cost(work / "cost-1", "1.0.0", fit_claim_cost(frame), frame)  # validated
    # not validated here: `verdict models register` below validates it (registration always does)
    exported = verdict.package(export_risk_model(work / "exported"), out=work / "exported" / "packaged", validate=False)
    dirs = {CLAIMS: claims, EXPORTED: exported, COST: cost}

    # In this process (the packager's passing report is reused: same bytes, same process) ...
    for directory in (claims, cost):
        manifest, new = registry.register(directory, by="test-setup")
        assert new, manifest.ref
        promoted = run_verdict("models", "promote", manifest.ref, "--by", "model-risk", env=env)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert f"production alias of {manifest.name} -> 1.0.0" in promoted.stdout
    result = World(
        home=home,
        env=env,
        tokens=tokens,
        registry=registry,
        dirs=dirs,
        rows={name: heldout_rows(directory) for name, directory in dirs.items()},
        server=GatewayServer(home, env=env).start(wait=False),
    )
    assert result.server is not None
    try:
        # ... and one through the real command while the gateway starts: it validates in its own process.
        registered = run_verdict("models", "register", str(exported), env=env)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert f"registered {EXPORTED}:1.0.0" in registered.stdout
        assert f"serves nothing until promoted: verdict models promote {EXPORTED}:1.0.0" in registered.stdout
        promoted = run_verdict("models", "promote", f"{EXPORTED}:1.0.0", "--by", "model-risk", env=env)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        result.server.wait_ready()
        yield result
    finally:
        result.server.stop()


# -- helpers over HTTP -----------------------------------------------------------------------------


def decide(
    world: World,
    client: httpx.Client,
    model: str,
    request_id: str,
    attributes: dict[str, Any],
    version: str | None = None,
) -> httpx.Response:
    """POST /v1/decisions; a decision made is remembered with the version that made it."""
    body: dict[str, Any] = {"model": model, "request_id": request_id, "attributes": attributes}
    if version is not None:
        body["version"] = version
    response = client.post("/v1/decisions", json=body, headers=auth(world.tokens["client"]))
    if response.status_code == 200:
        made = response.json()["model"]
        world.made[request_id] = f"{made['name']}:{made['version']}"
    return response


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    return body


def check_decision(answer: dict[str, Any], manifest: Manifest) -> None:
    """A decision's body: the score, the decision the manifest's rule gives it, one contribution
    per input that adds up to the score, and reasons in words."""
    names = [s.name for s in manifest.inputs]
    assert set(answer) >= {"request_id", "model", "score", "decision", "reasons", "contributions", "base_value"}
    assert answer["model"]["sha256"] == manifest.artifact_sha256
    assert isinstance(answer["score"], float) and math.isfinite(answer["score"])
    rule = manifest.decision
    assert answer["decision"] == (rule.at_or_above if answer["score"] >= rule.threshold else rule.below)
    assert list(answer["contributions"]) == names
    total = math.fsum([answer["base_value"], *answer["contributions"].values()])
    assert abs(total - answer["score"]) <= manifest.explainer.additivity_epsilon
    assert answer["reasons"], answer
    for reason in answer["reasons"]:
        assert reason["attribute"] in names and reason["text"] and reason["label"]
        assert reason["contribution"] == answer["contributions"][reason["attribute"]]
    if manifest.output.space == "probability":
        assert 0.0 <= answer["score"] <= 1.0


def check_lookups(world: World, client: httpx.Client, answer: dict[str, Any]) -> dict[str, Any]:
    """The signed record and the explanation say exactly what the decision said; returns the record body."""
    request_id = answer["request_id"]
    record = client.get(f"/v1/decisions/{request_id}", headers=auth(world.tokens["staff"]))
    assert record.status_code == 200, record.text
    view = record.json()
    body = view["record"]["body"]
    assert view["verification"]["signature_valid"] is True
    assert view["verification"]["record_hash"] == answer["receipt"]["record_hash"]
    assert body["model"] == answer["model"]
    assert body["score"] == answer["score"] and body["decision"] == answer["decision"]
    assert body["explanation"]["contributions"] == answer["contributions"]
    assert body["explanation"]["base_value"] == answer["base_value"]
    said = [{k: r[k] for k in ("attribute", "label", "value", "direction", "text")} for r in answer["reasons"]]
    # the record holds the applicant's values sealed (spec §3a); the lookup opens them
    assert body["reasons"] == [{k: r[k] for k in ("attribute", "label", "direction")} for r in said]
    assert view["opened"]["reasons"] == said and body["inputs"]["kind"] == "sealed"

    explained = client.get(f"/v1/decisions/{request_id}/explanation", headers=auth(world.tokens["staff"]))
    assert explained.status_code == 200, explained.text
    gdpr = explained.json()
    assert gdpr["model"] == answer["model"]
    assert (gdpr["score"], gdpr["decision"], gdpr["base_value"]) == (
        answer["score"],
        answer["decision"],
        answer["base_value"],
    )
    assert gdpr["contributions"] == answer["contributions"] and gdpr["reasons"] == said
    assert gdpr["verification"]["status"] in ("verified", "verified_pending_checkpoint")
    return body


def replay_over_http(world: World, client: httpx.Client, request_ids: list[str]) -> dict[str, Any]:
    """An examiner's replay of these decisions (POST /v1/replays, polled); the signed report."""
    headers = auth(world.tokens["examiner"])
    started = client.post(
        "/v1/replays",
        headers=headers,
        json={"request_ids": request_ids, "require_checkpoint": False, "purpose": EXAMINER_PURPOSE},
    )
    assert started.status_code == 202, started.text
    replay_id = started.json()["replay_id"]
    status = started.json()
    for _ in range(1200):  # status polls
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
        status = client.get(f"/v1/replays/{replay_id}", headers=headers).json()
    assert status["state"] == "finished", status
    envelope = client.get(f"/v1/replays/{replay_id}/report.json", headers=headers)
    assert envelope.status_code == 200, envelope.text
    return envelope.json()["report"]


def check_identical(report: dict[str, Any], expected: dict[str, str]) -> None:
    """Each decision in ``expected`` (request id -> name:version) replayed bit for bit against that version."""
    found = {d["request_id"]: d for d in report["decisions"]}
    assert set(expected) <= set(found), sorted(set(expected) - set(found))
    for request_id, ref in expected.items():
        d = found[request_id]
        assert d["model"] == ref, (request_id, d["model"], ref)
        assert d["verdict"] == "identical", d
        assert d["score"]["verdict"] == "identical" and d["base_value"]["verdict"] == "identical", d
        assert set(d["contributions"]["counts"]) == {"identical"}, d["contributions"]
        assert d["decision"]["logged"] == d["decision"]["replayed"] and d["decision"]["reasons_match"], d


def eventually(attempt: Callable[[int], Any], tries: int = 200, pause: float = 0.1) -> Any:
    """``attempt(i)`` until it returns something other than None (a cached alias or revocation
    is trusted for a few seconds after a change: engine.ALIAS_TTL_S)."""
    for i in range(tries):
        result = attempt(i)
        if result is not None:
            return result
        time.sleep(pause)
    raise AssertionError(f"no result after {tries} attempts")


def store_listing(store: WormStore) -> list[str]:
    """Every object key, without the running gateway's own chain (its lease and checkpoints
    move on their own while the server idles)."""
    return [key for key in store.list_keys("") if not key.startswith("chains/gateway-0/")]


# -- 1. package -> register -> promote -> serve -> decide -> look up -> replay ---------------------


@pytest.mark.parametrize("model", [CLAIMS, EXPORTED, COST])
def test_a_brought_model_serves_explains_and_replays_identical(world, model):
    manifest = manifest_of(world.dirs[model])
    assert manifest.ref == f"{model}:1.0.0"
    if model == EXPORTED:  # the user's artifact is served as it is, byte for byte
        assert (world.dirs[model] / "model.pt2").read_bytes() == (world.dirs[model].parent / "model.pt2").read_bytes()
    if model == COST:
        assert manifest.output.space == manifest.explainer.output_space == "score"
    ids = [f"{model}-e2e-{i}" for i in range(3)]
    with world.client() as client:
        answers = []
        for request_id, attributes in zip(ids, world.rows[model][:3], strict=True):
            made = decide(world, client, model, request_id, attributes)  # unpinned: the production version
            assert made.status_code == 200, made.text
            answer = made.json()
            assert answer["request_id"] == request_id and answer["model"]["version"] == "1.0.0"
            check_decision(answer, manifest)
            answers.append(answer)
        for answer in answers:
            check_lookups(world, client, answer)
        report = replay_over_http(world, client, ids)
    assert report["summary"]["decisions"] == 3 and report["summary"]["identical"] == 3, report["summary"]
    check_identical(report, dict.fromkeys(ids, f"{model}:1.0.0"))


# -- 2. a version upgrade ---------------------------------------------------------------------------


@dataclass
class Upgrade:
    before_promotion: dict[str, Any]
    v1_pinned: dict[str, Any]
    v2_pinned_before_promotion: dict[str, Any]
    listed: dict[str, Any]
    first_v2: dict[str, Any]
    v1_ids: list[str]
    attributes: dict[str, Any]


@pytest.fixture(scope="module")
def upgraded(world, tmp_path_factory) -> Upgrade:
    """claim-cost 2.0.0 (other weights) registered while 1.0.0 serves, then promoted by the CLI."""
    attributes = world.rows[COST][10]
    with world.client() as client:
        v1_ids = [f"cost-v1-{i}" for i in range(2)]
        for request_id, row in zip(v1_ids, (attributes, world.rows[COST][11]), strict=True):
            made = decide(world, client, COST, request_id, row)
            assert made.status_code == 200 and made.json()["model"]["version"] == "1.0.0", made.text

        frame = claim_costs()
        v2 = fit_claim_cost(frame, resample_seed=2, inflation=1.08)
        directory = package_claim_cost(tmp_path_factory.mktemp("cost-2") / "packaged", "2.0.0", v2, frame)
        world.dirs[f"{COST}:2.0.0"] = directory
        manifest, new = world.registry.register(directory, by="test-setup")
        assert new and manifest.ref == f"{COST}:2.0.0"
        assert world.registry.resolve_default_version(COST) == "1.0.0"  # the store's alias, not a cache

        before = decide(world, client, COST, "cost-after-register", attributes)
        assert before.status_code == 200, before.text
        v1_pinned = decide(world, client, COST, "cost-v1-pinned", attributes, version="1.0.0")
        assert v1_pinned.status_code == 200, v1_pinned.text
        v2_pinned = decide(world, client, COST, "cost-v2-pinned", attributes, version="2.0.0")
        assert v2_pinned.status_code == 200, v2_pinned.text
        listed = client.get("/v1/models", headers=auth(world.tokens["client"]))
        assert listed.status_code == 200, listed.text

        promoted = world.cli("models", "promote", f"{COST}:2.0.0", "--by", "model-risk")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr

        def served_by_v2(i: int) -> dict[str, Any] | None:
            made = decide(world, client, COST, f"cost-after-promote-{i}", attributes)
            assert made.status_code == 200, made.text
            return made.json() if made.json()["model"]["version"] == "2.0.0" else None

        first_v2 = eventually(served_by_v2)
    return Upgrade(
        before_promotion=before.json(),
        v1_pinned=v1_pinned.json(),
        v2_pinned_before_promotion=v2_pinned.json(),
        listed=next(m for m in listed.json() if m["name"] == COST),
        first_v2=first_v2,
        v1_ids=v1_ids,
        attributes=attributes,
    )


def test_registering_v2_changes_nothing_until_it_is_promoted(world, upgraded):
    # registered, pinnable, listed, but unpinned requests still get 1.0.0
    assert upgraded.before_promotion["model"]["version"] == "1.0.0"
    assert upgraded.listed["versions"] == ["1.0.0", "2.0.0"] and upgraded.listed["production"] == "1.0.0"
    assert upgraded.v2_pinned_before_promotion["model"]["version"] == "2.0.0"
    # the same attributes: 1.0.0 gives the same bits every time, 2.0.0 another score
    assert upgraded.v1_pinned["score"] == upgraded.before_promotion["score"]
    assert upgraded.v2_pinned_before_promotion["score"] != upgraded.v1_pinned["score"]
    v2 = manifest_of(world.dirs[f"{COST}:2.0.0"])
    assert upgraded.first_v2["model"]["sha256"] == v2.artifact_sha256
    assert upgraded.first_v2["score"] == upgraded.v2_pinned_before_promotion["score"]
    check_decision(upgraded.first_v2, v2)


def test_after_promotion_new_decisions_use_v2_and_v1_decisions_still_replay_against_v1(world, upgraded):
    with world.client() as client:
        later = decide(world, client, COST, "cost-after-upgrade", upgraded.attributes)
        assert later.status_code == 200 and later.json()["model"]["version"] == "2.0.0", later.text
        check_lookups(world, client, later.json())
        for request_id in [*upgraded.v1_ids, "cost-after-register"]:
            body = client.get(f"/v1/decisions/{request_id}", headers=auth(world.tokens["staff"])).json()
            assert body["record"]["body"]["model"]["version"] == "1.0.0", body  # the record names v1
        listed = client.get("/v1/models", headers=auth(world.tokens["client"])).json()
        assert next(m for m in listed if m["name"] == COST)["production"] == "2.0.0"
        expected = dict.fromkeys([*upgraded.v1_ids, "cost-after-register", "cost-v1-pinned"], f"{COST}:1.0.0")
        expected["cost-after-upgrade"] = f"{COST}:2.0.0"
        report = replay_over_http(world, client, list(expected))
    check_identical(report, expected)


# -- 3. refusals -----------------------------------------------------------------------------------


def test_registering_a_broken_directory_is_refused_naming_the_rule_and_writes_nothing(world, tmp_path):
    broken = write_model_dir(
        tmp_path / "broken", name="broken-upload", artifact=np.random.default_rng(17).bytes(4096)
    )  # random bytes as model.pt2; the manifest's sha256 and size match them
    before = store_listing(world.store)
    refused = world.cli("models", "register", str(broken.directory))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert re.search(r"FAIL\s+artifact_format\s.*not a zip archive.*\[artifact\.zip\]", refused.stderr), refused.stderr
    assert "REFUSED" in refused.stderr and "NOT RUN" in refused.stderr
    assert "refused, nothing was registered: artifact_format:" in refused.stderr
    after = store_listing(world.store)
    assert after == before, sorted(set(after) ^ set(before))
    assert not [k for k in after if "broken-upload" in k or broken.manifest.artifact_sha256 in k]
    assert world.registry.versions("broken-upload") == []


def test_a_category_never_seen_in_training_is_refused_listing_the_allowed_values(world):
    manifest = manifest_of(world.dirs[COST])
    allowed = manifest.attribute("vehicle_class").categories
    assert allowed == ("compact", "estate", "suv", "van")
    attributes = {**world.rows[COST][0], "vehicle_class": "limousine"}
    with world.client() as client:
        refused = decide(world, client, COST, "cost-unseen-category", attributes)  # every version has the same list
        body = problem(refused, 422, "invalid-attributes")
        missing = client.get("/v1/decisions/cost-unseen-category", headers=auth(world.tokens["staff"]))
    (error,) = body["errors"]
    assert (error["field"], error["rule"], error["value"]) == ("attributes.vehicle_class", "category", "limousine")
    for value in allowed:
        assert repr(value) in error["message"], error  # "must be one of 'compact', 'estate', 'suv', 'van'"
    assert "attributes.vehicle_class" in body["detail"] and "'compact'" in body["detail"], body
    assert missing.status_code == 404  # refused before anything was recorded


def test_a_revoked_version_answers_410_and_its_decisions_still_replay_identical(world, upgraded):
    revoked = world.cli(
        "models", "revoke", f"{COST}:1.0.0", "--reason", "superseded by 2.0.0 (e2e test)", "--by", "model-risk"
    )
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert "no longer serves" in revoked.stdout and "is the production version" not in revoked.stderr
    with world.client() as client:

        def refused(i: int) -> httpx.Response | None:
            made = decide(world, client, COST, f"cost-v1-after-revoke-{i}", upgraded.attributes, version="1.0.0")
            return made if made.status_code == 410 else None

        gone = problem(eventually(refused), 410, "model-version-revoked")
        assert "model-risk" in gone["detail"] and "superseded by 2.0.0" in gone["detail"], gone
        unpinned = decide(world, client, COST, "cost-after-revoke", upgraded.attributes)
        assert unpinned.status_code == 200 and unpinned.json()["model"]["version"] == "2.0.0", unpinned.text
        earlier = dict.fromkeys([*upgraded.v1_ids, "cost-v1-pinned"], f"{COST}:1.0.0")
        for request_id in earlier:  # still explained to the applicant
            assert (
                client.get(f"/v1/decisions/{request_id}/explanation", headers=auth(world.tokens["staff"])).status_code
                == 200
            )
        report = replay_over_http(world, client, list(earlier))
    check_identical(report, earlier)
    shown = world.cli("models", "show", f"{COST}:1.0.0")
    assert "revoked by model-risk (superseded by 2.0.0 (e2e test))" in shown.stdout, shown.stdout
    history = world.cli("models", "status", f"{COST}:1.0.0", "--json")
    assert history.returncode == 0, history.stderr
    (event,) = msgspec.json.decode(history.stdout)
    assert (event["status"], event["by"], event["note"]) == ("revoked", "model-risk", "superseded by 2.0.0 (e2e test)")


# -- 4. protected attributes ------------------------------------------------------------------------


def test_a_withheld_protected_attribute_is_refused_by_name_and_shown(world):
    manifest = manifest_of(world.dirs[CLAIMS])
    (withheld,) = manifest.withheld
    assert (withheld.name, withheld.protected) == ("age", True)
    assert "age" not in [s.name for s in manifest.inputs]
    attributes = {**world.rows[CLAIMS][0], "age": 41}
    with world.client() as client:
        refused = decide(world, client, CLAIMS, "claims-with-age", attributes)
        body = problem(refused, 422, "invalid-attributes")
        missing = client.get("/v1/decisions/claims-with-age", headers=auth(world.tokens["staff"]))
    assert [(e["field"], e["rule"]) for e in body["errors"]] == [("attributes.age", "unknown_field")], body
    assert "attributes.age" in body["detail"]
    assert missing.status_code == 404
    shown = world.cli("models", "show", f"{CLAIMS}:1.0.0")
    assert shown.returncode == 0, shown.stderr
    assert (
        "withheld from the model: Age of the policyholder (age): "
        "age is a protected characteristic; it is not used to decide on a claim"
    ) in shown.stdout, shown.stdout


# -- the whole trail, after the server stopped -------------------------------------------------------


def test_every_decision_replays_identical_from_the_cli_and_the_trail_verifies(world):
    """Last: stops the server (its shutdown writes the final signed checkpoint)."""
    with world.client() as client:  # at least one decision per model, whichever tests ran before
        for model in (CLAIMS, EXPORTED, COST):
            assert decide(world, client, model, f"{model}-final", world.rows[model][5]).status_code == 200
    assert world.server is not None
    world.server.stop()
    replayed = world.cli("replay", "--all", "--no-progress", "--purpose", EXAMINER_PURPOSE)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "PASSED" in replayed.stdout
    path = next(
        line.removeprefix("JSON report: ").strip()
        for line in replayed.stdout.splitlines()
        if line.startswith("JSON report: ")
    )
    report = msgspec.json.decode(Path(path).read_bytes())["report"]
    assert report["summary"]["decisions"] == len(world.made), (report["summary"], len(world.made))
    assert report["summary"]["identical"] == len(world.made)
    check_identical(report, world.made)
    assert {ref.split(":")[0] for ref in world.made.values()} == {CLAIMS, EXPORTED, COST}

    verified = world.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

"""One model can never take the gateway down or serve nonsense (design.md, "Isolation").

Broken versions are put straight into the store, object by object, as the
registry lays them out, bypassing registration and its validation: that is the
situation the serving side defends against (a store written by an older
registry, by hand, or altered). Beside them, the good German credit model must
keep serving, over a real ``verdict serve`` process on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
import torch

from tests.gateway.conftest import auth
from tests.support.gateway_server import GatewayServer
from verdict.audit.canonical import canonical_bytes
from verdict.audit.stores import FilesystemStore, ObjectExists, WormStore
from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.engine import Engine, RuntimeCache, decide_rows
from verdict.gateway.manifest import Manifest, decode_manifest, encode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE
from verdict.gateway.registry import Promotion, Registry, alias_prefix, blob_key, manifest_key
from verdict.gateway.runtime import ModelExecutionError
from verdict.gateway.schema import validate_attributes
from verdict.gateway.service_errors import ModelOutputInvalid, ModelUnavailable

ROW = load_dataset("german-credit").rows[0]
PROBLEM = "application/problem+json"
UNREADY = {
    "random-bytes:1.0.0": "not a loadable torch.export program (BadZipFile",
    "narrow-graph:1.0.0": "graph takes 19 values per row, manifest has 20 attributes",
    "static-batch:1.0.0": "static batch 1 export cannot run at 64 rows: export with a dynamic batch dimension",
    "garbled:1.0.0": "ManifestError",
    "tampered:1.0.0": "TamperedBlob",
}


# -- building and storing models without the registry ----------------------------------------


class Linear(torch.nn.Module):
    """One value per row from ``width`` values: ``(x . w + b) * scale``, optionally squashed."""

    def __init__(
        self, width: int, *, weight: float = 0.0, bias: float = 0.0, scale: float = 1.0, sigmoid: bool = False
    ) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, 1)
        with torch.no_grad():
            self.layer.weight.fill_(weight)
            self.layer.bias.fill_(bias)
        self.scale, self.sigmoid = scale, sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x).squeeze(-1) * self.scale
        return torch.sigmoid(out) if self.sigmoid else out


def export(module: torch.nn.Module, width: int, *, static_batch: bool = False) -> bytes:
    example = torch.zeros(1 if static_batch else 4, width)
    dynamic = None if static_batch else {"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def put_version(
    store: WormStore,
    template: Manifest,
    name: str,
    version: str,
    artifact: bytes,
    *,
    promote: bool = True,
    manifest_bytes: bytes | None = None,
    space: str = "probability",
) -> Manifest:
    """Blob, manifest and (``promote``) production alias objects, written directly."""
    sha = hashlib.sha256(artifact).hexdigest()
    with contextlib.suppress(ObjectExists):
        store.put_once(blob_key(sha), artifact)
    manifest = msgspec.structs.replace(
        template,
        name=name,
        version=version,
        artifact_sha256=sha,
        artifact_bytes=len(artifact),
        output=msgspec.structs.replace(template.output, space=space),
        explainer=msgspec.structs.replace(template.explainer, output_space=space),
    )
    store.put_once(manifest_key(name, version), manifest_bytes or encode_manifest(manifest))
    if promote:
        event = Promotion(name, "production", version, 0, "2025-01-02T03:04:05.000000Z", "test-setup")
        store.put_once(f"{alias_prefix(name, 'production')}00000000.json", canonical_bytes(event))
    return manifest


def put_model_dir(store: WormStore, directory: Path) -> Manifest:
    """A trained model directory, stored object by object and promoted (no validation run)."""
    manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    with contextlib.suppress(ObjectExists):
        store.put_once(blob_key(manifest.explainer.background_sha256), (directory / BACKGROUND_FILE).read_bytes())
    return put_version(store, manifest, manifest.name, manifest.version, (directory / ARTIFACT_FILE).read_bytes())


@pytest.fixture(scope="module")
def german(trained_dirs) -> Manifest:
    return decode_manifest((trained_dirs["german-credit"] / MANIFEST_FILE).read_bytes())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, trained_dirs, german):
    """One real gateway over a store holding the good model beside broken ones."""
    home = tmp_path_factory.mktemp("isolation-home")
    store = FilesystemStore(home / "store")
    width = len(german.inputs)
    put_model_dir(store, trained_dirs["german-credit"])
    put_version(store, german, "random-bytes", "1.0.0", np.random.default_rng(1).bytes(4096))
    put_version(store, german, "narrow-graph", "1.0.0", export(Linear(width - 1, sigmoid=True), width - 1))
    put_version(store, german, "static-batch", "1.0.0", export(Linear(width, sigmoid=True), width, static_batch=True))
    registered = export(Linear(width, sigmoid=True), width)
    store.put_once(blob_key(hashlib.sha256(registered).hexdigest()), registered[:-1] + b"!")  # altered in the store
    put_version(store, german, "tampered", "1.0.0", registered)
    put_version(store, german, "garbled", "1.0.0", b"x", manifest_bytes=b'{"format": "verdict.model/v1", "name": ')
    put_version(store, german, "logits", "1.0.0", export(Linear(width, bias=6.1), width))
    # beside the good production version: an unpromoted broken one, and a revoked good one
    put_version(store, german, "german-credit", "2.0.0-broken", b"not a zip", promote=False)
    put_version(
        store,
        german,
        "german-credit",
        "1.1.0",
        (trained_dirs["german-credit"] / ARTIFACT_FILE).read_bytes(),
        promote=False,
    )
    put_version(store, german, "retired", "1.0.0", (trained_dirs["german-credit"] / ARTIFACT_FILE).read_bytes())
    put_version(
        store,
        german,
        "unpromoted",
        "1.0.0",
        (trained_dirs["german-credit"] / ARTIFACT_FILE).read_bytes(),
        promote=False,
    )
    registry = Registry(store)
    registry.set_status("german-credit", "1.1.0", "revoked", by="model-risk", note="biased on age")
    registry.set_status("retired", "1.0.0", "revoked", by="model-risk", note="superseded")
    registry.set_status("german-credit", "1.0.0", "validated", by="model-risk", note="MRM-7")
    keys = ApiKeyStore(home / "apikeys.json")
    tokens = {
        role: keys.create(scopes, name=role)[1] for role, scopes in (("client", ["score"]), ("staff", ["explain"]))
    }
    server = GatewayServer(home).start()
    server.tokens = tokens
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def decide(client: httpx.Client, gateway, model: str, version: str | None = None, request_id: str | None = None):
    body = {"model": model, "attributes": dict(ROW)}
    body |= {"version": version} if version else {}
    body |= {"request_id": request_id} if request_id else {}
    return client.post("/v1/decisions", json=body, headers=auth(gateway.tokens["client"]))


def problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    return body


# -- over HTTP ----------------------------------------------------------------------------------


def test_broken_models_do_not_stop_the_gateway_and_are_named(gateway, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["checks"] == {"models": "ok", "store": "ok", "signer": "ok"}
    assert set(body["unready_models"]) == set(UNREADY), body
    for ref, words in UNREADY.items():
        assert words in body["unready_models"][ref], (ref, body["unready_models"][ref])
    log = gateway.log_path.read_text(errors="replace")
    for ref in UNREADY:
        name, version = ref.split(":")
        assert f"model {name} version {version} cannot be served" in log, log


def test_the_model_list_says_which_versions_serve_and_why_not(gateway, client):
    listing = {m["name"]: m for m in client.get("/v1/models", headers=auth(gateway.tokens["client"])).json()}
    german = listing["german-credit"]
    assert german["production"] == "1.0.0"
    assert german["states"]["1.0.0"] == {"state": "loaded"}
    assert german["states"]["1.1.0"]["state"] == "revoked" and "model-risk" in german["states"]["1.1.0"]["reason"]
    assert (
        german["states"]["2.0.0-broken"] == {"state": "not_loaded"}
        or german["states"]["2.0.0-broken"]["state"] == "unready"
    )
    for ref, words in UNREADY.items():
        name, version = ref.split(":")
        state = listing[name]["states"][version]
        assert state["state"] == "unready" and words in state["reason"], state
    assert listing["logits"]["states"]["1.0.0"] == {"state": "loaded"}
    assert listing["unpromoted"]["production"] is None
    validated = german["validation"]["1.0.0"]
    assert (validated["status"], validated["by"], validated["note"]) == ("validated", "model-risk", "MRM-7")
    assert "1.1.0" not in german["validation"] and listing["logits"]["validation"] == {}


def test_the_good_model_decides_beside_the_broken_ones(gateway, client):
    response = decide(client, gateway, "german-credit", request_id="good-1")
    assert response.status_code == 200, response.text
    assert response.json()["model"]["version"] == "1.0.0"


@pytest.mark.parametrize("ref", sorted(UNREADY))
def test_a_broken_production_version_answers_503_naming_it(gateway, client, ref):
    name, version = ref.split(":")
    body = problem(decide(client, gateway, name), 503, "model-unavailable")
    assert f"model {name} version {version}" in body["detail"] and UNREADY[ref] in body["detail"], body
    assert str(gateway.home) not in body["detail"]


def test_a_pinned_broken_version_answers_503_and_retry_after(gateway, client):
    first = decide(client, gateway, "german-credit", "2.0.0-broken")  # loaded on first use: fails
    again = decide(client, gateway, "german-credit", "2.0.0-broken")  # known unready: refused up front
    for response in (first, again):
        body = problem(response, 503, "model-unavailable")
        assert "german-credit version 2.0.0-broken" in body["detail"] and "BadZipFile" in body["detail"], body
        assert int(response.headers["Retry-After"]) >= 1
    assert "german-credit:2.0.0-broken" in client.get("/readyz").json()["unready_models"]
    assert decide(client, gateway, "german-credit").status_code == 200  # production still serves


def test_scores_outside_the_output_space_fail_closed_without_a_record(gateway, client):
    body = problem(decide(client, gateway, "logits", request_id="logits-1"), 502, "model-output-invalid")
    assert "logits version 1.0.0" in body["detail"] and "'probability'" in body["detail"], body
    assert "row 0: 6.099999904632568" in body["detail"], body  # 6.1 in float32
    lookup = client.get("/v1/decisions/logits-1", headers=auth(gateway.tokens["staff"]))
    assert lookup.status_code == 404, "a refused decision must leave no record"
    metrics = client.get("/metrics").text
    assert 'verdict_model_output_invalid_total{model="logits",version="1.0.0"} 1.0' in metrics, metrics
    assert 'verdict_failures_total{reason="model_output_invalid"} 1.0' in metrics


def test_revoked_versions_do_not_serve(gateway, client):
    pinned = problem(decide(client, gateway, "german-credit", "1.1.0"), 410, "model-version-revoked")
    assert "german-credit version 1.1.0 was revoked by model-risk" in pinned["detail"]
    assert "biased on age" in pinned["detail"], pinned
    routed = problem(decide(client, gateway, "retired"), 410, "model-version-revoked")
    assert "retired version 1.0.0 was revoked by model-risk" in routed["detail"] and "superseded" in routed["detail"]


def test_an_unpromoted_model_must_be_pinned(gateway, client):
    body = problem(decide(client, gateway, "unpromoted"), 409, "no-production-version")
    assert "unpromoted" in body["detail"] and "promote" in body["detail"], body
    assert decide(client, gateway, "unpromoted", "1.0.0").status_code == 200


def test_load_failures_are_counted(gateway, client):
    metrics = client.get("/metrics").text
    for ref in UNREADY:
        name, version = ref.split(":")
        assert f'verdict_model_load_failures_total{{model="{name}",version="{version}"}} 1.0' in metrics, metrics
    unready = float(re.search(r"^verdict_models_unready (\S+)$", metrics, re.M)[1])
    assert unready == len(client.get("/readyz").json()["unready_models"]) >= len(UNREADY)


# -- in process: the pipeline and the engine -------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory, trained_dirs, german) -> Registry:
    store = FilesystemStore(tmp_path_factory.mktemp("isolation-local"))
    put_model_dir(store, trained_dirs["german-credit"])
    return Registry(store)


def rows(manifest: Manifest, count: int) -> list[dict]:
    return [validate_attributes(manifest.inputs, row) for row in load_dataset("german-credit").rows[:count]]


def test_every_row_outside_the_space_is_named_and_nan_fails_in_any_space(local, german):
    width = len(german.inputs)
    put_version(local.store, german, "negative", "1.0.0", export(Linear(width, bias=-1.0), width))
    put_version(local.store, german, "nan", "1.0.0", export(Linear(width, scale=math.nan), width), space="score")
    engine = Engine(local, "cpu", cache=RuntimeCache())
    negative = engine.runtime(engine.manifest("negative", "1.0.0"))
    with pytest.raises(ModelOutputInvalid) as refused:
        decide_rows(negative, rows(german, 3), [1, 2, 3])
    assert refused.value.rows == [(0, -1.0), (1, -1.0), (2, -1.0)]
    assert "negative version 1.0.0" in refused.value.detail and "row 0: -1.0, row 1: -1.0" in refused.value.detail
    nan = engine.runtime(engine.manifest("nan", "1.0.0"))
    with pytest.raises(ModelOutputInvalid) as refused:
        decide_rows(nan, rows(german, 2), [1, 2])
    assert refused.value.space == "score" and "row 0: nan" in refused.value.detail
    assert "must be a finite number" in refused.value.detail


def test_a_store_blip_does_not_make_a_model_unready_for_good(local, german, trained_dirs):
    """The artifact is missing when first loaded (a store that did not answer); once it is
    there, the next retry loads it. ``load_retry_s=0``: every retry is due at once."""
    artifact = export(Linear(len(german.inputs), sigmoid=True), len(german.inputs))
    manifest = msgspec.structs.replace(
        german, name="blip", artifact_sha256=hashlib.sha256(artifact).hexdigest(), artifact_bytes=len(artifact)
    )
    local.store.put_once(manifest_key("blip", "1.0.0"), encode_manifest(manifest))
    event = Promotion("blip", "production", "1.0.0", 0, "2025-01-02T03:04:05.000000Z", "test-setup")
    local.store.put_once(f"{alias_prefix('blip', 'production')}00000000.json", canonical_bytes(event))
    failures: list[tuple[str, str, str]] = []
    engine = Engine(local, "cpu", cache=RuntimeCache(), load_retry_s=0, on_load_failure=lambda *f: failures.append(f))
    with pytest.raises(ModelUnavailable) as unavailable:
        engine.loaded("blip", "1.0.0")
    assert (
        "missing from the model store" in unavailable.value.reason and local.store.url not in unavailable.value.detail
    )
    assert list(engine.unready()) == ["blip:1.0.0"] and failures[0][:2] == ("blip", "1.0.0")
    assert engine.retry_unready() == [] and engine.failures()[("blip", "1.0.0")].attempts == 2
    local.store.put_once(blob_key(manifest.artifact_sha256), artifact)
    assert engine.retry_unready() == [("blip", "1.0.0")]
    assert engine.unready() == {} and ("blip", "1.0.0") in engine.loaded_versions()


def test_a_bucket_first_seen_later_is_guard_checked_before_use(local, german):
    """Replay passes recorded buckets: each is run through the export's guards once, first."""
    width = len(german.inputs)
    program = torch.export.export(
        Linear(width, sigmoid=True).eval(),
        (torch.zeros(4, width),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    put_version(local.store, german, "capped", "1.0.0", buffer.getvalue(), promote=False)
    engine = Engine(local, "cpu", cache=RuntimeCache())
    runtime = engine.runtime(engine.manifest("capped", "1.0.0"))
    x = np.zeros((3, width), dtype=np.float32)
    assert runtime.score_matrix(x, 16)[1] == 16
    with pytest.raises(
        ModelExecutionError,
        match=r"capped:1\.0\.0: the export's batch dimension allows 1\.\.4096 rows, cannot run at 8192",
    ):
        runtime.score_matrix(x, 8192)

"""The Open Inference Protocol v2, spoken by its own clients, unchanged, to a real gateway.

tritonclient's HTTP and gRPC clients call one `verdict serve` process (REST
on its HTTP port, gRPC on --grpc-port): health, metadata, infer with JSON and
binary tensors. Every decision they make is the decision /v1 makes for the
same body (the same record: /v1 answers it as an idempotent repeat), the trail
verifies, and replay finds each one identical. Bad tensors get the protocol's
errors naming the tensor and the rule; a full disk fails them closed.
"""

from __future__ import annotations

import json

import httpx
import msgspec
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.gateway.conftest import auth, run_verdict
from tests.support.filesystems import fill, small_tmpfs
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.moto_server import HOST, free_port
from verdict.gateway.datasets import load_dataset

pytestmark = pytest.mark.slow
MODEL = "german-credit"


class Gateway:
    def __init__(self, server: GatewayServer, tokens: dict[str, str], grpc_port: int, store_url: str) -> None:
        self.server, self.tokens, self.grpc_port, self.store_url = server, tokens, grpc_port, store_url
        self.http = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
        self.grpc = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")
        self.inputs = self.http.get_model_metadata(MODEL, headers=self.headers)["inputs"]
        self.made: set[str] = set()  # request ids decided through the protocol

    @property
    def headers(self) -> dict[str, str]:
        """A new dict per call: tritonclient's HTTP infer adds its binary header length to the one it is given."""
        return {"Authorization": f"Bearer {self.tokens['client']}"}

    @property
    def metadata(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens['client']}"}

    def rows(self, start: int, n: int) -> list[dict]:
        names = {spec["name"] for spec in self.inputs}
        return [{k: v for k, v in row.items() if k in names} for row in load_dataset(MODEL).rows[start : start + n]]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, trained_dirs):
    """One gateway (REST and gRPC) whose store is on a small filesystem the last test fills."""
    base = tmp_path_factory.mktemp("oip")
    mounted = small_tmpfs(base / "fs")
    fs = next(mounted)
    store_url = (fs / "store").as_uri()
    tokens = prepare_home(base / "home", trained_dirs[MODEL], store_url=store_url)
    grpc_port = free_port()
    server = GatewayServer(base / "home", env={"VERDICT_STORE": store_url}).start("--grpc-port", str(grpc_port))
    try:
        yield Gateway(server, tokens, grpc_port, store_url)
    finally:
        server.stop()
        next(mounted, None)


def _array(spec: dict, values: list) -> np.ndarray:
    dtype = {"BYTES": np.object_, "INT64": np.int64, "FP64": np.float64}[spec["datatype"]]
    return np.array([[v] for v in values], dtype=dtype)


def http_inputs(gateway: Gateway, rows: list[dict], *, binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for spec in gateway.inputs:
        tensor = httpclient.InferInput(spec["name"], [len(rows), 1], spec["datatype"])
        tensor.set_data_from_numpy(_array(spec, [row[spec["name"]] for row in rows]), binary_data=binary)
        inputs.append(tensor)
    return inputs


def grpc_inputs(gateway: Gateway, rows: list[dict]) -> list[grpcclient.InferInput]:
    inputs = []
    for spec in gateway.inputs:
        tensor = grpcclient.InferInput(spec["name"], [len(rows), 1], spec["datatype"])
        tensor.set_data_from_numpy(_array(spec, [row[spec["name"]] for row in rows]))
        inputs.append(tensor)
    return inputs


def _outputs(result) -> dict:
    return {name: result.as_numpy(name) for name in ("score", "decision", "contributions", "request_id", "receipt")}


def assert_same_as_v1(gateway: Gateway, rows: list[dict], outputs: dict, subject: str | None = None) -> None:
    """Each row's decision is the one /v1 makes for the same body: /v1 returns it as an
    idempotent repeat (same request hash), with the same receipt, score and contributions."""
    names = [spec["name"] for spec in gateway.inputs]
    with httpx.Client(base_url=gateway.server.url, headers=auth(gateway.tokens["client"]), timeout=60) as client:
        for i, row in enumerate(rows):
            request_id = outputs["request_id"][i].decode()
            body = {"model": MODEL, "request_id": request_id, "attributes": row}
            if subject is not None:
                body["subject_id"] = subject
            v1 = client.post("/v1/decisions", json=body)
            assert v1.status_code == 200, v1.text
            answer = v1.json()
            assert answer["idempotent_replay"] is True, answer
            receipt = json.loads(outputs["receipt"][i])
            assert receipt["record_hash"] == answer["receipt"]["record_hash"]
            assert receipt["seq"] == answer["receipt"]["seq"]
            assert outputs["score"][i] == answer["score"]  # the same float64, bit for bit
            assert outputs["decision"][i].decode() == answer["decision"]
            assert list(outputs["contributions"][i]) == [answer["contributions"][name] for name in names]
            gateway.made.add(request_id)


def test_health_and_metadata_through_both_clients(gateway):
    for client, headers in ((gateway.http, gateway.headers), (gateway.grpc, gateway.metadata)):
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL, headers=headers)
    server = gateway.http.get_server_metadata()
    assert server["name"] == "verdict" and "binary_tensor_data" in server["extensions"]
    assert gateway.grpc.get_server_metadata(as_json=True)["extensions"] == server["extensions"]
    meta = gateway.grpc.get_model_metadata(MODEL, headers=gateway.metadata, as_json=True)
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [(t["name"], t["datatype"]) for t in gateway.inputs]
    assert [t["name"] for t in meta["outputs"]] == [
        "score",
        "decision",
        "contributions",
        "base_value",
        "reasons",
        "request_id",
        "receipt",
    ]
    assert meta["outputs"][2]["shape"] == ["-1", str(len(gateway.inputs))]
    with pytest.raises(InferenceServerException) as refused:
        gateway.http.get_model_metadata(MODEL)
    assert refused.value.status() == "401"
    with pytest.raises(InferenceServerException) as unknown:
        gateway.grpc.get_model_metadata("no-such-model", headers=gateway.metadata)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_infer_makes_the_decisions_v1_makes(gateway, binary):
    rows = gateway.rows(10 if binary else 0, 5)
    result = gateway.http.infer(
        MODEL, http_inputs(gateway, rows, binary=binary), headers=gateway.headers, request_id=f"http-{binary}"
    )
    outputs = _outputs(result)
    assert [r.decode() for r in outputs["request_id"]] == [f"http-{binary}.{i}" for i in range(5)]
    assert outputs["contributions"].shape == (5, len(gateway.inputs))
    reasons = json.loads(result.as_numpy("reasons")[0])
    assert reasons and {"attribute", "label", "direction", "contribution", "text"} <= reasons[0].keys()
    # additivity, as recorded: base value + contributions = score
    assert np.allclose(result.as_numpy("base_value") + outputs["contributions"].sum(axis=1), outputs["score"])
    assert_same_as_v1(gateway, rows, outputs)


def test_grpc_infer_makes_the_decisions_v1_makes(gateway):
    rows = gateway.rows(20, 4)
    result = gateway.grpc.infer(
        MODEL,
        grpc_inputs(gateway, rows),
        headers=gateway.metadata,
        parameters={"request_id": ",".join(f"g-{i}" for i in range(4)), "subject_id": "person-7"},
    )
    outputs = _outputs(result)
    assert [r.decode() for r in outputs["request_id"]] == [f"g-{i}" for i in range(4)]
    assert_same_as_v1(gateway, rows, outputs, subject="person-7")


def test_a_retried_infer_returns_the_logged_decisions_and_other_rows_under_its_id_are_refused(gateway):
    rows = gateway.rows(30, 3)
    first = _outputs(
        gateway.http.infer(
            MODEL, http_inputs(gateway, rows, binary=True), headers=gateway.headers, request_id="retry-1"
        )
    )
    again = gateway.grpc.infer(MODEL, grpc_inputs(gateway, rows), headers=gateway.metadata, request_id="retry-1")
    for i in range(3):
        assert json.loads(again.as_numpy("receipt")[i])["record_hash"] == json.loads(first["receipt"][i])["record_hash"]
        assert json.loads(again.as_numpy("receipt")[i])["idempotent_replay"] is True
    gateway.made.update(r.decode() for r in first["request_id"])
    changed = [rows[0], rows[2], rows[1]]
    for other in (changed, rows[:2], [*rows, rows[0]]):
        with pytest.raises(InferenceServerException) as refused:
            gateway.http.infer(
                MODEL, http_inputs(gateway, other, binary=False), headers=gateway.headers, request_id="retry-1"
            )
        assert refused.value.status() == "409" and "retry-1" in refused.value.message(), refused.value
    with pytest.raises(InferenceServerException) as refused_grpc:
        gateway.grpc.infer(MODEL, grpc_inputs(gateway, changed), headers=gateway.metadata, request_id="retry-1")
    assert refused_grpc.value.status() == "StatusCode.ALREADY_EXISTS"
    with httpx.Client(base_url=gateway.server.url, headers=auth(gateway.tokens["staff"]), timeout=60) as client:
        assert client.get("/v1/decisions/retry-1.3").status_code == 404  # the extra row was refused, not recorded


def _raw_infer(gateway: Gateway, inputs: list[dict], request_id: str) -> httpx.Response:
    body = {"id": request_id, "inputs": inputs}
    return httpx.post(f"{gateway.server.url}/v2/models/{MODEL}/infer", json=body, headers=gateway.headers, timeout=60)


def _json_inputs(gateway: Gateway, row: dict) -> list[dict]:
    return [
        {"name": spec["name"], "datatype": spec["datatype"], "shape": [1, 1], "data": [row[spec["name"]]]}
        for spec in gateway.inputs
    ]


def test_bad_tensors_get_protocol_errors_naming_the_tensor_and_the_rule(gateway):
    row = gateway.rows(40, 1)[0]
    good = _json_inputs(gateway, row)
    category = next(t for t in good if t["datatype"] == "BYTES")
    number = next(t for t in good if t["datatype"] != "BYTES")
    cases = {
        "datatype": [*(t for t in good if t is not category), {**category, "datatype": "FP32", "data": [1.0]}],
        "shape": [*(t for t in good if t is not number), {**number, "shape": [1, 2], "data": [1, 2]}],
        "unknown_input": [*good, {"name": "shoe_size", "datatype": "INT64", "shape": [1], "data": [42]}],
        "category": [*(t for t in good if t is not category), {**category, "data": ["Z99"]}],
        "required": good[1:],
    }
    for rule, inputs in cases.items():
        response = _raw_infer(gateway, inputs, f"bad-{rule.replace('_', '-')}")
        assert response.status_code == 400, (rule, response.text)
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert f"rule: {rule}" in error, (rule, error)
        named = {"unknown_input": "shoe_size", "category": category["name"], "datatype": category["name"]}.get(rule)
        if named:
            assert error.startswith(named), error
    with pytest.raises(InferenceServerException) as refused:
        wrong = grpcclient.InferInput(number["name"], [1, 1], "FP32")
        wrong.set_data_from_numpy(np.array([[1.5]], dtype=np.float32))
        gateway.grpc.infer(
            MODEL,
            [*(t for t in grpc_inputs(gateway, [row]) if t.name() != number["name"]), wrong],
            headers=gateway.metadata,
        )
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and number["name"] in refused.value.message()
    with pytest.raises(InferenceServerException) as unauthenticated:
        gateway.grpc.infer(MODEL, grpc_inputs(gateway, [row]))
    assert unauthenticated.value.status() == "StatusCode.UNAUTHENTICATED"
    staff = {"authorization": f"Bearer {gateway.tokens['staff']}"}
    with pytest.raises(InferenceServerException) as forbidden:
        gateway.grpc.infer(MODEL, grpc_inputs(gateway, [row]), headers=staff)
    assert forbidden.value.status() == "StatusCode.PERMISSION_DENIED"
    # nothing was recorded for any refused call
    with httpx.Client(base_url=gateway.server.url, headers=auth(gateway.tokens["staff"]), timeout=60) as client:
        for rule in cases:
            assert client.get(f"/v1/decisions/bad-{rule.replace('_', '-')}.0").status_code == 404


def test_each_call_has_one_access_line_without_personal_data(gateway):
    """REST and gRPC calls are logged like /v1: one JSON access line each, with the route
    template, the status and the model, never an attribute value or the subject."""
    log = gateway.server.log_path.read_text()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "verdict.access"]
    grpc_infers = [x for x in access if x.get("route") == "inference.GRPCInferenceService/ModelInfer"]
    assert grpc_infers and {x["status"] for x in grpc_infers} >= {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED"}
    rest_infers = [x for x in access if x.get("route") == "/v2/models/{model_name}/infer"]
    assert rest_infers and any(x["status"] == 200 and x.get("model") == MODEL and x.get("rows") for x in rest_infers)
    assert all(x.get("request_id") for x in grpc_infers + rest_infers)
    assert "person-7" not in log and "Z99" not in log


def test_every_protocol_decision_is_in_a_verifying_trail_and_replays_identical(gateway):
    """After the decisions above; before the disk is filled."""
    assert len(gateway.made) >= 15
    env = {"VERDICT_HOME": str(gateway.server.home), "VERDICT_STORE": gateway.store_url}
    replayed = run_verdict(
        "replay",
        *sorted(gateway.made),
        "--allow-pending",
        "--no-progress",
        "--json",
        str(gateway.server.home / "oip-replay.json"),
        env=env,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = msgspec.json.decode((gateway.server.home / "oip-replay.json").read_bytes())["report"]
    assert report["summary"]["decisions"] == len(gateway.made)
    assert report["summary"]["identical"] == len(gateway.made), report["summary"]
    verified = run_verdict("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_full_disk_fails_infer_closed_on_both_transports(gateway):
    """Last: fills the store's filesystem. 503 / UNAVAILABLE with Retry-After, as /v1."""
    fill(gateway.server.home.parent / "fs" / "filler")
    rows = gateway.rows(50, 2)
    with pytest.raises(InferenceServerException) as refused:
        gateway.http.infer(MODEL, http_inputs(gateway, rows, binary=True), headers=gateway.headers, request_id="full-1")
    assert refused.value.status() == "503", refused.value
    with pytest.raises(InferenceServerException) as unavailable:
        gateway.grpc.infer(MODEL, grpc_inputs(gateway, rows), headers=gateway.metadata, request_id="full-2")
    assert unavailable.value.status() == "StatusCode.UNAVAILABLE", unavailable.value
    response = httpx.post(
        f"{gateway.server.url}/v2/models/{MODEL}/infer",
        json={"id": "full-3", "inputs": _json_inputs(gateway, rows[0])},
        headers=gateway.headers,
        timeout=60,
    )
    assert response.status_code == 503 and "Retry-After" in response.headers and "error" in response.json()

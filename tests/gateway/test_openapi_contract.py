"""The served OpenAPI document is a contract the real gateway keeps.

One real ``verdict serve`` (the session's ``live_gateway``): the document at
``/schema/openapi.json`` must be valid OpenAPI, and every real answer of every
route — successes and each family of error — must be a status the document
lists for that route, in a media type it lists, with a body its schema
accepts. The cases are one table, :data:`CASES`; an operation of the document
without a success case fails :func:`test_every_operation_has_a_success_case`,
so a new route cannot go unchecked. Keys and scopes are checked for every
success case without a row of their own (:func:`test_keys_and_scopes`).

To check a new route, add rows to :data:`CASES` (or to :data:`V2_CASES` for the
Open Inference Protocol): ``Case(method, document path template, expected
status, role=..., params=..., json=...)``. ``role`` is a key of
``live_gateway.tokens`` (None: no key); ``params`` fill the template, and
``{name}`` in a value is filled from :class:`World` (a decision, a replay...).

Then a client is generated from the served document (datamodel-code-generator)
and used to make a decision: the document is good enough to generate from.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.gateway.conftest import auth
from verdict.gateway.datasets import load_dataset
from verdict.gateway.openapi_contract import SCOPES, SECURITY_SCHEME
from verdict.gateway.openapi_pages import REDOC

PROBLEM = "application/problem+json"
DOCUMENT = "urn:verdict:openapi"
ROLE_SCOPES = {
    "client": {"score"},
    "staff": {"explain"},
    "examiner": {"replay"},
    "admin": {"admin"},
    "both": {"score", "explain"},
}
"""The keys tests.support.gateway_server.prepare_home creates, by role."""

ATTRIBUTES = load_dataset("german-credit").rows[0]
OTHER_ATTRIBUTES = load_dataset("german-credit").rows[1]


@dataclass
class World:
    """What the cases refer to, made once through the API itself: ``{name}`` in a case's
    path values or body is one of :attr:`values`."""

    values: dict[str, str]
    erased_body: dict[str, Any]

    def fill(self, text: str) -> str:
        return text.format_map(self.values)


Body = Any | Callable[[World], Any]


@dataclass(frozen=True)
class Case:
    """One real request, the status it must get, and why."""

    method: str
    path: str
    """The operation's path as the document writes it, e.g. ``/v1/decisions/{request_id}``."""
    status: int
    why: str = ""
    role: str | None = "admin"
    params: Mapping[str, str] = field(default_factory=dict)
    json: Body = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} {self.status}" + (f" {self.why}" if self.why else "")

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


def _decision(request_id: str, **extra: Any) -> Callable[[World], dict[str, Any]]:
    return lambda world: {"model": "german-credit", "request_id": request_id, "attributes": ATTRIBUTES, **extra}


def _infer_body(world: World) -> dict[str, Any]:
    """One row as Open Inference Protocol tensors: one tensor per attribute."""

    def tensor(name: str, value: Any) -> dict[str, Any]:
        datatype = "BYTES" if isinstance(value, str) else "INT64" if isinstance(value, int) else "FP64"
        return {"name": name, "shape": [1], "datatype": datatype, "data": [value]}

    return {"id": "oa-infer", "inputs": [tensor(name, value) for name, value in ATTRIBUTES.items()]}


MODEL = {"name": "german-credit"}
VERSION = {"name": "german-credit", "version": "{version}"}
KEPT = {"request_id": "oa-kept"}
ERASED = {"request_id": "oa-erased"}
NEVER = {"request_id": "oa-never-made"}
REPLAY = {"replay_id": "{replay}"}
NO_REPLAY = {"replay_id": "rpl-never-started"}
BIG = {"model": "german-credit", "attributes": {"padding": "x" * 70_000}}
TEXT = {"Content-Type": "text/plain"}
JSON_TYPE = {"Content-Type": "application/json"}

CASES: list[Case] = [
    # decisions
    Case("POST", "/v1/decisions", 200, role="client", json=_decision("oa-new", subject_id="oa-subject-kept")),
    Case("POST", "/v1/decisions", 409, "request-id-conflict", json=lambda w: {**_decision("oa-kept")(w), "attributes": OTHER_ATTRIBUTES}),
    Case("POST", "/v1/decisions", 410, "decision-erased, asked again", json=lambda w: w.erased_body),
    Case("POST", "/v1/decisions", 404, "unknown-model", json=lambda w: {**_decision("oa-x")(w), "model": "no-such-model"}),
    Case("POST", "/v1/decisions", 422, "invalid-attributes", json=lambda w: {**_decision("oa-y")(w), "attributes": {}}),
    Case("POST", "/v1/decisions", 422, "invalid-request", json={"attributes": {}}),
    Case("POST", "/v1/decisions", 415, "unsupported-media-type", content=b"{}", headers=TEXT),
    Case("POST", "/v1/decisions", 400, "malformed-json", content=b'{"model": ', headers=JSON_TYPE),
    Case("POST", "/v1/decisions", 413, "body-too-large", json=BIG),
    # lookups
    Case("GET", "/v1/decisions/{request_id}", 200, params=KEPT),
    Case("GET", "/v1/decisions/{request_id}", 404, "unknown-request-id", params=NEVER),
    Case("GET", "/v1/decisions/{request_id}", 410, "decision-erased", params=ERASED),
    Case("GET", "/v1/decisions/{request_id}/explanation", 200, role="staff", params=KEPT),
    Case("GET", "/v1/decisions/{request_id}/explanation", 404, "unknown-request-id", params=NEVER),
    Case("GET", "/v1/decisions/{request_id}/explanation", 410, "decision-erased", params=ERASED),
    Case("GET", "/v1/decisions/{request_id}/explanation.png", 200, params=KEPT),
    Case("GET", "/v1/decisions/{request_id}/explanation.png", 404, "unknown-request-id", params=NEVER),
    # subjects
    Case("GET", "/v1/subjects/{subject_id}/decisions", 200, params={"subject_id": "oa-subject-kept"}),
    Case("GET", "/v1/subjects/{subject_id}/decisions", 400, "invalid-parameter", params={"subject_id": "s" * 129}),
    Case("DELETE", "/v1/subjects/{subject_id}", 200, params={"subject_id": "oa-subject-erase-me"}, json={"basis": "GDPR Art. 17, contract test"}),
    Case("DELETE", "/v1/subjects/{subject_id}", 404, "unknown-subject", params={"subject_id": "oa-subject-never"}, json={"basis": "test"}),
    Case("DELETE", "/v1/subjects/{subject_id}", 422, "invalid-subject-request", params={"subject_id": "oa-subject-kept"}, json={"basis": "   "}),
    Case("DELETE", "/v1/subjects/{subject_id}", 415, "unsupported-media-type", params={"subject_id": "oa-subject-kept"}, content=b"basis", headers=TEXT),
    # models
    Case("GET", "/v1/models", 200, role="client"),
    Case("GET", "/v1/models/{name}", 200, role="client", params=MODEL),
    Case("GET", "/v1/models/{name}", 404, "unknown-model", params={"name": "no-such-model"}),
    Case("GET", "/v1/models/{name}", 400, "invalid-parameter", params={"name": "café"}),
    Case("GET", "/v1/models/{name}/versions/{version}", 200, params=VERSION),
    Case("GET", "/v1/models/{name}/versions/{version}", 404, "unknown-model", params={**MODEL, "version": "9.9.9"}),
    Case("GET", "/v1/models/{name}/versions/{version}", 400, "invalid-parameter", params={**MODEL, "version": "-1"}),
    # replays
    Case("POST", "/v1/replays", 202, role="examiner", json={"request_id": "oa-kept", "purpose": "contract test"}),
    Case("POST", "/v1/replays", 422, "invalid-replay", json={}),
    Case("POST", "/v1/replays", 422, "invalid-request", json={"request_id": 7}),
    Case("POST", "/v1/replays", 415, "unsupported-media-type", content=b"{}", headers=TEXT),
    Case("GET", "/v1/replays/{replay_id}", 200, params=REPLAY),
    Case("GET", "/v1/replays/{replay_id}", 404, "unknown-replay", params=NO_REPLAY),
    Case("GET", "/v1/replays/{replay_id}/report.json", 200, params=REPLAY),
    Case("GET", "/v1/replays/{replay_id}/report.json", 404, "unknown-replay", params=NO_REPLAY),
    Case("GET", "/v1/replays/{replay_id}/report.html", 200, params=REPLAY),
    Case("GET", "/v1/replays/{replay_id}/report.html", 404, "unknown-replay", params=NO_REPLAY),
    # operations
    Case("GET", "/healthz", 200, role=None),
    Case("GET", "/readyz", 200, role=None),
    Case("GET", "/metrics", 200, role=None),
]  # fmt: skip

V2_CASES: list[Case] = [
    Case("GET", "/v2", 200, role=None),
    Case("GET", "/v2/health/live", 200, role=None),
    Case("GET", "/v2/health/ready", 200, role=None),
    Case("GET", "/v2/models/{model_name}", 200, role="client", params={"model_name": "german-credit"}),
    Case("GET", "/v2/models/{model_name}", 404, "unknown model", params={"model_name": "no-such-model"}),
    Case("GET", "/v2/models/{model_name}", 400, "bad name", params={"model_name": "café"}),
    Case("GET", "/v2/models/{model_name}/versions/{model_version}", 200, params={"model_name": "german-credit", "model_version": "{version}"}),
    Case("GET", "/v2/models/{model_name}/ready", 200, params={"model_name": "german-credit"}),
    Case("GET", "/v2/models/{model_name}/versions/{model_version}/ready", 200, params={"model_name": "german-credit", "model_version": "{version}"}),
    Case("POST", "/v2/models/{model_name}/infer", 200, role="client", params={"model_name": "german-credit"}, json=_infer_body),
    Case("POST", "/v2/models/{model_name}/infer", 400, "bad tensor", params={"model_name": "german-credit"}, json={"inputs": []}),
    Case("POST", "/v2/models/{model_name}/versions/{model_version}/infer", 200, params={"model_name": "german-credit", "model_version": "{version}"}, json=lambda w: {**_infer_body(w), "id": "oa-infer-pinned"}),
]  # fmt: skip
"""The Open Inference Protocol routes (gateway.inference_http)."""

ALL_CASES = CASES + V2_CASES


# -- the server, the document and the world the cases refer to ---------------------------------


@pytest.fixture(scope="module")
def client(live_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_gateway.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def document(client) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def registry(document) -> Registry:
    return Registry().with_resource(DOCUMENT, DRAFT202012.create_resource(document))


@pytest.fixture(scope="module")
def world(client, live_gateway) -> World:
    """Decisions about three subjects (one then erased, one to erase in a case) and a
    finished replay, made through the API as a client would."""
    admin = auth(live_gateway.tokens["admin"])
    bodies = {
        request_id: {
            "model": "german-credit",
            "request_id": request_id,
            "subject_id": subject,
            "attributes": ATTRIBUTES,
        }
        for request_id, subject in [
            ("oa-kept", "oa-subject-kept"),
            ("oa-erased", "oa-subject-gone"),
            ("oa-erase-me", "oa-subject-erase-me"),
        ]
    }
    for body in bodies.values():
        made = client.post("/v1/decisions", json=body, headers=admin)
        assert made.status_code == 200, made.text
    erased = client.request("DELETE", "/v1/subjects/oa-subject-gone", json={"basis": "contract test"}, headers=admin)
    assert erased.status_code == 200, erased.text
    models = client.get("/v1/models", headers=admin).json()
    version = next(m["production"] for m in models if m["name"] == "german-credit")
    replay = _finished_replay(client, auth(live_gateway.tokens["examiner"]), "oa-kept")
    return World(values={"version": version, "replay": replay}, erased_body=bodies["oa-erased"])


def _finished_replay(client: httpx.Client, headers: dict[str, str], request_id: str) -> str:
    started = client.post("/v1/replays", json={"request_id": request_id, "purpose": "contract test"}, headers=headers)
    assert started.status_code == 202, started.text
    replay_id = started.json()["replay_id"]
    for _ in range(480):
        state = client.get(f"/v1/replays/{replay_id}", headers=headers).json()["state"]
        if state not in ("queued", "running"):
            assert state == "finished"
            return replay_id
        time.sleep(0.5)  # polled: a replay runs on its own thread
    raise AssertionError(f"replay {replay_id} still not finished after 480 status polls")


# -- sending a case and checking its answer ------------------------------------------------------


def _send(client: httpx.Client, case: Case, world: World, token: str | None) -> httpx.Response:
    url = case.path
    for name, value in case.params.items():
        url = url.replace(f"{{{name}}}", quote(world.fill(value), safe=""))
    headers = dict(case.headers) | ({"Authorization": f"Bearer {token}"} if token else {})
    body = case.json(world) if callable(case.json) else case.json
    if case.content is not None:
        return client.request(case.method, url, content=case.content, headers=headers)
    if body is not None:
        return client.request(case.method, url, json=body, headers=headers)
    return client.request(case.method, url, headers=headers)


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = document["paths"].get(path, {}).get(method.lower())
    assert operation is not None, f"{method} {path} is not in the document"
    return operation


def _check_answer(document: dict, registry: Registry, method: str, path: str, response: httpx.Response) -> None:
    """The status is documented for the operation, in this media type, and the body fits its schema."""
    status = str(response.status_code)
    documented = _operation(document, method, path)["responses"]
    assert status in documented, f"{method} {path} answered {status}, the document lists {sorted(documented)}"
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    content = documented[status].get("content", {})
    assert media_type in content, f"{method} {path} {status} answered {media_type}, documented {sorted(content)}"
    if media_type == "application/json" or media_type.endswith("+json"):
        escaped = path.replace("~", "~0").replace("/", "~1")
        pointer = (
            f"#/paths/{escaped}/{method.lower()}/responses/{status}/content/{media_type.replace('/', '~1')}/schema"
        )
        validator = OAS31Validator({"$ref": DOCUMENT + pointer}, registry=registry)
        errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(response.json())]
        assert not errors, f"{method} {path} {status} breaks its schema: {errors[:5]}"
    else:
        assert response.content, f"{method} {path} {status} sent an empty {media_type} body"
    if media_type == PROBLEM:
        slug = response.json()["type"].rsplit("/", 1)[-1]
        assert f"`{slug}`" in documented[status]["description"], (
            f"{method} {path} {status} answered problem type {slug!r}, which its description does not list"
        )


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                yield method.upper(), path, operation


# -- the document ----------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_31(document):
    assert document["openapi"].startswith("3.1")
    validate_spec(document)


def test_every_operation_has_a_success_case(document):
    checked = {(c.method, c.path) for c in ALL_CASES if c.success}
    missing = [f"{m} {p}" for m, p, _ in _operations(document) if (m, p) not in checked]
    assert not missing, (
        f"operations without a success case: {missing}; add a Case(...) row to CASES "
        "(or V2_CASES) in tests/gateway/test_openapi_contract.py"
    )


def test_every_case_names_an_operation_of_the_document(document):
    for case in ALL_CASES:
        _operation(document, case.method, case.path)


def test_every_operation_says_which_key_it_needs(document):
    assert document["components"]["securitySchemes"][SECURITY_SCHEME] | {"description": ""} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key",
        "description": "",
    }
    for method, path, operation in _operations(document):
        security = operation["security"]
        if not security:
            assert "No API key needed" in operation["description"], f"{method} {path}"
            continue
        (requirement,) = security
        (scope,) = requirement[SECURITY_SCHEME]
        assert scope in SCOPES and operation["x-scopes"] == [scope], f"{method} {path}"
        assert f"`{scope}`" in operation["description"] and {"401", "403"} <= operation["responses"].keys()


def test_json_answers_are_typed_and_other_answers_have_their_media_type(document):
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                schema = content.get("schema")
                where = f"{method} {path} {status} {media_type}"
                if media_type == "application/json" or media_type.endswith("+json"):
                    assert schema not in (None, {}, {"type": "string"}), f"{where} has no type: {schema}"
                else:
                    assert schema == {"type": "string", "contentMediaType": media_type}, where


def test_no_union_lets_a_whole_number_match_two_branches(document):
    def unions(node: Any) -> Iterator[list]:
        if isinstance(node, dict):
            if isinstance(node.get("oneOf"), list):
                yield node["oneOf"]
            for value in node.values():
                yield from unions(value)
        elif isinstance(node, list):
            for value in node:
                yield from unions(value)

    for branches in unions(document):
        assert not {"integer", "number"} <= {b.get("type") for b in branches if isinstance(b, dict)}, branches


# -- every case against the real server --------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_case(case, client, live_gateway, world, document, registry):
    token = live_gateway.tokens[case.role] if case.role else None
    response = _send(client, case, world, token)
    assert response.status_code == case.status, f"{case.id}: got {response.status_code}: {response.text[:500]}"
    _check_answer(document, registry, case.method, case.path, response)


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.success], ids=lambda c: c.id)
def test_keys_and_scopes(case, client, live_gateway, world, document, registry):
    """A route that declares a scope refuses no key and a bad key (401) and a key without
    the scope (403), as documented; a route that declares none answers without a key."""
    security = _operation(document, case.method, case.path)["security"]
    if not security:
        response = _send(client, case, world, None)
        assert response.status_code == case.status, (
            f"{case.id} declares no security but answered {response.status_code} without a key: "
            "give the route its guard with **guarded(scope) (gateway.openapi_contract)"
        )
        _check_answer(document, registry, case.method, case.path, response)
        return
    (scope,) = security[0][SECURITY_SCHEME]
    for token in (None, "vk_not-a-key"):
        response = _send(client, case, world, token)
        assert response.status_code == 401, f"{case.id} without a valid key: {response.status_code}"
        assert response.headers["www-authenticate"].startswith("Bearer")
        _check_answer(document, registry, case.method, case.path, response)
    role = next(r for r, scopes in ROLE_SCOPES.items() if scope not in scopes and "admin" not in scopes)
    response = _send(client, case, world, live_gateway.tokens[role])
    assert response.status_code == 403, f"{case.id} with a key without {scope!r}: {response.status_code}"
    _check_answer(document, registry, case.method, case.path, response)


# -- the documentation pages, offline -------------------------------------------------------------------


class _Assets(HTMLParser):
    """Every script and stylesheet (and other linked resource) a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.urls.append(str(found["src"]))
        if tag == "link" and found.get("href") and not str(found["href"]).startswith("data:"):
            self.urls.append(str(found["href"]))


@pytest.mark.parametrize("page", ["/schema", "/schema/redoc", "/schema/swagger"])
def test_docs_pages_load_only_the_gateways_own_assets(page, client):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(response.text)
    assert parser.urls, f"{page} loads no script"
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/schema/assets/"), f"{page} loads {url}"
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 10_000, url
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css")), url
    assert client.get(f"/schema/assets/{REDOC}/LICENSE").status_code == 404  # only what the pages load


# -- a client generated from the document ------------------------------------------------------------


def test_a_client_generated_from_the_document_makes_a_decision(client, live_gateway, document, tmp_path):
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    models_py = tmp_path / "verdict_client_models.py"
    command = [sys.executable, "-m", "datamodel_code_generator", "--input", str(tmp_path / "openapi.json")]
    command += ["--input-file-type", "openapi", "--output-model-type", "pydantic_v2.BaseModel"]
    command += ["--target-python-version", "3.11", "--formatters", "builtin", "--output", str(models_py)]
    generated = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stderr
    spec = importlib.util.spec_from_file_location("verdict_client_models", models_py)
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = models  # pydantic resolves the generated annotations through the module
    try:
        spec.loader.exec_module(models)
        request = models.DecisionRequest(
            model="german-credit", attributes=ATTRIBUTES, request_id="oa-generated", subject_id="oa-subject-kept"
        )
        headers = {**auth(live_gateway.tokens["both"]), **JSON_TYPE}
        made = client.post("/v1/decisions", content=request.model_dump_json(exclude_none=True), headers=headers)
        assert made.status_code == 200, made.text
        decision = models.DecisionResponse.model_validate_json(made.content)
        assert decision.request_id == "oa-generated" and decision.model.name == "german-credit"
        assert set(decision.contributions) == set(ATTRIBUTES) and decision.receipt.chain_id

        record = client.get("/v1/decisions/oa-generated", headers=headers)
        view = models.RecordView.model_validate_json(record.content)
        assert view.record.body.request_id == "oa-generated"

        missing = client.get("/v1/decisions/oa-never-made", headers=headers)
        problem = models.Problem.model_validate_json(missing.content)
        assert problem.status == 404 and problem.type.endswith("/unknown-request-id")
    finally:
        sys.modules.pop(spec.name, None)

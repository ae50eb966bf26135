"""Bad input and bad credentials over real HTTP: never a 5xx, always problem+json
naming the field and the rule, and never a record for a rejected request."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import auth
from verdict.gateway.datasets import load_dataset

VALID = load_dataset("german-credit").rows[0]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client(live_gateway):
    with httpx.Client(base_url=live_gateway.url, timeout=30) as c:
        yield c


def _problem(response: httpx.Response) -> dict:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body = response.json()
    assert {"type", "title", "status"} <= body.keys() and body["status"] == response.status_code
    return body


def _post(client, live_gateway, body, **kw) -> httpx.Response:
    headers = {**auth(live_gateway.tokens["client"]), **kw.pop("headers", {})}
    if isinstance(body, (bytes, str)):
        return client.post("/v1/decisions", content=body, headers={"Content-Type": "application/json", **headers}, **kw)
    return client.post("/v1/decisions", json=body, headers=headers, **kw)


@pytest.mark.parametrize(
    ("mutate", "field", "rule"),
    [
        (lambda b: b["attributes"].pop("age_years"), "attributes.age_years", "required"),
        (lambda b: b["attributes"].update(age_years=12), "attributes.age_years", "minimum"),
        (lambda b: b["attributes"].update(age_years="old"), "attributes.age_years", "type"),
        (lambda b: b["attributes"].update(purpose="A99"), "attributes.purpose", "category"),
        (lambda b: b["attributes"].update(shoe_size=44), "attributes.shoe_size", "unknown_field"),
        (lambda b: b.pop("model"), "model", "required"),
        (lambda b: b.update(model=5), "model", "type"),
        (lambda b: b.update(extra=True), "extra", "unknown_field"),
        (lambda b: b.update(request_id="has spaces"), "request_id", "pattern"),
        (lambda b: b.update(attributes=[1, 2]), "attributes", "type"),
    ],
)
def test_each_rule_is_named(client, live_gateway, mutate, field, rule):
    body = {"model": "german-credit", "attributes": dict(VALID)}
    mutate(body)
    problem = _problem(_post(client, live_gateway, body))
    assert problem["status"] == 422
    assert any(e["field"] == field and e["rule"] == rule for e in problem["errors"]), problem


def _with_raw(field: str, literal: str) -> str:
    """A valid decision body whose attribute ``field`` is the raw JSON text ``literal``."""
    return json.dumps({"model": "german-credit", "attributes": dict(VALID, **{field: 0})}).replace(
        f'"{field}": 0', f'"{field}": {literal}'
    )


def _rules(problem: dict) -> list[tuple[str, str]]:
    return [(e["field"], e["rule"]) for e in problem.get("errors") or []]


@pytest.fixture
def no_traceback(live_gateway):
    """Refusing bad input is not an error: the server must log no traceback for it."""
    start = live_gateway.log_path.stat().st_size
    yield
    with open(live_gateway.log_path, "rb") as log:
        log.seek(start)
        logged = log.read().decode(errors="replace")
    assert "Traceback" not in logged, logged


@pytest.mark.parametrize("literal", ["1e400", "-1e999"])
def test_overflowing_numbers_name_the_field(client, live_gateway, no_traceback, literal):
    problem = _problem(_post(client, live_gateway, _with_raw("duration_months", literal)))
    assert problem["status"] == 422
    assert _rules(problem) == [("attributes.duration_months", "finite")], problem
    assert problem["errors"][0]["value"] == literal


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_json_numbers_are_a_syntax_error(client, live_gateway, no_traceback, literal):
    problem = _problem(_post(client, live_gateway, _with_raw("duration_months", literal)))
    assert problem["status"] == 400 and _rules(problem) == [("body", "syntax")], problem


def test_malformed_json_and_wrong_shapes(client, live_gateway):
    assert _problem(_post(client, live_gateway, b"{not json"))["status"] == 400
    assert _problem(_post(client, live_gateway, b"[]"))["status"] in (400, 422)
    assert _problem(_post(client, live_gateway, b'"just a string"'))["status"] in (400, 422)


def test_body_too_large(client, live_gateway):
    body = {"model": "german-credit", "attributes": dict(VALID), "subject_id": "x" * 100}
    big = json.dumps(body).replace('"x', '"' + "y" * 70000 + "x")
    assert _problem(_post(client, live_gateway, big))["status"] == 413


def test_unknown_model_and_version(client, live_gateway):
    problem = _problem(_post(client, live_gateway, {"model": "nope", "attributes": VALID}))
    assert problem["status"] == 404 and "nope" in problem["detail"]
    problem = _problem(_post(client, live_gateway, {"model": "german-credit", "version": "9.9.9", "attributes": VALID}))
    assert problem["status"] == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic abc"}, 401)],
)
def test_authentication_required(client, headers, status):
    response = client.post("/v1/decisions", json={"model": "german-credit", "attributes": VALID}, headers=headers)
    assert _problem(response)["status"] == status
    assert response.headers.get("www-authenticate", "").startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("POST", "/v1/decisions", "staff", 403),
        ("POST", "/v1/decisions", "examiner", 403),
        ("GET", "/v1/decisions/x/explanation", "client", 403),
        ("GET", "/v1/decisions/x", "client", 403),
        ("GET", "/v1/decisions/x/explanation", "staff", 404),
        ("GET", "/v1/decisions/x/explanation", "admin", 404),
    ],
)
def test_scopes(client, live_gateway, method, path, role, status):
    body = {"model": "german-credit", "attributes": VALID} if method == "POST" else None
    response = client.request(method, path, json=body, headers=auth(live_gateway.tokens[role]))
    assert _problem(response)["status"] == status


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_bodies(draw):
    body = {"model": "german-credit", "request_id": "fuzz", "attributes": dict(VALID)}
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "attributes"]))
        target = body.get("attributes") if where == "attributes" else body
        if not isinstance(target, dict):
            target = body
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        keys = list(target)
        if action == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            target[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return body


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=mutated_bodies())
def test_generated_bad_input_never_5xx_and_always_problem_json(client, live_gateway, body):
    body["request_id"] = "fuzz"  # a rejected request must never be recorded, so this id stays unused
    response = _post(client, live_gateway, body)
    if response.status_code == 200:
        return  # the mutation happened to leave a valid body (but see the final check)
    problem = _problem(response)
    if problem["status"] == 422:
        assert problem["errors"] and all(e["field"] and e["rule"] for e in problem["errors"])


def test_rejected_requests_left_no_record(client, live_gateway):
    lookup = client.get("/v1/decisions/fuzz", headers=auth(live_gateway.tokens["staff"]))
    if lookup.status_code == 200:  # only a fully valid generated body may have been decided
        attributes = lookup.json()["opened"]["inputs"]["attributes"]  # sealed in the record (spec §3a)
        assert set(attributes) == set(VALID)
    else:
        assert lookup.status_code == 404


# -- issue 14: the edge of the API (schemathesis findings) ----------------------------------------


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/models/a%20b", "name"),
        ("/v1/models/caf%C3%A9", "name"),
        ("/v1/models/a%00", "name"),
        ("/v1/models/german-credit%0A", "name"),
        ("/v1/models/german-credit/versions/1.0.0%20", "version"),
        ("/v1/models/german-credit/versions/1.0.0%0A", "version"),
        ("/v1/models/a%20b/versions/1.0.0", "name"),
    ],
)
def test_model_path_outside_the_registry_alphabet_is_400(client, live_gateway, no_traceback, path, parameter):
    from verdict.gateway.api_models import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN

    problem = _problem(client.get(path, headers=auth(live_gateway.tokens["client"])))
    assert problem["status"] == 400 and _rules(problem) == [(parameter, "pattern")], problem
    pattern = {"name": MODEL_NAME_PATTERN, "version": MODEL_VERSION_PATTERN}[parameter]
    assert problem["errors"][0]["message"] == f"must match {pattern}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "a b"),
        ("model", "café"),
        ("model", "a\u0000"),
        ("model", "german-credit\n"),
        ("version", "1.0.0 "),
        ("version", "1.0.0\n"),
        ("request_id", "loan-1\n"),
    ],
)
def test_model_in_body_outside_the_registry_alphabet_is_422(client, live_gateway, no_traceback, field, value):
    body = {"model": "german-credit", "attributes": dict(VALID), field: value}
    problem = _problem(_post(client, live_gateway, body))
    assert problem["status"] == 422 and _rules(problem) == [(field, "pattern")], problem


def test_openapi_states_the_edge_rules(client):
    from verdict.gateway.api_models import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN

    paths = client.get("/schema/openapi.json").json()["paths"]
    operation = paths["/v1/models/{name}/versions/{version}"]["get"]
    patterns = {p["name"]: p["schema"].get("pattern") for p in operation["parameters"] if p["in"] == "path"}
    assert patterns == {"name": MODEL_NAME_PATTERN, "version": MODEL_VERSION_PATTERN}
    assert set(operation["responses"]["400"]["content"]) == {PROBLEM}
    decide = paths["/v1/decisions"]["post"]
    assert set(decide["requestBody"]["content"]) == {"application/json"}
    assert {"400", "415", "422"} <= decide["responses"].keys()
    assert all(set(decide["responses"][status]["content"]) == {PROBLEM} for status in ("400", "415", "422"))


@pytest.mark.parametrize("depth", [33, 1000, 30_000])
def test_deep_nesting_is_refused_before_decoding(client, live_gateway, no_traceback, depth):
    nested = "[" * (depth - 2) + "]" * (depth - 2)  # inside the body object and its attributes object
    problem = _problem(_post(client, live_gateway, _with_raw("purpose", nested)))
    assert problem["status"] == 400 and _rules(problem) == [("body", "max_depth")], problem


def test_nesting_up_to_the_limit_is_decoded(client, live_gateway, no_traceback):
    nested = "[" * 30 + "]" * 30
    problem = _problem(_post(client, live_gateway, _with_raw("purpose", nested)))
    assert problem["status"] == 422 and _rules(problem) == [("attributes.purpose", "category")], problem


def test_invalid_utf8_is_400(client, live_gateway, no_traceback):
    text = json.dumps({"model": "german-credit", "attributes": VALID, "subject_id": "XX"})
    problem = _problem(_post(client, live_gateway, text.encode().replace(b'"XX"', b'"\xff\xfe"')))
    assert problem["status"] == 400 and _rules(problem) == [("body", "encoding")], problem


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "iso-8859-1"])
def test_non_utf8_charset_is_415(client, live_gateway, no_traceback, charset):
    text = json.dumps({"model": "german-credit", "attributes": VALID})
    response = _post(client, live_gateway, text, headers={"Content-Type": f"application/json; charset={charset}"})
    problem = _problem(response)
    assert problem["status"] == 415 and _rules(problem) == [("Content-Type", "charset")], problem


@pytest.mark.parametrize(
    ("content_type", "request_id"),
    [
        (None, "ctype-none"),
        ("text/plain", "ctype-text"),
        ("application/x-www-form-urlencoded", "ctype-form"),
        ("multipart/form-data; boundary=x", "ctype-multipart"),
        ("application/problem+json", "ctype-problem-json"),
    ],
)
def test_decision_body_must_be_application_json(client, live_gateway, no_traceback, content_type, request_id):
    headers = auth(live_gateway.tokens["client"]) | ({"Content-Type": content_type} if content_type else {})
    body = json.dumps({"model": "german-credit", "request_id": request_id, "attributes": VALID})
    problem = _problem(client.post("/v1/decisions", content=body, headers=headers))
    assert problem["status"] == 415 and _rules(problem) == [("Content-Type", "media_type")], problem
    lookup = client.get(f"/v1/decisions/{request_id}", headers=auth(live_gateway.tokens["staff"]))
    assert lookup.status_code == 404, "a refused request must leave no record"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=UTF-8", 'application/json;charset="utf-8"', "Application/JSON"]
)
def test_json_content_type_variants_are_accepted(client, live_gateway, content_type):
    text = json.dumps({"model": "german-credit", "attributes": VALID})
    assert _post(client, live_gateway, text, headers={"Content-Type": content_type}).status_code == 200


def test_replay_body_must_be_application_json(client, live_gateway, no_traceback):
    body = json.dumps({"request_id": "never-decided", "all": True})
    headers = {**auth(live_gateway.tokens["examiner"]), "Content-Type": "text/plain"}
    problem = _problem(client.post("/v1/replays", content=body, headers=headers))
    assert problem["status"] == 415 and _rules(problem) == [("Content-Type", "media_type")], problem


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda b: b.update(model=None), "model", "must be a string, got null"),
        (lambda b: b.update(model=5), "model", "must be a string, got number"),
        (lambda b: b.update(request_id=True), "request_id", "must be a string or null, got boolean"),
        (lambda b: b.update(attributes=[1, 2]), "attributes", "must be an object, got array"),
        (lambda b: b.update(attributes="x"), "attributes", "must be an object, got string"),
    ],
)
def test_type_errors_speak_json(client, live_gateway, mutate, field, message):
    body = {"model": "german-credit", "attributes": dict(VALID)}
    mutate(body)
    problem = _problem(_post(client, live_gateway, body))
    assert [(e["field"], e["rule"], e["message"]) for e in problem["errors"]] == [(field, "type", message)], problem


@pytest.mark.parametrize(("value", "received"), [(None, "null"), ([1], "array"), ({"a": 1}, "object")])
def test_attribute_type_errors_speak_json(client, live_gateway, value, received):
    problem = _problem(
        _post(client, live_gateway, {"model": "german-credit", "attributes": dict(VALID, age_years=value)})
    )
    assert [e["message"] for e in problem["errors"]] == [f"must be a whole number, got {received}"], problem


def test_unknown_model_does_not_list_the_registered_ones(client, live_gateway):
    responses = [
        _post(client, live_gateway, {"model": "nope", "attributes": VALID}),
        client.get("/v1/models/nope", headers=auth(live_gateway.tokens["client"])),
        client.get("/v1/models/nope/versions/1.0.0", headers=auth(live_gateway.tokens["client"])),
    ]
    for response in responses:
        problem = _problem(response)
        assert problem["status"] == 404 and "nope" in problem["detail"]
        assert "german-credit" not in response.text, problem


def test_unknown_request_id_does_not_reveal_the_store(client, live_gateway):
    response = client.get("/v1/decisions/never-decided", headers=auth(live_gateway.tokens["staff"]))
    assert _problem(response)["status"] == 404
    assert "file:" not in response.text and str(live_gateway.home) not in response.text, response.text

"""The OpenAPI document at ``/schema/openapi.json``: a contract clients can be generated from.

Why finish Litestar's document: as generated it declared no security, listed
few of the problem+json errors the routes really answer, and typed an
``int | float`` union as ``oneOf`` (a whole number matches both branches, so
a real record failed the served schema). These rules make it true, applied
to the whole document when it is first served, so a route added later gets
them without anyone remembering:

1. **Security from one value.** :func:`guarded` gives a route both its guard
   and its security requirement (the ``apiKey`` bearer scheme with the scope),
   so the two cannot drift. An operation with a requirement gets ``x-scopes``,
   a sentence saying which key it needs, and its 401 and 403; one without gets
   ``security: []`` (no key needed).
2. **Errors by kind of route.** Besides the domain errors a route names
   (gateway.problems.problem_responses), an operation with a JSON body gets the
   body gate's statuses (gateway.request_body: 400, 413, 415, 422), one with a
   constrained URL parameter gets 400 ``invalid-parameter``, and every
   operation gets 500 ``internal-error``. Each is answered in the operation's
   own error body: problem+json, unless the route documents another one (the
   Open Inference Protocol's ``{"error": ...}`` routes do; such a route must
   document at least one error response). Litestar's own 400 body, which the
   gateway never sends, is dropped.
3. **Overlapping unions are ``anyOf``.** A ``oneOf`` with both ``integer`` and
   ``number`` branches becomes ``anyOf``: a whole number is valid for both.
4. **A nullable string's rules are its string branch's.** Litestar puts the
   ``pattern`` (lengths, format) of ``str | None`` beside the ``oneOf``; moved
   into the string branch, generators make one constrained optional string of
   it rather than a wrapper type per branch.

Raw bodies (a PNG, HTML, the metrics text) are typed as strings of their media
type; 401 and 503 answers document ``WWW-Authenticate`` and ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import OpenAPI

from verdict.gateway.apikeys import SCOPES
from verdict.gateway.auth import require_scope
from verdict.gateway.openapi_pages import docs_router, render_plugins
from verdict.gateway.problems import MEDIA_TYPE, describe_problems, problem_kind, problem_line

__all__ = ["SCOPES", "SECURITY_SCHEME", "ContractConfig", "contract_config", "finish_document", "guarded"]

SECURITY_SCHEME = "apiKey"
"""The name of the bearer scheme in ``components.securitySchemes``."""


_SCHEME_TEXT = (
    "An API key sent as `Authorization: Bearer <key>` (`verdict apikeys create --scope ...`). "
    "Each operation names the scope it needs in its security requirement and in `x-scopes`: "
    "`score` (decisions, models), `explain` (lookups, subject access), `replay` (examiners' replays), "
    "`admin` (erasure; an admin key passes every scope). A missing or invalid key answers 401, "
    "a key without the scope 403, each in the operation's error body (`application/problem+json` "
    "on `/v1`)."
)
_STRING_RULES = {"pattern", "minLength", "maxLength", "format"}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_JSON = "application/json"


def guarded(scope: str) -> dict[str, Any]:
    """Route decorator arguments for a route that needs an API key with ``scope`` (or an
    ``admin`` key): the guard that enforces it and the security requirement that documents
    it, from the one value. ``@get("/v1/x", **guarded("explain"), ...)``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")
    return {"guards": [require_scope(scope)], "security": [{SECURITY_SCHEME: [scope]}]}


def _kind_line(error: type[Exception]) -> tuple[int, str]:
    kind = problem_kind(error)
    return kind.status, problem_line(kind.slug, kind.title)


# The problems each kind of route can answer besides its own (slugs and titles as
# gateway.request_body and gateway.problems give them).
_GUARDED = dict([_kind_line(NotAuthorizedException), _kind_line(PermissionDeniedException)])
_JSON_BODY = {
    400: "\n".join(
        [
            problem_line("malformed-json", "The request body is not valid JSON"),
            problem_line("invalid-encoding", "The request body is not UTF-8"),
            problem_line("too-deep", "The request body is nested too deeply"),
        ]
    ),
    413: problem_line("body-too-large", "Request body too large (more than the gateway's `max_body_bytes`)"),
    415: "\n".join(
        [
            problem_line("unsupported-media-type", "The request body must be application/json"),
            problem_line("unsupported-charset", "The request body must be UTF-8"),
        ]
    ),
    422: problem_line("invalid-request", "The request body breaks the API schema (`errors[]` names each field)"),
}
_PARAMETER = {400: problem_line("invalid-parameter", "A URL parameter breaks a rule")}
_EVERY = {500: problem_line("internal-error", "Internal error (nothing was decided; never a traceback)")}

_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": 'The scheme to authenticate with: `Bearer realm="verdict"`',
            "required": True,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds after which the same request may succeed (where the gateway knows)",
            "required": False,
            "schema": {"type": "integer"},
        }
    },
}


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """Apply the module's rules to a generated document (in place; returned for convenience)."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = _security_scheme()
    for item in document.get("paths", {}).values():
        for method in _METHODS:
            if (operation := item.get(method)) is not None:
                _finish_operation(operation)
    _tidy_unions(document)
    return document


def _security_scheme() -> dict[str, Any]:
    return {"type": "http", "scheme": "bearer", "bearerFormat": "API key", "description": _SCHEME_TEXT}


def _finish_operation(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    _drop_framework_400(responses)
    error_content = _error_content(responses)
    derived: list[dict[int, str]] = [_EVERY]
    scopes = sorted({scope for need in operation.get("security") or [] for scope in need.get(SECURITY_SCHEME, [])})
    if operation.get("security"):
        operation["x-scopes"] = scopes
        _say(operation, f"**Needs an API key** with the {_scope_words(scopes)} scope (or an `admin` key).")
        derived.append(_GUARDED)
    else:
        operation["security"] = []
        _say(operation, "No API key needed.")
    if _JSON in operation.get("requestBody", {}).get("content", {}):
        derived.append(_JSON_BODY)
    if any(_constrained(parameter) for parameter in operation.get("parameters", [])):
        derived.append(_PARAMETER)
    for family in derived:
        for status, lines in family.items():
            _add_error(responses, str(status), lines, error_content)
    for status, response in responses.items():
        if status.isdigit() and int(status) in _HEADERS and response.get("content"):
            response.setdefault("headers", {}).update(_HEADERS[int(status)])
        for header in response.get("headers", {}).values():
            if "schema" not in header and "content" not in header:
                header["schema"] = {"type": "string"}  # Litestar's ResponseHeader has none to give
        for media_type, content in response.get("content", {}).items():
            _type_raw_body(media_type, content)
    operation["responses"] = dict(sorted(responses.items()))


def _scope_words(scopes: list[str]) -> str:
    return " or ".join(f"`{scope}`" for scope in scopes)


def _say(operation: dict[str, Any], sentence: str) -> None:
    text = operation.get("description")
    operation["description"] = f"{sentence}\n\n{text}" if text else sentence


def _drop_framework_400(responses: dict[str, Any]) -> None:
    """Litestar documents its own validation body for 400; gateway.problems answers every
    validation error as a problem instead (or the route's own error body)."""
    response = responses.get("400")
    if response is not None and "status_code" in _schema_of(response).get("properties", {}):
        del responses["400"]


def _schema_of(response: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = next(iter(response.get("content", {}).values()), {})
    return media.get("schema", {})


def _error_content(responses: dict[str, Any]) -> dict[str, Any]:
    """The body the operation's errors come in: the one its documented errors use, else
    problem+json. An error status answered in the success body (``/readyz``'s 503 not-ready)
    is a state of the resource, not an error body."""
    success = [r.get("content") for s, r in responses.items() if s.isdigit() and int(s) < 400]
    for status, response in responses.items():
        content = response.get("content")
        if status.isdigit() and int(status) >= 400 and content and content not in success:
            return content
    return {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _add_error(responses: dict[str, Any], status: str, lines: str, content: dict[str, Any]) -> None:
    """Document ``status`` with ``lines`` (problem types); a problem response the route
    already documents gets the lines it lacks, another error body is left as it is."""
    response = responses.get(status)
    if response is None:
        is_problem = MEDIA_TYPE in content
        description = describe_problems(int(status), lines.split("\n") if is_problem else [])
        responses[status] = {"description": description, "content": content}
        return
    if MEDIA_TYPE not in response.get("content", {}):
        return
    description = response.get("description", "")
    missing = [line for line in lines.split("\n") if line not in description]
    if missing:
        joiner = "\n" if "\n- `" in description else "\n\n"
        response["description"] = description + joiner + "\n".join(missing)


def _constrained(parameter: dict[str, Any]) -> bool:
    """Whether a value can break the parameter's rule (then the gateway answers 400)."""
    schema = parameter.get("schema", {})
    if parameter.get("in") == "query" and parameter.get("required"):
        return True
    return schema.get("type") != "string" or any(
        key in schema for key in ("pattern", "minLength", "maxLength", "enum", "const", "format")
    )


def _type_raw_body(media_type: str, content: dict[str, Any]) -> None:
    """A body that is not JSON is a string of its media type (bytes for an image)."""
    base = media_type.split(";")[0].strip()
    if base == _JSON or base.endswith("+json"):
        return
    if content.get("schema") in (None, {}, {"type": "string"}):
        content["schema"] = {"type": "string", "contentMediaType": base}


def _tidy_unions(node: Any) -> None:
    """Rules 3 and 4 of the module, over every schema in the document."""
    if isinstance(node, dict):
        branches = node.get("oneOf")
        if isinstance(branches, list):
            types = [branch.get("type") for branch in branches if isinstance(branch, dict)]
            if {"integer", "number"} <= set(types):
                node["anyOf"] = node.pop("oneOf")
            elif types.count("string") == 1 and (rules := _STRING_RULES & node.keys()):
                branch = branches[types.index("string")]
                branch.update({rule: node.pop(rule) for rule in sorted(rules)})
        for value in node.values():
            _tidy_unions(value)
    elif isinstance(node, list):
        for value in node:
            _tidy_unions(value)


@dataclass
class _FinishedOpenAPI(OpenAPI):
    """Litestar's document, finished by :func:`finish_document` whenever it is rendered."""

    def to_schema(self) -> dict[str, Any]:
        return finish_document(super().to_schema())


@dataclass
class ContractConfig(OpenAPIConfig):
    """Litestar's OpenAPI settings, building a document this module finishes."""

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        return _FinishedOpenAPI(**{field.name: getattr(base, field.name) for field in fields(base)})


def contract_config(title: str, version: str, path: str = "/schema", description: str | None = None) -> OpenAPIConfig:
    """The gateway's OpenAPI settings: the finished document and offline documentation pages
    (gateway.openapi_pages) under ``path``."""
    return ContractConfig(
        title=title,
        version=version,
        description=description,
        path=path,
        render_plugins=render_plugins(path),
        openapi_router=docs_router(path),
    )

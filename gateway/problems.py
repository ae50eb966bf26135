"""RFC 9457 problem details for every error the HTTP API returns.

Why one module: every 4xx/5xx, whether raised by our logic, by Litestar's
request parsing or by an unexpected bug, must reach the client as
``application/problem+json`` naming what was wrong, and an unexpected bug
must never leak a traceback or produce a half-made decision.

The services raise domain errors (gateway.service_errors, replay.service)
that know nothing of HTTP; :data:`PROBLEMS` is the one table that gives each
its status, problem type, title and headers. ``ApiProblem`` remains for what
only the HTTP layer can find wrong (a request body's bytes, its schema).
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException
from litestar.openapi import ResponseSpec

from verdict.gateway.api_models import ErasureOut, FieldProblem, Problem
from verdict.gateway.schema import InputValidationError
from verdict.gateway.service_errors import (
    AuditUnavailable,
    DecisionErased,
    DecisionTimeout,
    InputsSealed,
    ModelNotPromoted,
    ModelOutputInvalid,
    ModelUnavailable,
    ModelVersionRevoked,
    NoSubjectRecords,
    NotExplained,
    RecordInvalid,
    ReplayNotFinished,
    ReplaysUnavailable,
    RequestIdConflict,
    ServiceError,
    SubjectAccessUnavailable,
    SubjectRequestInvalid,
    SubjectUnderHold,
    UnknownDecision,
    UnknownModelVersion,
)
from verdict.replay.service import ReplayBusy, ReplayRequestError, UnknownReplay

__all__ = [
    "MEDIA_TYPE",
    "PROBLEMS",
    "ApiProblem",
    "ProblemKind",
    "describe_problems",
    "exception_handlers",
    "fields_problem",
    "invalid_request",
    "problem_kind",
    "problem_line",
    "problem_response",
    "problem_responses",
]

PROBLEM_TYPE_BASE = "https://verdict.example/problems/"
MEDIA_TYPE = "application/problem+json"
_log = logging.getLogger("verdict.gateway")


class ApiProblem(Exception):
    """A problem found by the HTTP layer itself (the request's bytes or schema), answered as is.
    Services raise domain errors instead; :data:`PROBLEMS` maps those."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
        erasure: ErasureOut | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors, self.headers, self.erasure = errors, headers or {}, erasure


def problem_response(request: Request, problem: ApiProblem) -> Response:
    body = Problem(
        type=PROBLEM_TYPE_BASE + problem.slug,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=request.url.path,
        errors=problem.errors,
        erasure=problem.erasure,
    )
    return Response(content=body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


def problem_responses(*causes: int | type[Exception]) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` for a route: the errors it can raise (classes :data:`PROBLEMS`
    maps, or a bare status), each answered with a Problem as ``application/problem+json``.

    Naming the error classes rather than statuses keeps the document and the table
    in step: the status, and the problem type listed in the response's description,
    come from the table itself. The statuses every route of a kind shares (401/403
    of a guarded route, the request-body rules, 500) are added when the document is
    finished (gateway.openapi_contract), so a route lists only its own."""
    lines: dict[int, list[str]] = {}
    for cause in causes:
        if isinstance(cause, int):
            lines.setdefault(cause, [])
            continue
        kind = problem_kind(cause)
        found = lines.setdefault(kind.status, [])
        if (line := problem_line(kind.slug, kind.title)) not in found:
            found.append(line)
    return {
        status: ResponseSpec(
            Problem, media_type=MEDIA_TYPE, description=describe_problems(status, found), generate_examples=False
        )
        for status, found in sorted(lines.items())
    }


def problem_line(slug: str, title: str) -> str:
    """One problem type in a response's description: its slug (the end of ``type``) and title."""
    return f"- `{slug}`: {title}"


def describe_problems(status: int, lines: list[str]) -> str:
    """A problem response's description: the status phrase, then each problem type it may carry."""
    return "\n\n".join([HTTPStatus(status).phrase, "\n".join(lines)]) if lines else HTTPStatus(status).phrase


# msgspec's messages, as Litestar passes them on, mapped to a stable rule name.
_RULES = (
    (re.compile(r"^Object missing required field `(?P<field>[^`]+)`"), "required"),
    (re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`"), "unknown_field"),
    (re.compile(r"^Expected `[^`]+` matching regex"), "pattern"),
    (re.compile(r"^Expected `[^`]+` of length"), "length"),
    (re.compile(r"^Expected `"), "type"),
)
_TYPE_MESSAGE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")
_PATTERN_MESSAGE = re.compile(r"^Expected `str` matching regex (?P<regex>'.*')$")  # the regex as Python repr
# msgspec's type names → JSON's, as expected ("must be ...") and as received ("got ...").
_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "object": "an object",
    "array": "an array",
}
_RECEIVED = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}


def fields_problem(
    status: int, slug: str, title: str, errors: list[FieldProblem], detail: str | None = None
) -> ApiProblem:
    """A problem listing broken rules; its detail repeats them as ``field: message`` for humans."""
    return ApiProblem(
        status,
        slug,
        title,
        detail="; ".join(f"{e.field}: {e.message}" for e in errors) or detail,
        errors=errors or None,
    )


def invalid_request(errors: list[FieldProblem], detail: str | None = None) -> ApiProblem:
    """422: the body is JSON but breaks the route's schema."""
    return fields_problem(422, "invalid-request", "The request body breaks the API schema", errors, detail)


def _in_json_terms(text: str) -> str:
    """Say ``must be a string, got number`` where msgspec says ``Expected `str`, got `int```:
    the client wrote JSON (or a URL), not Python."""
    if match := _TYPE_MESSAGE.match(text):
        expected = " or ".join(_EXPECTED.get(name, name) for name in match["expected"].split(" | "))
        return f"must be {expected}, got {_RECEIVED.get(match['got'], match['got'])}"
    if match := _PATTERN_MESSAGE.match(text):
        return f"must match {ast.literal_eval(match['regex'])}"
    return text


def _field_problem(message: dict[str, Any]) -> FieldProblem:
    text = str(message.get("message", "invalid value"))
    key = str(message.get("key") or "")
    field = key if key and key != "data" else ""
    for pattern, rule in _RULES:
        match = pattern.search(text)
        if match:
            if "field" in match.groupdict():
                field = f"{field}.{match['field']}" if field else match["field"]
            return FieldProblem(field=field or "body", rule=rule, message=_in_json_terms(text))
    return FieldProblem(field=field or "body", rule="invalid", message=text)


def _validation(request: Request, exc: ValidationException) -> Response:
    """Body fields break the schema (422); a path or query parameter that breaks its rule
    makes the URL itself wrong (400), e.g. a model name no registry key can hold."""
    messages = [m for m in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(m, dict)]
    errors = [_field_problem(m) for m in messages]
    if any(m.get("source", "body") != "body" for m in messages):
        return problem_response(
            request, fields_problem(400, "invalid-parameter", "A URL parameter breaks a rule", errors, exc.detail)
        )
    return problem_response(request, invalid_request(errors, exc.detail))


def _input_validation(request: Request, exc: InputValidationError) -> Response:
    errors = [FieldProblem(field=e.field, rule=e.rule, message=e.message, value=e.value) for e in exc.errors]
    kind = ANSWERED_APART[InputValidationError]
    return problem_response(request, ApiProblem(kind.status, kind.slug, kind.title, detail=str(exc), errors=errors))


def _http(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    titles = {
        400: "Bad request",
        401: "Authentication required",
        403: "Not allowed",
        404: "Not found",
        405: "Method not allowed",
        413: "Request body too large",
        415: "Unsupported media type",
    }
    slug = {401: "unauthenticated", 403: "forbidden", 404: "not-found", 413: "body-too-large"}.get(
        status, f"http-{status}"
    )
    detail = exc.detail if status < 500 else "the server could not complete the request"
    if status == 400 and "body" in str(exc.detail).lower():
        slug, detail = "malformed-json", "the request body is not valid JSON"
    return problem_response(
        request, ApiProblem(status, slug, titles.get(status, "HTTP error"), detail=detail, headers=_its_headers(exc))
    )


def _api_problem(request: Request, exc: ApiProblem) -> Response:
    return problem_response(request, exc)


def _no_headers(exc: Any) -> dict[str, str]:
    return {}


def _retry_after(exc: Any) -> dict[str, str]:
    """The error's own hint (``retry_after_s``) of when the same request may succeed."""
    return {"Retry-After": str(exc.retry_after_s)}


def _challenge(exc: NotAuthorizedException) -> dict[str, str]:
    """RFC 9110 §11.6.1: a 401 names the scheme the client must use."""
    return {"WWW-Authenticate": 'Bearer realm="verdict"', **(exc.headers or {})}


def _its_headers(exc: HTTPException) -> dict[str, str]:
    return dict(exc.headers or {})


def _broken_field(exc: ReplayRequestError) -> list[FieldProblem]:
    return [FieldProblem(field=exc.field, rule=exc.rule, message=str(exc))]


def _subject_field(exc: SubjectRequestInvalid) -> list[FieldProblem]:
    return [FieldProblem(field=exc.field, rule="required", message=exc.detail)]


@dataclass(frozen=True)
class ProblemKind:
    """How one error class reaches the client: status, problem type (``slug``), title, and
    what the error itself adds (headers from its facts, broken fields). The ``detail`` is
    always the error's own."""

    status: int
    slug: str
    title: str
    headers: Callable[[Any], dict[str, str]] = _no_headers
    errors: Callable[[Any], list[FieldProblem]] | None = None


PROBLEMS: dict[type[ServiceError | HTTPException], ProblemKind] = {
    # what the request names does not exist (or is not the caller's to read)
    UnknownModelVersion: ProblemKind(404, "unknown-model", "Unknown model or version"),
    UnknownDecision: ProblemKind(404, "unknown-request-id", "No decision with this request id"),
    UnknownReplay: ProblemKind(404, "unknown-replay", "No replay with this id readable by this API key"),
    ModelVersionRevoked: ProblemKind(
        410, "model-version-revoked", "The model version was revoked and no longer serves"
    ),
    DecisionErased: ProblemKind(410, "decision-erased", "The decision's personal data was erased"),
    NoSubjectRecords: ProblemKind(404, "unknown-subject", "Nothing is on file about this subject"),
    SubjectUnderHold: ProblemKind(409, "legal-hold", "A legal hold is set: erasure refused"),
    SubjectRequestInvalid: ProblemKind(
        422, "invalid-subject-request", "The subject request breaks a rule", errors=_subject_field
    ),
    # the request contradicts what is on record, or asks what the record cannot give
    RequestIdConflict: ProblemKind(409, "request-id-conflict", "Request id already used with a different body"),
    ModelNotPromoted: ProblemKind(
        409, "no-production-version", "The model has no production version: pin a version or promote one"
    ),
    NotExplained: ProblemKind(409, "not-explained", "This decision has no contributions to chart"),
    InputsSealed: ProblemKind(409, "inputs-sealed", "The applicant's inputs are encrypted"),
    ReplayNotFinished: ProblemKind(409, "replay-not-finished", "The replay has no report yet"),
    ReplayRequestError: ProblemKind(422, "invalid-replay", "The replay request breaks a rule", errors=_broken_field),
    # the model answered outside its declared output space: nothing was decided or recorded
    ModelOutputInvalid: ProblemKind(502, "model-output-invalid", "The model's output is outside its declared space"),
    # the trail itself is wrong: for operators
    RecordInvalid: ProblemKind(500, "record-invalid", "The logged decision failed verification"),
    # not now: the same request may succeed later
    AuditUnavailable: ProblemKind(
        503, "audit-unavailable", "Decision not made: the audit trail is unavailable", _retry_after
    ),
    DecisionTimeout: ProblemKind(503, "decision-timeout", "Decision not confirmed in time", _retry_after),
    ModelUnavailable: ProblemKind(
        503, "model-unavailable", "This model version cannot be served by this replica", _retry_after
    ),
    ReplayBusy: ProblemKind(503, "replay-busy", "Too many replays queued", _retry_after),
    ReplaysUnavailable: ProblemKind(503, "replay-unavailable", "Replays are not available on this gateway"),
    SubjectAccessUnavailable: ProblemKind(503, "subjects-unavailable", "No subject index on this gateway"),
    # the guards (gateway.auth)
    NotAuthorizedException: ProblemKind(401, "unauthenticated", "Authentication required", _challenge),
    PermissionDeniedException: ProblemKind(403, "forbidden", "Not allowed", _its_headers),
}
"""Error class -> what the client sees. Every class here answers through :func:`_mapped`."""

ANSWERED_APART: dict[type[Exception], ProblemKind] = {
    InputValidationError: ProblemKind(422, "invalid-attributes", "The attributes break the model's input schema"),
}
"""Errors with a handler of their own (their problem lists every broken rule), by the same
terms as :data:`PROBLEMS`, so routes can name them in their OpenAPI responses too."""


def problem_kind(error: type[Exception]) -> ProblemKind:
    """How ``error`` reaches the client: its own entry, or its nearest base class's."""
    for cls in error.__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
        if cls in ANSWERED_APART:
            return ANSWERED_APART[cls]
    raise KeyError(f"{error.__name__} is not mapped to a problem (gateway.problems.PROBLEMS)")


def _mapped(request: Request, exc: ServiceError | HTTPException) -> Response:
    kind = next(PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS)
    problem = ApiProblem(
        kind.status,
        kind.slug,
        kind.title,
        detail=exc.detail,
        errors=kind.errors(exc) if kind.errors else None,
        headers=kind.headers(exc),
        erasure=msgspec.convert(exc.erasure, ErasureOut) if isinstance(exc, DecisionErased) else None,
    )
    return problem_response(request, problem)


def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        ApiProblem(500, "internal-error", "Internal error", detail="the request failed; no decision was returned"),
    )


exception_handlers: dict[type[Exception] | int, Any] = {
    ValidationException: _validation,
    InputValidationError: _input_validation,
    **dict.fromkeys(PROBLEMS, _mapped),
    HTTPException: _http,
    ApiProblem: _api_problem,
    Exception: _unexpected,
}

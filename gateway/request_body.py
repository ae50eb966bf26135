"""The gate every JSON request body passes before a route sees it.

Why one gate: a body that is not UTF-8 JSON, is nested absurdly deep or holds
a number no float can carry must be refused at the edge with a problem that
names the rule, before anything is scored or written to the audit trail.
Left to the framework these cases were accepted (any Content-Type was parsed
as JSON), surfaced as a 500 (RecursionError deep inside the decoder) or as a
400 that did not say which field was wrong.

The gate runs in the app's ``before_request`` hook, so after authentication
(a caller without a key learns nothing about body rules) and before the
framework decodes the body into the route's ``data`` type. It applies to
every route that declares a ``data`` parameter, so a new POST route cannot
forget it. The rules, in the order they are checked:

=============  ======  =====================================================
rule           status  refused
=============  ======  =====================================================
media_type     415     a Content-Type other than ``application/json``
charset        415     a ``charset`` parameter other than ``utf-8``
(size)         413     more than ``max_body_bytes`` (Litestar's own limit)
encoding       400     bytes that are not UTF-8
max_depth      400     arrays/objects nested deeper than ``MAX_DEPTH``
syntax         400     not JSON
finite         422     a number outside the range of a 64-bit float (1e400)
=============  ======  =====================================================
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
import numpy as np
from litestar import Request

from verdict.gateway.api_models import FieldProblem
from verdict.gateway.problems import ApiProblem, fields_problem, invalid_request

__all__ = ["JSON_MEDIA_TYPE", "MAX_DEPTH", "check_json_body", "check_json_bytes", "check_media_type"]

JSON_MEDIA_TYPE = "application/json"
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted. The API's deepest
legitimate body is 2 levels; 32 leaves room without letting a body exhaust
the decoder's (or any later recursive walk's) stack."""

# A JSON string, removed whole so that brackets inside it do not count.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Keep only brackets, with objects' braces counted as arrays' brackets.
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class _OutOfRange:
    """Stands in for a number literal that overflows a float, to find where it was."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


async def check_json_body(request: Request) -> None:
    """Refuse the body of a route that takes one unless it passes every rule above."""
    if request.route_handler.parsed_data_field is None:
        return
    check_media_type(*request.content_type)
    check_json_bytes(await request.body())


def check_media_type(media_type: str, options: dict[str, str]) -> None:
    """Only ``application/json``, in UTF-8 (RFC 8259 §8.1), is accepted.

    ``application/*+json`` types are refused on purpose: each names its own
    vocabulary (problem details, merge patches...) that these routes do not
    implement, and accepting one would claim they do.
    """
    if media_type != JSON_MEDIA_TYPE:
        sent = media_type or "no Content-Type"
        raise _problem(
            415,
            "unsupported-media-type",
            "The request body must be application/json",
            "Content-Type",
            "media_type",
            f"must be {JSON_MEDIA_TYPE}, got {sent}",
        )
    charset = options.get("charset")
    if charset is not None and charset.strip().lower() != "utf-8":
        raise _problem(
            415,
            "unsupported-charset",
            "The request body must be UTF-8",
            "Content-Type",
            "charset",
            f"charset must be utf-8, got {charset}",
        )


def check_json_bytes(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Refuse bytes that are not UTF-8, nested too deep, not JSON, or carry an overflowing number."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _problem(
            400,
            "invalid-encoding",
            "The request body is not UTF-8",
            "body",
            "encoding",
            f"invalid UTF-8 at byte {exc.start}",
        ) from None
    depth = _depth(body)
    if depth > max_depth:
        raise _problem(
            400,
            "too-deep",
            "The request body is nested too deeply",
            "body",
            "max_depth",
            f"arrays and objects may nest at most {max_depth} deep, got {depth}",
        )
    try:
        msgspec.json.decode(body)
    except msgspec.ValidationError as exc:  # untyped, only "Number out of range"
        raise _out_of_range(body, exc) from None
    except msgspec.DecodeError as exc:
        raise _problem(
            400, "malformed-json", "The request body is not valid JSON", "body", "syntax", str(exc)
        ) from None


def _depth(body: bytes) -> int:
    """How deep arrays and objects nest: the most brackets open at once outside strings.

    Measured on the bytes, before decoding, because the decoder recurses once
    per level. Vectorised: a 64 KiB body of brackets costs well under a
    millisecond, where a Python loop over it took 30.
    """
    brackets = np.frombuffer(_STRING.sub(b"", body).translate(_AS_BRACKETS, _NOT_BRACKETS), dtype=np.uint8)
    if not brackets.size:
        return 0
    return int(np.cumsum(np.where(brackets == ord("["), 1, -1)).max())


def _out_of_range(body: bytes, exc: msgspec.ValidationError) -> ApiProblem:
    """The decoder says only ``$.attributes[...]``; decode again keeping the literals to name each field."""
    decoded = msgspec.json.Decoder(float_hook=_keep_overflow).decode(body)
    message = "must be a number a 64-bit float can hold (finite)"
    errors = [
        FieldProblem(field=field, rule="finite", message=message, value=literal)
        for field, literal in _overflows(decoded, "")
    ]
    return invalid_request(errors or [FieldProblem(field="body", rule="finite", message=str(exc))])


def _keep_overflow(literal: str) -> Any:
    value = float(literal)
    return value if math.isfinite(value) else _OutOfRange(literal)


def _overflows(value: Any, path: str) -> list[tuple[str, str]]:
    """(field path, literal) of every overflowing number; depth is already bounded."""
    if isinstance(value, _OutOfRange):
        return [(path or "body", value.literal)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _overflows(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _overflows(item, f"{path or 'body'}[{i}]")]
    return []


def _problem(status: int, slug: str, title: str, field: str, rule: str, message: str) -> ApiProblem:
    return fields_problem(status, slug, title, [FieldProblem(field=field, rule=rule, message=message)])

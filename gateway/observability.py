"""Observing incoming calls: request ids, server spans and access lines.

Every call into the gateway, whatever its protocol, gets the same three
things: a request id (the caller's ``X-Request-ID`` if acceptable, else a new
one), echoed back and put on every log line written while it is handled; a
server span, a child of the caller's W3C ``traceparent`` (when tracing is on:
gateway.tracing); and exactly one access line when it ends (logger
``verdict.access``: method, route template, status, latency, and what the
handlers noted: the decision's model, version, outcome and request id, the
problem type of a refusal, the API key's id; never attributes, subject ids,
keys or tokens).

HTTP gets them from :class:`ObservedHTTP`, the ASGI layer ``verdict serve``
wraps the whole Litestar app in (every route, 404s and guard refusals
included). Anything else in the process (a gRPC server) calls the same
functions itself; this module's public API:

* ``incoming(method, route, headers, protocol=...)``: a context manager for
  one call: binds the request id, opens the server span, writes the access
  line at the end; the caller sets ``call.status`` and sends back
  ``call.request_id`` (header / metadata ``x-request-id``).
* ``span(name, **attrs)``: a child span of the current one (a no-op when
  tracing is off); ``batch_span`` and ``current_span_context`` for work done
  once for many calls (gateway.tracing explains the links).
* ``annotate(**fields)``: add operator fields to the current access line.
* ``responding()``: the answer is being encoded and sent (starts the
  ``verdict.respond`` span, ended with the last byte).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import msgspec
from opentelemetry.trace import Span, Status, StatusCode

from verdict.gateway import request_context, tracing
from verdict.gateway.log_setup import extra_fields
from verdict.gateway.request_context import (
    REQUEST_ID_HEADER,
    accept_request_id,
    annotate,
    current_request_id,
)
from verdict.gateway.tracing import batch_span, current_span_context, span

__all__ = [
    "REQUEST_ID_HEADER",
    "Call",
    "ObservedHTTP",
    "accept_request_id",
    "annotate",
    "batch_span",
    "current_request_id",
    "current_span_context",
    "incoming",
    "responding",
    "route_label",
    "span",
]

_access = logging.getLogger("verdict.access")
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes, several a minute per replica: their successful answers are DEBUG lines,
and they are not traced."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_TYPED_PARAMETER = re.compile(r"\{(\w+):[^}]*\}")
_WANTED = frozenset({REQUEST_ID_HEADER.encode(), b"traceparent", b"tracestate"})
_PROBLEM_SNIFF = 8192  # bytes of a problem body read for its type (problems are a few hundred)


class Call:
    """One incoming call while it is handled: set ``status`` (an HTTP status, a gRPC code's
    name) before it ends; ``request_id`` goes back to the caller."""

    def __init__(self, scope: request_context.CallScope, server: Span | None, method: str, route: str) -> None:
        self.request_id = scope.request_id
        self.scope = scope
        self.server = server
        self.method = method
        self.route = route
        self.status: int | str | None = None
        self._respond: Span | None = None

    def responding(self) -> None:
        if self._respond is None and self.server is not None:
            self._respond = tracing.start_span("verdict.respond")

    def sent(self) -> None:
        """The answer's last byte is out: ends ``verdict.respond``."""
        respond, self._respond = self._respond, None
        if respond is not None:
            respond.end()


_current_call: ContextVar[Call | None] = ContextVar("verdict_incoming_call", default=None)


@contextmanager
def incoming(
    method: str,
    route: str,
    headers: MutableMapping[str, str] | dict[str, str],
    *,
    protocol: str = "http",
    traced: bool = True,
) -> Iterator[Call]:
    """Handle one incoming call: ``headers`` (lower-case names, or gRPC metadata as a dict)
    give the caller's ``x-request-id`` and ``traceparent``/``tracestate``. The server span is
    named ``"{method} {route}"`` for HTTP (``route`` may be set on the call later, once known),
    ``route`` otherwise (gRPC: ``inference.GRPCInferenceService/ModelInfer``). The access line
    is written when the block ends, inside the call's context (so it carries the request id
    and the trace id); an exception leaving the block makes the status 500 unless set.
    ``traced=False``: no server span (probes and scrapes: a trace every few seconds per
    replica that says nothing)."""
    request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
    started = time.perf_counter()
    with (
        request_context.bound(request_id) as scope,
        (
            tracing.server_span(method if protocol == "http" else route, headers, {"protocol": protocol})
            if traced
            else nullcontext()
        ) as server,
    ):
        call = Call(scope, server, method, route)
        token = _current_call.set(call)
        try:
            yield call
        except BaseException:
            if call.status is None:
                call.status = 500
            raise
        finally:
            _current_call.reset(token)
            call.sent()
            _finish(call, protocol, headers, time.perf_counter() - started)


def _finish(call: Call, protocol: str, headers: MutableMapping[str, str] | dict[str, str], seconds: float) -> None:
    status = call.status if call.status is not None else 500
    if call.server is not None:
        call.server.update_name(f"{call.method} {call.route}" if protocol == "http" else call.route)
        call.server.set_attribute("http.route" if protocol == "http" else "rpc.method", call.route)
        if protocol == "http":
            call.server.set_attribute("http.request.method", call.method)
            if isinstance(status, int):
                call.server.set_attribute("http.response.status_code", status)
                if status >= 500:
                    call.server.set_status(Status(StatusCode.ERROR))
        else:
            call.server.set_attribute("rpc.system", protocol)
        call.server.set_attribute("verdict.request_id", call.request_id)
    quiet = call.route in _QUIET_ROUTES and isinstance(status, int) and status < 400
    level = logging.DEBUG if quiet else logging.INFO
    if not _access.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "method": call.method,
        "route": call.route,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
        "protocol": protocol,
    }
    fields.update(call.scope.fields)
    if call.server is None and (caller := _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())):
        fields["trace_id"] = caller[1]  # tracing is off here: still correlate with the caller's trace
    _access.log(level, "%s %s %s", call.method, call.route, status, extra=extra_fields(fields))


def responding() -> None:
    """Called when the answer of the current call is being encoded and sent (Litestar's
    ``after_request``): opens ``verdict.respond``, closed with the last byte."""
    call = _current_call.get()
    if call is not None:
        call.responding()


def route_label(scope: MutableMapping[str, Any]) -> str:
    """The route template of an ASGI scope Litestar has routed (``/v1/decisions/{request_id}``,
    never the path, which holds request and subject ids), or ``unmatched``."""
    template = scope.get("path_template")
    if not template:
        return "unmatched"
    return _TYPED_PARAMETER.sub(r"{\1}", template)


Message = MutableMapping[str, Any]


class ObservedHTTP:
    """ASGI middleware around the whole app (outside Litestar's router, so a 404 is observed
    too): each HTTP request runs inside :func:`incoming`; its response gets ``X-Request-ID``;
    a problem response's type and the authenticated key's id go on its access line."""

    def __init__(self, app: Callable[..., Awaitable[None]], on_shutdown: Callable[[], None] | None = None) -> None:
        """``on_shutdown``: run (on a worker thread) once the app's own shutdown is complete,
        before the server is told so: uvicorn re-raises the SIGTERM it caught as soon as the
        lifespan ends, so code after ``uvicorn.run`` never runs on a normal stop (the spans
        still queued are flushed here)."""
        self.app = app
        self._on_shutdown = on_shutdown

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan" and self._on_shutdown is not None:
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope.get("headers", ()))  # reversed: the first of repeated headers wins
            if name.lower() in _WANTED
        }
        method = scope.get("method", "GET")
        with incoming(method, "unmatched", headers, traced=scope.get("path") not in _QUIET_ROUTES) as call:
            problem: bytearray | None = None

            async def observed_send(message: Message) -> None:
                nonlocal problem
                if message["type"] == "http.response.start":
                    call.status = message["status"]
                    call.route = route_label(scope)
                    raw = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                    raw.append((b"x-request-id", call.request_id.encode("latin-1")))
                    message = {**message, "headers": raw}
                    if any(k.lower() == b"content-type" and v.startswith(b"application/problem+json") for k, v in raw):
                        problem = bytearray()
                elif message["type"] == "http.response.body":
                    if problem is not None and len(problem) < _PROBLEM_SNIFF:
                        problem += message.get("body", b"")
                    if not message.get("more_body", False):
                        _note_problem(problem)
                        problem = None
                        _note_key(scope)
                        call.sent()
                await send(message)

            try:
                await self.app(scope, receive, observed_send)
            finally:
                call.route = route_label(scope)

    def _lifespan_send(self, send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._on_shutdown is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._on_shutdown)
            await send(message)

        return lifespan_send


def _note_problem(body: bytearray | None) -> None:
    """The problem type's last segment (``decision-erased``) on the access line: the alerts
    match on it (docs/operations.md §8); the detail may name inputs, so it stays out."""
    if not body:
        return
    try:
        kind = msgspec.json.decode(bytes(body)).get("type", "")
    except (msgspec.DecodeError, AttributeError):
        return
    if isinstance(kind, str) and kind:
        annotate(problem=kind.rstrip("/").rsplit("/", 1)[-1])


def _note_key(scope: MutableMapping[str, Any]) -> None:
    """The id of the API key that authenticated the call (``verdict apikeys list`` names it; the
    token is never logged)."""
    key = scope.get("state", {}).get("api_key")
    key_id = getattr(key, "key_id", None)
    if isinstance(key_id, str):
        annotate(key_id=key_id)

"""OpenTelemetry traces of the gateway: off unless configured, OTLP/HTTP when on.

Off (the default) every function here is a no-op that touches no OpenTelemetry
object: :func:`span` hands back one shared null context, so a decision pays a
function call and an ``if`` per span point, nothing more. On
(:func:`configure` with a collector's URL) spans go through a
BatchSpanProcessor to the collector over OTLP/HTTP; :func:`shutdown` flushes
them (``verdict serve`` calls it after the server stopped).

How a decision is modelled (docs/operations.md "Traces"):

* the request's **server span** is a child of the caller's W3C
  ``traceparent`` (its ``tracestate`` kept), or a root when there is none;
  ``verdict.validate`` and ``verdict.respond`` are its children;
* scoring, explaining and the audit commit run **once per micro-batch** for
  many requests, so they cannot be children of any one request's span (a span
  has one parent). They are their own trace, ``verdict.batch.compute`` (with
  ``verdict.score`` and ``verdict.explain`` per model version in the batch)
  and ``verdict.audit.commit`` (with ``verdict.audit.seal`` and
  ``verdict.audit.append``), and each batch span carries one **link** per
  request it served, to that request's server span: OpenTelemetry's model for
  batch processing (a span that processes many messages links to each of
  them), which trace viewers follow both ways.

Attributes without a dot in their name get the ``verdict.`` prefix
(``span("verdict.score", model="m")`` records ``verdict.model``). An exception
leaving a span marks it ERROR with the exception's type only (``error.type``):
messages are not recorded, since a validation error quotes the input it refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "batch_span",
    "configure",
    "current_ids",
    "current_span_context",
    "enabled",
    "resolve_endpoint",
    "server_span",
    "shutdown",
    "span",
    "start_span",
]

_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent / tracestate
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
_TRACES_PATH = "/v1/traces"

_tracer: trace.Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider while tracing is on


def resolve_endpoint(setting: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Where spans go, or None (tracing off). The ``otlp_endpoint`` setting
    (``VERDICT_OTLP_ENDPOINT``) first: a collector's OTLP/HTTP base URL
    (``http://otel-collector:4318``; ``/v1/traces`` is appended unless given);
    else OpenTelemetry's own ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as is) or
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL). ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none`` switch tracing off whatever else is set."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if setting.strip():
        base = setting.strip().rstrip("/")
        return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH
    if full := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return full
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/"):
        return base + _TRACES_PATH
    return None


def configure(
    endpoint: str | None, *, service_version: str, instance_id: str, env: Mapping[str, str] = os.environ
) -> bool:
    """Start exporting spans to ``endpoint`` (None: stay off). Service name from
    ``OTEL_SERVICE_NAME`` (default ``verdict-gateway``); ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and ``OTEL_EXPORTER_OTLP_HEADERS`` /
    ``_TIMEOUT`` / ``_COMPRESSION`` are read by the SDK as usual. True if tracing is on."""
    global _tracer, _provider
    if endpoint is None:
        return False
    # lazy: the SDK and the exporter (protobuf, requests) load only when tracing is switched on
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME", "").strip() or "verdict-gateway",
            "service.version": service_version,
            "service.instance.id": instance_id,  # the chain id: one per replica
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _provider, _tracer = provider, provider.get_tracer("verdict.gateway")
    return True


def shutdown() -> None:
    """Flush the spans still queued and stop exporting (tracing is off afterwards)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def _attributes(attributes: Mapping[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**(attributes or {}), **more}
    return {(k if "." in k else f"verdict.{k}"): v for k, v in merged.items() if v is not None}


def span(name: str, attributes: Mapping[str, Any] | None = None, **attrs: Any) -> AbstractContextManager[Span | None]:
    """A child of the current span for the block (None inside when tracing is off).
    An exception leaving the block sets its status to ERROR (the type, not the message)."""
    if _tracer is None:
        return _NOOP
    return _current(name, None, _attributes(attributes, attrs), ())


@contextmanager
def _current(
    name: str, context: otel_context.Context | None, attributes: dict[str, Any], links: Sequence[Link]
) -> Iterator[Span]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, context, attributes=attributes, links=links, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            _failed(current, exc)
            raise


def _failed(current: Span, exc: BaseException) -> None:
    current.set_attribute("error.type", type(exc).__name__)
    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def start_span(name: str, attributes: Mapping[str, Any] | None = None, **attrs: Any) -> Span | None:
    """A child of the current span that the caller ends (``span.end()``) wherever its work
    ends, e.g. once the last byte of a response is sent; None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_attributes(attributes, attrs))


@contextmanager
def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any] | None = None, **attrs: Any
) -> Iterator[Span | None]:
    """The span of one incoming call, a child of the caller's W3C ``traceparent`` in
    ``carrier`` (lower-case header names or gRPC metadata keys), current for the block."""
    if _tracer is None:
        yield None
        return
    parent = _PROPAGATOR.extract(carrier)
    current = _tracer.start_span(name, parent, SpanKind.SERVER, _attributes(attributes, attrs))
    token = otel_context.attach(trace.set_span_in_context(current, parent))
    try:
        yield current
    except BaseException as exc:
        _failed(current, exc)
        raise
    finally:
        otel_context.detach(token)
        current.end()


@contextmanager
def batch_span(
    name: str,
    links: Iterable[SpanContext | None],
    parent: SpanContext | None = None,
    attributes: Mapping[str, Any] | None = None,
    **attrs: Any,
) -> Iterator[Span | None]:
    """A span of work done once for many calls: linked to each call's span context in
    ``links`` (consumed only when tracing is on), a root span (its own trace) unless
    ``parent`` continues an earlier stage of the same batch."""
    if _tracer is None:
        yield None
        return
    context = otel_context.Context() if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    linked = [Link(c) for c in links if c is not None and c.is_valid]
    with _current(name, context, _attributes(attributes, attrs), linked) as current:
        yield current


def current_span_context() -> SpanContext | None:
    """The current span's context, to link a later batch span to (None when tracing is off)."""
    if _tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    return found if found.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines (None when there is none)."""
    if _tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")

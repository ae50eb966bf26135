"""A real OTLP/HTTP trace receiver on loopback, for tests and benchmarks.

It accepts ``POST /v1/traces`` (protobuf, gzip or not), decodes each body
with opentelemetry-proto's ``ExportTraceServiceRequest`` and keeps the spans,
so a test can assert what a gateway exported over the wire, exactly as a
collector would receive it. Nothing of the gateway is involved.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["OtlpReceiver", "ReceivedSpan"]


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 = SERVER
    attributes: dict[str, object]
    links: list[tuple[str, str]]  # (trace id, span id)
    resource: dict[str, object] = field(default_factory=dict)
    status: tuple[int, str] = (0, "")  # (code: 2 = ERROR, message)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # (name, attributes)


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """``with OtlpReceiver() as receiver:`` ... ``receiver.endpoint`` ... ``receiver.wait_for(...)``."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL, as ``VERDICT_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` take it."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            resource=resource,
                            status=(span.status.code, span.status.message),
                            events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
                        )
                    )
        with self._changed:
            self.spans.extend(found)
            self.requests += 1
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 60.0) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` holds (the exporter sends in the background); the spans."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.spans), timeout):
                raise AssertionError(f"the spans expected did not arrive within {timeout}s: {self.spans}")
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

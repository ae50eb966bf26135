"""Structured logs of the gateway process: one JSON object per line, or text for humans.

Why JSON: an operator's log system (Loki, Elasticsearch, CloudWatch) indexes
fields, so an alert can match ``event = "chain_writer_stopped"`` and a request
can be followed by its ``request_id``, without parsing prose. Every line of
the server process goes through here: the gateway's own loggers, uvicorn's,
the audit library's, Python warnings and uncaught exceptions.

A line: ``ts`` (UTC, RFC 3339), ``level``, ``logger``, ``message``, then the
call's ``request_id`` (gateway.request_context) and ``trace_id``/``span_id``
when a span is current (gateway.tracing), then the record's own fields (the
``extra=`` of the logging call). Bearer tokens and API key secrets are
redacted from every message and field, whatever wrote them.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import types
from typing import IO, Any

import msgspec

from verdict.gateway import request_context, tracing

__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "extra_fields",
    "redact",
    "resolve_format",
]

FORMATS = ("auto", "json", "text")
LEVELS = ("debug", "info", "warning", "error", "critical")

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_DROPPED = frozenset({"color_message"})  # uvicorn's copy of the message with terminal colours
_BEARER = re.compile(r"(?i)(bearer\s+)(?![<\[])[^\s\"',;]+")  # not "Bearer <your API key>"
_API_KEY = re.compile(r"\b(vk_[0-9a-f]{1,32}_)[A-Za-z0-9_-]{8,}")
_ENCODER = msgspec.json.Encoder(enc_hook=str)


def extra_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` fit for a logging call's ``extra=``: a name that would shadow a LogRecord
    attribute (``name``, ``module``, ``message``...; logging refuses those) gets a ``_`` suffix."""
    return {(f"{key}_" if key in _STANDARD else key): value for key, value in fields.items()}


def redact(text: str) -> str:
    """``Bearer <token>`` and ``vk_<key id>_<secret>`` with the secret replaced (the key id stays:
    it names the key, ``verdict apikeys list`` shows it, it authenticates nothing)."""
    if "earer" not in text and "vk_" not in text:
        return text
    return _API_KEY.sub(r"\1[redacted]", _BEARER.sub(r"\1[redacted]", text))


def _timestamp(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1e6):06d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The call's context, then the record's own fields (``extra=``), redacted."""
    out: dict[str, Any] = {}
    request_id = request_context.current_request_id()
    if request_id is not None:
        out["request_id"] = request_id
    ids = tracing.current_ids()
    if ids is not None:
        out["trace_id"], out["span_id"] = ids
    for key, value in vars(record).items():
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
            out[key] = redact(value) if isinstance(value, str) else value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(line).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record.created)} {record.levelname:<5} {record.name} {redact(record.getMessage())}"
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return _ENCODER.encode(value).decode()


def resolve_format(log_format: str, stream: IO[str] | None = None) -> str:
    """``json`` or ``text``: ``auto`` is text on a terminal (a person is reading) and JSON
    anywhere else (a container runtime, systemd, a file: a log system is reading)."""
    if log_format not in FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    target = stream if stream is not None else sys.stderr
    return "text" if getattr(target, "isatty", lambda: False)() else "json"


def configure_logging(log_format: str, log_level: str, stream: IO[str] | None = None) -> str:
    """Send every log line of this process through one handler on ``stream`` (stderr),
    formatted as ``log_format`` at ``log_level`` and above; returns the format used
    (``json`` or ``text``). uvicorn is then run with ``log_config=None`` and
    ``access_log=False``: its loggers propagate here, and the gateway writes the access
    lines itself (gateway.observability)."""
    if log_level.lower() not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}, not {log_level!r}")
    used = resolve_format(log_format, stream)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if used == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")  # replaced by the gateway's own access line
    access.handlers.clear()
    access.propagate = False
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return used


def _log_uncaught(kind: type[BaseException], exc: BaseException, traceback: types.TracebackType | None) -> None:
    logging.getLogger("verdict").critical("uncaught exception", exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("verdict").error(
        "uncaught exception in thread %s",
        thread,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )

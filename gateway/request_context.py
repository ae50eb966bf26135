"""The call being handled: its request id and the fields of its access line.

Why a context variable: a request's log lines are written from many places
(guards, routes, services, worker threads given the request's context), and
none of them should have to pass the request id along. The value is one
mutable :class:`CallScope`, so fields noted anywhere during the call (the
decision's model and outcome, noted by the service that knows them) reach the
one access line written when the call ends.

What may be noted is the operator's business, never the data subject's: no
attribute, no subject id, no key or token (the access line is shipped to log
systems that are not under the audit trail's controls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, TypeVarTuple

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

__all__ = [
    "REQUEST_ID_HEADER",
    "CallScope",
    "accept_request_id",
    "annotate",
    "bound",
    "current",
    "current_request_id",
    "off_loop",
]

REQUEST_ID_HEADER = "x-request-id"
"""The header (and gRPC metadata key) a caller's request id arrives in and is echoed back in."""

_ACCEPTABLE = re.compile(r"[\x20-\x7e]{1,128}")
"""Printable ASCII, at most 128 characters: anything else is replaced, so a header can never
smuggle a line break, a control character or a megabyte into every log line of the call."""


@dataclass
class CallScope:
    """One incoming call (an HTTP request, an RPC): its id and its access-line fields."""

    request_id: str
    fields: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[CallScope | None] = ContextVar("verdict_call", default=None)


def accept_request_id(value: str | None) -> str:
    """The caller's request id if it is acceptable (printable ASCII, 1..128 characters after
    trimming), else a new one (a UUID4)."""
    if value is not None:
        value = value.strip()
        if _ACCEPTABLE.fullmatch(value):
            return value
    return str(uuid.uuid4())


@contextmanager
def bound(request_id: str) -> Iterator[CallScope]:
    """Make ``request_id`` the current call's for the block (and for work handed a copy of the context)."""
    scope = CallScope(request_id)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def current() -> CallScope | None:
    return _current.get()


def current_request_id() -> str | None:
    scope = _current.get()
    return None if scope is None else scope.request_id


def annotate(**fields: Any) -> None:
    """Add fields to the current call's access line (nothing outside a call). Operator data only:
    model, version, outcome, the decision's request id; never attributes, subject ids or keys."""
    scope = _current.get()
    if scope is not None:
        scope.fields.update(fields)


def off_loop(executor: concurrent.futures.Executor, fn: Callable[[*_Ts], _T], *args: *_Ts) -> asyncio.Future[_T]:
    """Blocking work (store reads, access appends) off the event loop, in a copy of the
    call's context: its request id on the log lines written there, its span the parent
    of the spans opened there (gateway.observability)."""
    context = copy_context()
    return asyncio.get_running_loop().run_in_executor(executor, partial(context.run, fn, *args))

"""Torch's own chatter kept off the user's terminal while Verdict loads or exports a model.

Why: when ``torch.export`` refuses a model, or ``torch.export.load`` a file,
torch first writes its side of the story to stderr: a warning from its
symbolic-shape engine, a logged deserialisation traceback, and (the error
wrapper of ``torch.export.export``) the partly traced graph, printed straight to
``sys.stderr``, once per wrapper. Verdict then says in one line what broke and
how to fix it, and that line is what the user must see.

:func:`quiet_torch` holds back, for the length of one call, what the ``torch``
loggers emit (kept in :class:`Held`, so a refusal can quote the cause torch
only logged), Python warnings, and with ``stderr=True`` whatever is printed to
``sys.stderr``; it restores the loggers' handlers, the warning filters and
``sys.stderr`` afterwards, whether the call raised or not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["Held", "quiet_torch"]


class Held(logging.Handler):
    """The torch log records held back during a quiet call."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def last_error(self) -> str | None:
        """``RuntimeError: PytorchStreamReader failed locating file ...``: the first line of the
        last exception torch logged (it logs some causes, then raises a vaguer error)."""
        for record in reversed(self.records):
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                first = (str(exc).strip().splitlines() or [""])[0]
                if len(first) > 160 and ". " in first:  # torch's advice after the cause is generic
                    first = first[: first.index(". ") + 1]
                return f"{type(exc).__name__}: {first}"
        return None


def _torch_loggers() -> list[logging.Logger]:
    """The ``torch`` logger and every ``torch.*`` logger created so far: torch gives
    several of them their own stderr handler and stops their propagation."""
    found = [logging.getLogger("torch")]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("torch.") and isinstance(logger, logging.Logger):
            found.append(logger)
    return found


@contextlib.contextmanager
def quiet_torch(*, stderr: bool = False) -> Iterator[Held]:
    """Within the block, torch's log records go to the :class:`Held` it yields instead of
    their handlers, no warning is shown, and with ``stderr`` whatever is printed to
    ``sys.stderr`` is dropped (torch.export prints its partial graph there)."""
    held = Held()
    top = logging.getLogger("torch")
    saved = [(logger, list(logger.handlers)) for logger in _torch_loggers()]
    propagate = top.propagate
    for logger, handlers in saved:
        if handlers or logger is top:
            for handler in handlers:
                logger.removeHandler(handler)
            logger.addHandler(held)
    top.propagate = False  # a record that reaches "torch" stops there, never at the root's handlers
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield held
    finally:
        top.propagate = propagate
        for logger, handlers in saved:
            logger.removeHandler(held)
            for handler in handlers:
                logger.addHandler(handler)

"""Fail-closed states, logged once on the way in and once on the way out.

Why: when the audit trail cannot take a record, every decision is refused
(503) until it can; a line per refused request would bury the cause under
thousands of copies, and no line at all leaves on-call with a dashboard of
503s and nothing to read. So each state is a key: the first failure logs one
ERROR line with a stable ``event`` (what the alert table in
docs/operations.md §8 matches on), later failures in the same state log
nothing, and the first success after them logs one INFO line with the
recovery event. The events:

=====================  ======================  ==================================================
ERROR (entering)       INFO (leaving)          state
=====================  ======================  ==================================================
chain_writer_stopped   (none: restart)         a permanent chain error, e.g. another writer took
                                               the chain's lease over
audit_append_failing   audit_append_recovered  the store refuses appends (decisions answer 503)
keyring_unavailable    keyring_recovered       the data keyring cannot seal (decisions answer 503)
model_unready          model_recovered         a model version failed to load (its requests 503)
replica_unready        replica_ready           /readyz fails (the load balancer stops sending)
=====================  ======================  ==================================================
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from verdict.gateway.log_setup import extra_fields

__all__ = ["FailClosedLog"]


class FailClosedLog:
    """Which fail-closed states this process is in, each logged once per transition.
    Thread-safe: appends fail and succeed on several commit threads at once."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}  # key -> the event it was entered with

    def failing(self, key: str, event: str, message: str, **fields: Any) -> bool:
        """Enter state ``key``: logs ``message`` at ERROR with ``event`` unless already in it.
        True if this call logged (a transition)."""
        if key in self._failing:  # the common case while failing: no lock, no line
            return False
        with self._lock:
            if key in self._failing:
                return False
            self._failing[key] = event
        self._log.error(message, extra=_extra(event, key, fields))
        return True

    def recovered(self, key: str, event: str, message: str, **fields: Any) -> bool:
        """Leave state ``key``: logs ``message`` at INFO with ``event`` if it was in it."""
        if key not in self._failing:  # the common case: healthy, no lock
            return False
        with self._lock:
            if self._failing.pop(key, None) is None:
                return False
        self._log.info(message, extra=_extra(event, key, fields))
        return True

    def is_failing(self, key: str) -> bool:
        return key in self._failing

    def failing_keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._failing if k.startswith(prefix))


def _extra(event: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {**extra_fields(fields), "event": event, "state": key}

"""A request as gateway.engine.decision_body needs it, for tests that build records
without the HTTP service (the gateway's PendingDecision carries the same fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pending:
    request_id: str
    attributes: dict[str, Any]
    subject_id: str | None = None
    request_sha256: str = "0" * 64
    received_at: str = "2025-01-02T03:04:05.000000Z"

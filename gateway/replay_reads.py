"""Examiners' reads of replay resources: scoped to who started the replay, and audited.

Why scoped: a replay's status and reports name the request ids, scores and
decisions it covered. A ``replay`` key reads the replays it started; an
``admin`` key reads every replay (a model-risk lead reviewing examiners'
work). Another key's replay is refused exactly like an unknown id (the same
UnknownReplay, the same detail), so replay ids cannot be probed.

Why audited: who read which decisions is regulated information whether it
arrives as a lookup or inside a replay report. Every read appends an access
record (``replay_status``, ``replay_report`` or ``replay_report_html``; its
``target_request_id`` is the replay id, which the replay's own ``replay``
access records name in their ``purpose``), once the answer is ready and
before it leaves: nothing delivered unrecorded, nothing recorded undelivered.
"""

from __future__ import annotations

from typing import Any

from verdict.gateway.apikeys import ApiKey
from verdict.gateway.lookups import LookupService
from verdict.gateway.service_errors import ReplayNotFinished
from verdict.replay.service import ReplayService, ReplayStatus, UnknownReplay

__all__ = ["REPLAY_RESOURCES", "read_replay"]

# resource -> (access action, how to read it from the service)
REPLAY_RESOURCES = {
    "status": ("replay_status", ReplayService.replay_status),
    "report.json": ("replay_report", ReplayService.report_json),
    "report.html": ("replay_report_html", ReplayService.report_html),
}


def may_read(status: ReplayStatus, key: ApiKey) -> bool:
    return "admin" in key.scopes or status.actor == key.key_id


def read_replay(replays: ReplayService, lookups: LookupService, replay_id: str, key: ApiKey, resource: str) -> Any:
    """The replay resource for ``key``. Raises UnknownReplay if it is unknown or not the
    key's, ReplayNotFinished while a report is not ready, AuditUnavailable if the read
    cannot be recorded."""
    action, read = REPLAY_RESOURCES[resource]
    try:
        status = replays.replay_status(replay_id)
        if not may_read(status, key):
            raise UnknownReplay(replay_id)
        content = status if resource == "status" else read(replays, replay_id)
    except UnknownReplay:
        raise UnknownReplay(
            replay_id,
            f"no replay {replay_id!r} started by this key (a replay key reads its own replays; an admin key reads all)",
        ) from None
    if content is None:
        raise ReplayNotFinished(replay_id)
    lookups.log_access(action, key.key_id, replay_id)
    return content

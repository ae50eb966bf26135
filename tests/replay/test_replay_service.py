"""The examiner API the HTTP layer calls: start a replay, poll its status, fetch the report."""

from __future__ import annotations

import pytest

from tests.replay.test_replay_identical import chain_records
from verdict.audit.records import AccessBody, EvidenceBody
from verdict.audit.stores import open_store
from verdict.replay.report import verify_signed_report
from verdict.replay.service import ReplayRequest, ReplayRequestError, ReplayService, UnknownReplay


@pytest.fixture
def service(at_trail):
    svc = ReplayService(at_trail.store_url, replay_chain="replay-api", workers=0)
    yield svc
    svc.close()


def test_replay_one_request_through_the_service(service, at_trail):
    request_id = at_trail.production[5]
    status = service.start_replay(
        ReplayRequest(request_id=request_id, purpose="complaint 4711"), actor_key_id="key-examiner-1"
    )
    assert status.state == "queued" and status.actor == "key-examiner-1"
    final = service.wait(status.replay_id, timeout=300)
    assert final.state == "finished", final.error
    assert final.passed is True and final.summary.identical == 1 and final.total == final.done == 1
    assert final.replay_chain == "replay-api" and final.evidence_seq is not None

    store = open_store(at_trail.store_url)
    data = service.report_json(status.replay_id)
    check = verify_signed_report(store, data)
    assert check.ok and check.report["decisions"][0]["request_id"] == request_id
    assert "PASSED" in service.report_html(status.replay_id)
    records = [r.body for r in chain_records(store, "replay-api")]
    access = [b for b in records if isinstance(b, AccessBody) and status.replay_id in (b.purpose or "")]
    assert [(a.actor_key_id, a.target_request_id, a.action) for a in access] == [
        ("key-examiner-1", request_id, "replay")
    ]
    assert "complaint 4711" in access[0].purpose
    assert any(isinstance(b, EvidenceBody) and b.object_key == final.report_object_key for b in records)

    # A later process (another service instance) still answers for the finished replay.
    again = ReplayService(at_trail.store_url, replay_chain="replay-api")
    try:
        old = again.replay_status(status.replay_id)
        assert old.state == "finished" and old.passed is True and old.report_object_key == final.report_object_key
    finally:
        again.close()


def test_filter_replay_through_the_service(service, at_trail):
    status = service.start_replay(
        ReplayRequest(model="german-credit:1.0.0-tight", scope="score_only"), "key-examiner-2"
    )
    final = service.wait(status.replay_id, timeout=300)
    assert final.state == "finished", final.error
    assert final.summary.decisions == len(at_trail.tight) and final.passed


def test_bad_requests_are_refused_with_the_field(service):
    with pytest.raises(ReplayRequestError) as exc:
        service.start_replay(ReplayRequest(), "k")
    assert exc.value.rule == "selection"
    with pytest.raises(ReplayRequestError) as exc:
        service.start_replay(ReplayRequest(all=True, tighten_absolute=0.5), "k")
    assert (exc.value.field, exc.value.rule) == ("tighten_absolute", "may_only_tighten")
    with pytest.raises(ReplayRequestError) as exc:
        service.start_replay(ReplayRequest(all=True, since="not a time"), "k")
    assert exc.value.field == "since"
    with pytest.raises(ReplayRequestError):
        service.start_replay(ReplayRequest(model="a:b:c"), "k")
    with pytest.raises(UnknownReplay):
        service.replay_status("rpl-nope")


def test_kept_workers_still_notice_an_altered_artifact(trail_copy):
    """The service keeps its worker processes (and their loaded models) between
    replays; every replay still re-verifies the artifact bytes in the store."""
    from tests.replay.conftest import writable
    from verdict.audit.reader import read_decision
    from verdict.gateway.registry import blob_key

    service = ReplayService(trail_copy.store_url, replay_chain="replay-kept", workers=1)
    try:
        first = service.wait(
            service.start_replay(ReplayRequest(request_id=trail_copy.production[0]), "k").replay_id, 300
        )
        assert first.state == "finished" and first.passed, first.error
        store = open_store(trail_copy.store_url)
        path = writable(
            trail_copy.store_dir / blob_key(read_decision(store, trail_copy.production[0]).body.model.sha256)
        )
        path.write_bytes(path.read_bytes() + b"\0")
        second = service.wait(
            service.start_replay(ReplayRequest(request_id=trail_copy.production[1]), "k").replay_id, 300
        )
        assert second.state == "finished" and second.passed is False
        assert second.summary.by_reason == {"artifact_altered": 1}
    finally:
        service.close()

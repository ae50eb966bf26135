"""The threat model's honest row: a gateway host that holds its signing key (and,
in the embedded default, the root) can sign a false decision that the trail
itself accepts. Replay is what catches it: re-scored against the pinned model,
the logged score is out of tolerance."""

from __future__ import annotations

import msgspec

from tests.replay.conftest import cli, report_of
from verdict.audit.chain import ChainWriter
from verdict.audit.personal_data import existing_personal_data
from verdict.audit.reader import read_decision
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store


def test_a_validly_signed_false_decision_is_flagged_by_replay(trail_copy):
    store = open_store(trail_copy.store_url)
    root = RootKey.load(trail_copy.home / "trust" / "root.pem")
    personal = existing_personal_data()  # the host holds the data keyring too: it can seal properly
    genuine = personal.open(read_decision(store, trail_copy.production[5], trust=root.policy()).body)
    forged = msgspec.structs.replace(
        genuine,
        request_id="forged-by-the-host",
        score=1.0 - genuine.score,
        decision="approve" if genuine.decision != "approve" else "decline",
    )
    (sealed,) = personal.seal_all([forged], now=forged.decided_at)
    key = FileKeyStore(trail_copy.home / "keys").current()  # the host's own signing key
    with ChainWriter.open(store, "gateway-0", key, root=root, lease=None) as writer:
        writer.append(sealed)

    report = verify_store(store, trust=root.policy())
    assert report.ok, report.failures  # the trail cannot tell: the key may sign

    result = cli("forged-by-the-host")
    assert result.exit_code == 1, result.output
    (decision,) = report_of(result)["report"]["decisions"]
    assert decision["verdict"] == "out_of_tolerance", decision


def test_a_sealed_envelope_copied_into_a_forged_decision_does_not_open(trail_copy):
    """Without the data keys, a forger can only copy another decision's envelope: it is bound
    to that decision's request id (spec §3a), so replay refuses it as tampered."""
    store = open_store(trail_copy.store_url)
    root = RootKey.load(trail_copy.home / "trust" / "root.pem")
    genuine = read_decision(store, trail_copy.production[6], trust=root.policy()).body
    forged = msgspec.structs.replace(genuine, request_id="copied-envelope", score=1.0 - genuine.score)
    key = FileKeyStore(trail_copy.home / "keys").current()
    with ChainWriter.open(store, "gateway-0", key, root=root, lease=None) as writer:
        writer.append(forged)
    assert verify_store(store, trust=root.policy()).ok  # the trail cannot tell: the key may sign
    result = cli("copied-envelope")
    assert result.exit_code == 1, result.output
    (decision,) = report_of(result)["report"]["decisions"]
    assert (decision["verdict"], decision["reason"]) == ("cannot_replay", "sealed_tampered"), decision

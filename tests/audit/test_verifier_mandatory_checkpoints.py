"""Mandatory checkpoints (docs/audit-format.md §8): size 1 after genesis and r + 1
after a key_rotation record at seq r. Every writer version has written them
before appending anything else, so deleting one must not go unnoticed."""

from __future__ import annotations

import pytest

from tests.audit.helpers import checkpoint_sizes, decisions, signer
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

CHAIN = "gateway-0"
ROTATION_SEQ = 4  # genesis, 3 decisions, then the rotation


@pytest.fixture
def rotated(tmp_path):
    """Records 0..7: genesis, r-0..r-2, key_rotation at seq 4, s-0..s-2; checkpoint_every=100
    so that only the mandatory checkpoints (1, 5) and the shutdown one (8) exist."""
    root = tmp_path / "store"
    store = FilesystemStore(root)
    with ChainWriter.open(store, CHAIN, signer(1), checkpoint_every=100) as writer:
        writer.append_batch(decisions("r", 3))
        writer.rotate_key(signer(2), reason="test")
        writer.append_batch(decisions("s", 3))
    assert checkpoint_sizes(store, CHAIN) == [1, ROTATION_SEQ + 1, 8]
    return store, root


def delete_checkpoint(root, size):
    (root / layout.checkpoint_key(CHAIN, size)).unlink()


def test_all_mandatory_checkpoints_present(rotated):
    assert verify_store(rotated[0]).ok


@pytest.mark.parametrize(
    ("size", "why"),
    [(1, "after the genesis record"), (ROTATION_SEQ + 1, f"after the key_rotation record at seq {ROTATION_SEQ}")],
)
def test_deleted_mandatory_checkpoint_is_a_failure(rotated, size, why):
    store, root = rotated
    delete_checkpoint(root, size)
    report = verify_store(store)
    assert [(f.reason, f.key, f.seq) for f in report.failures] == [
        ("checkpoint_missing", layout.checkpoint_key(CHAIN, size), size - 1)
    ]
    assert why in report.first_failure.message


def test_deleted_optional_checkpoint_is_not_a_failure(rotated):
    """The shutdown checkpoint's size depends on timing: no verifier can demand it."""
    store, root = rotated
    delete_checkpoint(root, 8)
    report = verify_store(store)
    assert report.ok and "not_yet_checkpointed" in {n.reason for n in report.notes}


def test_mandatory_checkpoint_of_the_head_may_be_missing(tmp_path):
    """A crash between the genesis segment and checkpoint 1 (or a rotation and its
    checkpoint) leaves the head unchecked; recovery writes it before appending."""
    root = tmp_path / "store"
    store = FilesystemStore(root)
    ChainWriter.open(store, CHAIN, signer(1)).close()
    delete_checkpoint(root, 1)
    report = verify_store(store)
    assert report.ok and "no_checkpoint" in {n.reason for n in report.notes}


def test_mandatory_checkpoint_written_after_the_listing_is_a_note(rotated):
    """A live writer: the listing missed the checkpoint (listed before the segments)."""
    store, _ = rotated
    hidden = layout.checkpoint_key(CHAIN, ROTATION_SEQ + 1)

    class ListedEarly(FilesystemStore):
        def list_versions(self, prefix):
            return [v for v in super().list_versions(prefix) if v.key != hidden]

    report = verify_store(ListedEarly(store.root))
    assert report.ok, report.failures
    assert any(n.reason == "written_during_verification" and n.key == hidden for n in report.notes)

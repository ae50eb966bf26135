"""The verifier's strict reading of request index entries (docs/audit-format.md §7, §10 step 5).

Found by an independent verifier written from the spec: entries that were not
canonical JSON, named a member twice, had wrong types or unknown members, or
pinned a segment_version that the store never had, used to pass. Each must now
fail with its own reason code, naming the index key.
"""

from __future__ import annotations

import msgspec
import pytest

from tests.audit.helpers import decisions, overwrite, signer
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.index import decode_entry, encode_entry
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

CHAIN = "gateway-0"
REQUEST = "r-3"
KEY = layout.index_key(REQUEST)


@pytest.fixture
def trail(tmp_path):
    """Genesis + 8 decisions in two batches, checkpointed and fully indexed."""
    root = tmp_path / "store"
    store = FilesystemStore(root)
    with ChainWriter.open(store, CHAIN, signer(), checkpoint_every=4) as writer:
        writer.append_batch(decisions("r", 4))
        writer.append_batch(decisions("s", 4))
    return store, root


def tamper(trail, data: bytes):
    store, root = trail
    overwrite(root / KEY, data)
    return verify_store(store)


def only_failure(report):
    """The single failure the tampering must cause (no cascade such as index_missing)."""
    assert [(f.reason, f.key) for f in report.failures] == [(report.first_failure.reason, KEY)], report.failures
    return report.first_failure


def canonical(trail) -> bytes:
    return trail[0].get(KEY)


def test_untouched_trail_verifies(trail):
    report = verify_store(trail[0])
    assert report.ok, report.failures


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda b: b.replace(b",", b", "), id="whitespace"),
        pytest.param(
            lambda b: msgspec.json.encode(dict(reversed(list(msgspec.json.decode(b).items())))), id="member-order"
        ),
        pytest.param(lambda b: b.replace(b'"seq":4', b'"seq":4.0'), id="integer-written-as-float"),
        pytest.param(lambda b: b + b"\n", id="trailing-newline"),
        pytest.param(lambda b: b.replace(b"r-3", b"r\\u002d3"), id="needless-escape"),
    ],
)
def test_entry_that_is_not_canonical(trail, rewrite):
    data = rewrite(canonical(trail))
    assert data != canonical(trail)
    report = tamper(trail, data)
    failure = only_failure(report)
    assert failure.reason in ("index_not_canonical", "bad_index_entry")
    assert KEY in failure.message


def test_canonical_form_violations_are_index_not_canonical(trail):
    failure = only_failure(tamper(trail, canonical(trail).replace(b",", b", ")))
    assert failure.reason == "index_not_canonical"


def test_duplicate_member_is_rejected_even_if_the_last_value_is_right(trail):
    """msgspec (and Python's json) keep the last duplicate: a reader keeping the
    first one would see chain "elsewhere". The entry must not pass."""
    data = canonical(trail).replace(b'{"chain_id":', b'{"chain_id":"elsewhere","chain_id":', 1)
    assert decode_entry(data) == decode_entry(canonical(trail))  # what made it pass before
    failure = only_failure(tamper(trail, data))
    assert failure.reason == "index_duplicate_member" and "'chain_id'" in failure.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda b: b.replace(b'"seq":4}', b'"seq":4,"zzz":1}'), id="unknown-member"),
        pytest.param(lambda b: b.replace(b'"seq":4', b'"seq":"4"'), id="seq-as-string"),
        pytest.param(lambda b: b.replace(b'"seq":4', b'"seq":-4'), id="negative-seq"),
        pytest.param(lambda b: b.replace(b'"segment_version":null,', b""), id="segment-version-absent"),
        pytest.param(lambda b: b.replace(b'"segment_version":null', b'"segment_version":1'), id="version-as-number"),
        pytest.param(lambda b: b[:-1], id="not-json"),
    ],
)
def test_entry_that_does_not_match_the_schema(trail, data):
    failure = only_failure(tamper(trail, data(canonical(trail))))
    assert failure.reason == "bad_index_entry"


def test_segment_version_on_an_unversioned_store(trail):
    entry = decode_entry(canonical(trail))
    forged = encode_entry(msgspec.structs.replace(entry, segment_version="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"))
    failure = only_failure(tamper(trail, forged))
    assert failure.reason == "index_version_mismatch"
    assert "null (unversioned store)" in failure.message

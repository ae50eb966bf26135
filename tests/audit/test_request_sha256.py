"""request_sha256 is pinned by golden vectors (docs/audit-format.md §2, "Request hash").

Why: the hash is the idempotency identity of a request. If the bytes hashed
ever changed, a client's retry after an upgrade would hash differently and get
a false 409, and an auditor could not recompute the hash from the spec.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest
import rfc8785

from verdict.gateway.api_models import DecisionRequest
from verdict.gateway.decisions import request_sha256

VECTORS = json.loads((Path(__file__).parent / "golden" / "request_sha256.json").read_text("utf-8"))["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["request_sha256"][:12] for v in VECTORS])
def test_gateway_hashes_the_documented_bytes(vector):
    request = msgspec.json.decode(vector["body"].encode("utf-8"), type=DecisionRequest)
    assert request_sha256(request) == vector["request_sha256"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["request_sha256"][:12] for v in VECTORS])
def test_vector_is_self_consistent_without_our_code(vector):
    """What an auditor does: the hashed bytes are JCS, and their SHA-256 is the digest."""
    hashed = vector["hashed"].encode("utf-8")
    assert rfc8785.dumps(json.loads(hashed)) == hashed
    assert hashlib.sha256(hashed).hexdigest() == vector["request_sha256"]


def test_absent_optional_members_are_hashed_as_null():
    """The one place where the trail's "absent, not null" rule (§2) does not hold."""
    hashed = json.loads(VECTORS[0]["hashed"])
    body = json.loads(VECTORS[0]["body"])
    for member in ("request_id", "subject_id", "version"):
        assert member not in body and hashed[member] is None

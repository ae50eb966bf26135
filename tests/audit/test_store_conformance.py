"""The write-once store contract (audit/stores/base.py), run against every registered backend.

Why one suite: the chain writer, the registry and the verifier rely on the
contract, not on a backend, and a trail must move between backends byte for
byte. So every backend runs the same tests: the filesystem store on a real
directory, the S3 Object Lock store over HTTP against the session's moto
server. A new backend adds one entry to ``HARNESSES`` (the last test fails
until it does). What only one backend does (file modes, staging, syncfs
barriers; Object Lock retention, checksums, outages of a real endpoint) is
tested in its own file: test_filesystem_store.py, test_s3_store.py.

Retention is not part of the WormStore interface (a store promises only that
it never overwrites); what each backend's retention actually holds is what
its immutability probes report (test_immutability.py).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.moto_server import free_port
from tests.support.s3_fixtures import REGION
from verdict.audit.stores import (
    FilesystemStore,
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    StoreConfigurationError,
    StoreError,
    StoreUnavailable,
    WormStore,
    open_store,
)
from verdict.audit.stores.keys import InvalidKey
from verdict.audit.stores.registry import StoreBackend, backend_for_url, backends, register_backend, url_forms


@dataclass
class Harness:
    """One backend under test: a fresh empty store, and a store of that backend that cannot be reached."""

    store: WormStore
    unreachable: Callable[[], WormStore]


def _filesystem(request: pytest.FixtureRequest) -> Harness:
    tmp_path = request.getfixturevalue("tmp_path")

    def unreachable() -> WormStore:
        root = tmp_path / "gone"
        store = FilesystemStore(root)
        shutil.rmtree(root)
        root.write_bytes(b"a file where the store's directory was")
        return store

    return Harness(FilesystemStore(tmp_path / "store"), unreachable)


@pytest.fixture(scope="module")
def s3_shared(moto_server):
    """One client and one Object Lock bucket for the module; each test gets its own
    prefix in it (a bucket and a client per test would cost most of the suite's time)."""
    import boto3

    from verdict.audit.stores.s3 import create_audit_bucket

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    client = session.client("s3", endpoint_url=moto_server.endpoint_url)
    bucket = f"conformance-{uuid.uuid4().hex[:12]}"
    create_audit_bucket(client, bucket, default_retention_days=1)
    return moto_server.endpoint_url, client, bucket


def _s3(request: pytest.FixtureRequest) -> Harness:
    from verdict.audit.stores.s3 import S3ObjectLockStore

    request.getfixturevalue("s3_env")  # credentials for stores reopened from their URL
    endpoint, client, bucket = request.getfixturevalue("s3_shared")
    store = S3ObjectLockStore(
        bucket, f"t-{uuid.uuid4().hex[:12]}", client=client, endpoint_url=endpoint, region=REGION, retention_days=1
    )

    def unreachable() -> WormStore:
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused at once
        return S3ObjectLockStore("audit-trail", "x", endpoint_url=endpoint, timeout=2, check_bucket=False)

    return Harness(store, unreachable)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], Harness]] = {"file": _filesystem, "s3": _s3}


@pytest.fixture(params=sorted(HARNESSES))
def backend(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = HARNESSES[request.param](request)
    yield harness
    close = getattr(harness.store, "close", None)  # the S3 store's batch thread pool
    if close is not None:
        close()


@pytest.fixture
def store(backend: Harness) -> WormStore:
    return backend.store


def test_every_registered_backend_runs_this_suite():
    assert {b.scheme for b in backends()} == set(HARNESSES)


# --- write once, read back ---------------------------------------------------------------------


def test_put_returns_a_ref_and_the_bytes_read_back(store):
    assert isinstance(store, WormStore)
    ref = store.put_once("chains/c0/00000001", b"record one")
    assert isinstance(ref, ObjectRef) and ref.key == "chains/c0/00000001"
    assert (ref.version is not None) == store.versioned  # a version to pin exactly where the store has them
    assert store.get("chains/c0/00000001") == b"record one"
    assert store.get("chains/c0/00000001", ref.version) == b"record one"
    assert store.exists("chains/c0/00000001")
    assert not store.exists("chains/c0/00000002")
    assert not store.exists("chains/c0")  # a key's leading part is not an object


def test_the_url_reopens_the_same_store_through_the_registry(store):
    ref = store.put_once("x/y", b"kept")
    assert backend_for_url(store.url).scheme == store.url.partition(":")[0]
    again = open_store(store.url)
    assert again.url == store.url
    assert again.get("x/y") == b"kept" and again.get("x/y", ref.version) == b"kept"
    with pytest.raises(ObjectExists):
        again.put_once("x/y", b"other")


def test_empty_and_binary_payloads(store):
    payload = bytes(range(256)) * 64
    store.put_many_once([("bin", payload), ("empty", b"")])
    assert store.get("bin") == payload
    assert store.get("empty") == b""


def test_a_second_write_of_a_key_is_refused_and_the_original_kept(store):
    ref = store.put_once("k/1", b"original")
    with pytest.raises(ObjectExists) as exists:
        store.put_once("k/1", b"forged, and longer than the original")
    assert exists.value.key == "k/1" and isinstance(exists.value, StoreError)
    assert store.get("k/1") == b"original"
    assert [(v.key, v.version, v.is_latest, v.is_delete_marker) for v in store.list_versions("k/")] == [
        ("k/1", ref.version, True, False)
    ]


# --- batches -----------------------------------------------------------------------------------


def test_a_batch_returns_refs_in_input_order(store):
    items = [(f"batch/{i:04d}", f"payload {i}".encode()) for i in (5, 3, 9, 0, 7)]
    refs = store.put_many_once(items)
    assert [r.key for r in refs] == [k for k, _ in items]
    for ref, (key, data) in zip(refs, items, strict=True):
        assert store.get(key, ref.version) == data
    assert store.put_many_once([]) == []


def test_a_batch_conflict_names_the_first_taken_key_after_writing_the_rest(store):
    store.put_once("b/2", b"old2")
    store.put_once("b/4", b"old4")
    with pytest.raises(ObjectExists) as exists:
        store.put_many_once([("b/1", b"n1"), ("b/4", b"n4"), ("b/3", b"n3"), ("b/2", b"n2")])
    assert exists.value.key == "b/4"  # the first conflicting key in input order
    assert [store.get(f"b/{i}") for i in (1, 2, 3, 4)] == [b"n1", b"old2", b"n3", b"old4"]
    assert sum(1 for _ in store.list_versions("b/")) == 4


def test_a_batch_repeating_a_key_writes_it_once(store):
    with pytest.raises(ObjectExists) as exists:
        store.put_many_once([("d/1", b"first"), ("d/2", b"two"), ("d/1", b"second")])
    assert exists.value.key == "d/1"
    assert store.get("d/1") == b"first"
    assert [v.key for v in store.list_versions("d/")] == ["d/1", "d/2"]


def test_prestage_is_only_a_hint(store):
    entries = [(f"index/requests/{n}", f"entry {n}".encode()) for n in range(3)]
    store.prestage(entries)
    assert list(store.list_keys()) == []  # nothing becomes visible
    store.put_once("chains/c0/segments/00000001", b"segment")
    store.put_many_once(entries)
    assert [store.get(key) for key, _ in entries] == [data for _, data in entries]


# --- keys ----------------------------------------------------------------------------------------

INVALID_KEYS = ["", "/abs", "a//b", "a/", "../escape", "a/../b", ".", "a/./b", "sp ace", "tab\tkey", "ü", "a\\b"]
INVALID_KEYS += ["x" * 513, ".incoming", "a/.incoming/x", "a/.hidden"]  # no hidden segments: staging stays unreachable


def test_invalid_keys_are_refused_before_anything_is_written(store):
    for key in INVALID_KEYS:
        for call in (lambda k: store.put_once(k, b"x"), store.get, store.exists):
            with pytest.raises(InvalidKey):
                call(key)
    with pytest.raises(InvalidKey):
        store.put_many_once([("good/1", b"x"), ("../bad", b"y")])
    with pytest.raises(InvalidKey):
        list(store.list_keys("../"))
    assert list(store.list_keys()) == []


# --- listing -------------------------------------------------------------------------------------


def test_listing_is_in_byte_order_by_plain_string_prefix(store):
    keys = ["b", "a/z", "a/b/c", "A", "a-b", "a.b", "a_b", "chains/c1/0002", "chains/c1/0001", "chains/c10/0001", "0"]
    store.put_many_once([(k, k.encode()) for k in keys])
    assert list(store.list_keys()) == sorted(keys, key=str.encode)
    assert list(store.list_keys("chains/c1/")) == ["chains/c1/0001", "chains/c1/0002"]
    assert list(store.list_keys("chains/c1")) == ["chains/c1/0001", "chains/c1/0002", "chains/c10/0001"]
    assert list(store.list_keys("a_")) == ["a_b"]  # a prefix that ends mid-segment
    assert list(store.list_keys("nothing/")) == []


def test_list_versions_gives_each_written_object_once_as_written(store):
    refs = store.put_many_once([("v/2", b"two!"), ("v/1", b"one"), ("w/1", b"elsewhere")])
    versions = list(store.list_versions("v/"))
    assert [(v.key, v.version, v.is_latest, v.is_delete_marker, v.size) for v in versions] == [
        ("v/1", refs[1].version, True, False, 3),
        ("v/2", refs[0].version, True, False, 4),
    ]


# --- failures ------------------------------------------------------------------------------------


def test_a_missing_key_is_object_missing_naming_it(store):
    ref = store.put_once("m/1", b"x")
    with pytest.raises(ObjectMissing) as missing:
        store.get("m/2")
    assert missing.value.key == "m/2" and isinstance(missing.value, StoreError)
    assert not store.exists("m/2")
    if store.versioned:  # a version that is not this key's: missing, never another object's bytes
        other = store.put_once("m/3", b"y")
        with pytest.raises(ObjectMissing):
            store.get("m/1", other.version)
        assert store.get("m/1", ref.version) == b"x"


def test_an_unreachable_store_fails_closed_with_store_unavailable(backend):
    down = backend.unreachable()
    with pytest.raises(StoreUnavailable) as put:
        down.put_once("k", b"x")
    with pytest.raises(StoreUnavailable):
        down.get("k")
    assert isinstance(put.value, StoreError)


# --- the registry --------------------------------------------------------------------------------


def test_an_unknown_scheme_is_a_configuration_error_naming_the_known_ones():
    with pytest.raises(StoreConfigurationError) as refused:
        open_store("gcs://bucket/trail")
    assert str(refused.value) == f"unsupported store URL 'gcs://bucket/trail': use {url_forms()}"
    assert url_forms() == "file:///path or s3://bucket/prefix"


def test_a_scheme_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_backend(StoreBackend(scheme="file", url_form="file:///elsewhere", open=FilesystemStore.from_url))

"""S3ObjectLockStore against a real moto server over HTTP on 127.0.0.1.

No patched clients and no in-process mocks: every call below is an HTTP
request from boto3 to a separate moto process. "Tampering" is done the way an
attacker or a buggy tool would do it: with a plain boto3 client that skips
the store's protections.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import random
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.support.moto_server import MotoServer, free_port
from verdict.audit.stores import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    StoreConfigurationError,
    StoreUnavailable,
    WormStore,
    open_store,
)
from verdict.audit.stores.s3 import ChecksumMismatch, S3ObjectLockStore, create_audit_bucket

PREFIX = "trail/"  # the store prefix used by the s3_store_url fixture


def _versions(client, bucket, key):
    listing = client.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v for v in listing.get("Versions", []) if v["Key"] == key]
    markers = [m for m in listing.get("DeleteMarkers", []) if m["Key"] == key]
    return versions, markers


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --------------------------------------------------------------------------- basics
# The contract every backend shares (write once, read back, batches, keys, listing,
# failures) is tests/audit/test_store_conformance.py; what follows is S3's own.


def test_store_satisfies_protocol_and_open_store_dispatches(s3_store, s3_store_url):
    assert isinstance(s3_store, WormStore)
    opened = open_store(s3_store_url)
    assert isinstance(opened, S3ObjectLockStore)
    assert opened.bucket == s3_store.bucket and opened.prefix == "trail"
    # the store's own URL reopens the same place with the same settings
    again = open_store(s3_store.url)
    assert (again.bucket, again.prefix, again.retention_days, again.timeout) == (s3_store.bucket, "trail", 1, 5.0)
    assert again.endpoint_url == s3_store.endpoint_url


def test_from_url_applies_timeouts_and_limited_retries(s3_store):
    config = s3_store.client.meta.config
    assert config.connect_timeout == 5 and config.read_timeout == 5
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}  # one try, one retry


def test_round_trip_returns_and_pins_version_id(s3_store, s3_client, s3_bucket):
    data = b'{"seq": 1, "score": 0.25}'
    ref = s3_store.put_once("chains/c0/00000001", data)

    assert isinstance(ref, ObjectRef) and ref.key == "chains/c0/00000001"
    assert ref.version and ref.version != "null"
    assert s3_store.get("chains/c0/00000001") == data
    assert s3_store.get("chains/c0/00000001", version=ref.version) == data
    assert s3_store.exists("chains/c0/00000001")
    assert not s3_store.exists("chains/c0/00000002")
    # stored under the prefix, as exactly one version with that id
    versions, markers = _versions(s3_client, s3_bucket, PREFIX + "chains/c0/00000001")
    assert [v["VersionId"] for v in versions] == [ref.version] and markers == []
    raw = s3_client.get_object(Bucket=s3_bucket, Key=PREFIX + "chains/c0/00000001")
    assert raw["Body"].read() == data


def test_put_sets_compliance_retention_and_sha256(s3_store, s3_client, s3_bucket):
    data = b"retained record"
    before = dt.datetime.now(dt.UTC)
    ref = s3_store.put_once("r/1", data)
    after = dt.datetime.now(dt.UTC)

    head = s3_client.head_object(Bucket=s3_bucket, Key=PREFIX + "r/1", VersionId=ref.version, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    # retention_days=1 in the fixture URL; S3 stores the date with second precision
    assert before + dt.timedelta(days=1) - dt.timedelta(seconds=2) <= until <= after + dt.timedelta(days=1, seconds=2)
    assert head["ChecksumSHA256"] == _sha256_b64(data)

    retention = s3_store.retention("r/1", ref.version)
    assert retention.mode == "COMPLIANCE" and retention.version == ref.version
    assert retention.retain_until == until
    # and the lock holds: the version cannot be deleted
    with pytest.raises(ClientError) as denied:
        s3_client.delete_object(Bucket=s3_bucket, Key=PREFIX + "r/1", VersionId=ref.version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert s3_store.get("r/1", ref.version) == data


def test_an_unknown_version_id_is_missing(s3_store):
    s3_store.put_once("m/1", b"x")
    with pytest.raises(ObjectMissing):
        s3_store.get("m/1", version=str(uuid.uuid4()))


# --------------------------------------------------------------------------- batches


def test_put_many_once_64_items_concurrently_durable_and_listed_in_order(s3_store):
    peak = {"now": 0, "max": 0}
    lock = threading.Lock()

    def started(**_):
        with lock:
            peak["now"] += 1
            peak["max"] = max(peak["max"], peak["now"])

    def finished(**_):
        with lock:
            peak["now"] -= 1

    # observe (not alter) the store's own HTTP calls through botocore's event hooks
    s3_store.client.meta.events.register("before-send.s3.PutObject", started)
    s3_store.client.meta.events.register("needs-retry.s3.PutObject", finished)

    keys = [f"batch/{i:04d}" for i in range(64)]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    items = [(k, f"payload {k}".encode() * 20) for k in shuffled]
    refs = s3_store.put_many_once(items)

    assert [r.key for r in refs] == shuffled
    assert all(r.version for r in refs)
    assert len({r.version for r in refs}) == 64
    assert list(s3_store.list_keys("batch/")) == keys  # ascending, prefix stripped
    for ref, (key, data) in zip(refs, items, strict=True):
        assert s3_store.get(key, ref.version) == data
    assert peak["max"] > 1, "the puts of one batch must be in flight together"


def test_a_batch_conflict_says_how_much_of_the_round_is_durable(s3_store):
    s3_store.put_once("b/0005", b"old5")
    s3_store.put_once("b/0008", b"old8")
    items = [(f"b/{i:04d}", f"new{i}".encode()) for i in (9, 8, 1, 5, 2)]
    with pytest.raises(ObjectExists, match="3 of 5"):
        s3_store.put_many_once(items)


def test_concurrent_writers_of_one_key_exactly_one_wins(s3_store_url, s3_client, s3_bucket):
    stores = [S3ObjectLockStore.from_url(s3_store_url) for _ in range(2)]
    outcomes: list[object] = []
    barrier = threading.Barrier(12)

    def write(i):
        barrier.wait()
        try:
            outcomes.append((i, stores[i % 2].put_once("race/1", f"writer {i}".encode())))
        except ObjectExists:
            outcomes.append((i, "exists"))

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(write, range(12)))
    winners = [(i, ref) for i, ref in outcomes if isinstance(ref, ObjectRef)]
    assert len(winners) == 1, outcomes
    ((winner, ref),) = winners
    versions, _ = _versions(s3_client, s3_bucket, PREFIX + "race/1")
    assert [v["VersionId"] for v in versions] == [ref.version]
    assert stores[0].get("race/1") == f"writer {winner}".encode()


# --------------------------------------------------------------------------- listing and tampering


def test_list_keys_stays_inside_the_store_prefix(s3_store, s3_client, s3_bucket):
    keys = ["chains/c1/0001", "index/r-1", "a"]
    s3_store.put_many_once([(k, k.encode()) for k in keys])
    # objects outside the store prefix (written by someone else) are not ours
    for foreign in ("trailer/x", "other/trail/y", "trail"):
        s3_client.put_object(Bucket=s3_bucket, Key=foreign, Body=b"f", ChecksumAlgorithm="SHA256")
    assert list(s3_store.list_keys()) == sorted(keys, key=str.encode)


def test_list_versions_reveals_out_of_band_overwrite_and_delete(s3_store, s3_client, s3_bucket):
    ref_a = s3_store.put_once("t/a", b"A")
    ref_b = s3_store.put_once("t/b", b"B")
    ref_c = s3_store.put_once("t/c", b"C")
    # tampering with a raw client: an overwrite without If-None-Match, a plain delete
    forged = s3_client.put_object(Bucket=s3_bucket, Key=PREFIX + "t/a", Body=b"A-forged", ChecksumAlgorithm="SHA256")
    marker = s3_client.delete_object(Bucket=s3_bucket, Key=PREFIX + "t/b")
    assert marker["DeleteMarker"] is True

    listed = list(s3_store.list_versions("t/"))
    by_key: dict[str, list] = {}
    for v in listed:
        by_key.setdefault(v.key, []).append(v)
    assert [v.key for v in listed] == ["t/a", "t/a", "t/b", "t/b", "t/c"]
    a_latest, a_old = by_key["t/a"]
    assert (a_latest.version, a_latest.is_latest, a_latest.size) == (forged["VersionId"], True, len(b"A-forged"))
    assert (a_old.version, a_old.is_latest, a_old.is_delete_marker, a_old.size) == (ref_a.version, False, False, 1)
    b_marker, b_old = by_key["t/b"]
    assert (b_marker.version, b_marker.is_latest, b_marker.is_delete_marker, b_marker.size) == (
        marker["VersionId"],
        True,
        True,
        None,
    )
    assert (b_old.version, b_old.is_latest, b_old.is_delete_marker) == (ref_b.version, False, False)
    assert [(v.version, v.is_latest) for v in by_key["t/c"]] == [(ref_c.version, True)]

    # version pinning still returns the audited bytes
    assert s3_store.get("t/a", ref_a.version) == b"A"
    assert s3_store.get("t/a") == b"A-forged"
    assert s3_store.get("t/b", ref_b.version) == b"B"
    with pytest.raises(ObjectMissing):
        s3_store.get("t/b")
    # a delete marker has no bytes (real S3: 405 MethodNotAllowed, moto: 404 NoSuchVersion)
    with pytest.raises(ObjectMissing, match=marker["VersionId"]):
        s3_store.get("t/b", marker["VersionId"])
    assert not s3_store.exists("t/b")


def test_conditional_put_after_a_delete_marker_succeeds_so_markers_must_be_flagged(s3_store, s3_client, s3_bucket):
    """What happens (moto 5.2.5): If-None-Match only looks at the current
    version; a delete marker is "nothing", so the key can be written again.
    The history stays visible in list_versions, which is what the verifier
    checks (more than one version or any delete marker = failure)."""
    ref = s3_store.put_once("dm/1", b"first")
    s3_client.delete_object(Bucket=s3_bucket, Key=PREFIX + "dm/1")
    again = s3_store.put_once("dm/1", b"second")
    assert again.version != ref.version
    history = list(s3_store.list_versions("dm/"))
    assert len(history) == 3 and sum(v.is_delete_marker for v in history) == 1
    assert [v.version for v in history if v.is_latest] == [again.version]
    assert s3_store.get("dm/1", ref.version) == b"first"


def test_corruption_is_detected_on_read(s3_store, s3_client, s3_bucket):
    """moto stores the client's x-amz-checksum-sha256 without verifying it; real S3
    rejects such a PUT (BadDigest). Either way the store never returns bytes
    that do not match their checksum."""
    good_checksum = _sha256_b64(b"what was audited")
    try:
        s3_client.put_object(
            Bucket=s3_bucket,
            Key=PREFIX + "x/1",
            Body=b"what arrived",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=good_checksum,
        )
    except ClientError as exc:  # a server that verifies uploads refuses it outright
        assert exc.response["Error"]["Code"] in ("BadDigest", "InvalidRequest")
        return
    with pytest.raises(ChecksumMismatch, match="x/1"):
        s3_store.get("x/1")


# --------------------------------------------------------------------------- bucket checks


def test_bucket_without_object_lock_is_refused_with_a_clear_message(moto_server, s3_env, weak_s3_bucket):
    url = f"s3://{weak_s3_bucket}/trail?endpoint_url={moto_server.endpoint_url}&region=us-east-1&timeout=5"
    with pytest.raises(StoreConfigurationError) as refused:
        open_store(url)
    assert str(refused.value) == (
        f"bucket {weak_s3_bucket} does not have Object Lock enabled; an audit trail needs it: "
        f"create it with ObjectLockEnabledForBucket=True"
    )


def test_missing_bucket_is_named(moto_server, s3_env):
    url = f"s3://no-such-audit-bucket/trail?endpoint_url={moto_server.endpoint_url}&timeout=5"
    with pytest.raises(StoreConfigurationError, match="'no-such-audit-bucket' does not exist"):
        S3ObjectLockStore.from_url(url)


def test_protection_report(s3_store, s3_client, moto_server, weak_s3_bucket):
    report = s3_store.bucket_protection_report()
    assert report.versioning_status == "Enabled"
    assert report.object_lock_enabled is True
    assert (report.default_retention_mode, report.default_retention_days) == ("COMPLIANCE", 1)
    assert (report.store_retention_mode, report.store_retention_days) == ("COMPLIANCE", 1)

    weak = S3ObjectLockStore(weak_s3_bucket, client=s3_client, check_bucket=False).bucket_protection_report()
    assert (weak.versioning_status, weak.object_lock_enabled, weak.default_retention_mode) == (None, False, None)


@pytest.mark.parametrize(
    "query, match",
    [
        ("retention_day=5", "unknown parameter 'retention_day'"),
        ("retention_days=0", "retention_days must be a positive integer"),
        ("timeout=soon", "timeout='soon' is not a number"),
        ("endpoint_url=ftp://x", "endpoint_url must be http"),
        ("aws_secret_access_key=x", "unknown parameter"),
    ],
)
def test_bad_urls_are_configuration_errors(s3_env, query, match):
    with pytest.raises(StoreConfigurationError, match=match):
        S3ObjectLockStore.from_url(f"s3://some-bucket/trail?{query}")


def test_bad_bucket_name_is_a_configuration_error(s3_env):
    with pytest.raises(StoreConfigurationError, match="invalid S3 bucket name"):
        S3ObjectLockStore.from_url("s3://Bad_Bucket/trail")


# --------------------------------------------------------------------------- outages


def _count_attempts(client) -> list[str]:
    """Every HTTP attempt the client makes, by operation (botocore's before-send
    event fires once per attempt, retries included)."""
    attempts: list[str] = []
    client.meta.events.register(
        "before-send.s3", lambda event_name, **_: attempts.append(event_name.rsplit(".", 1)[-1])
    )
    return attempts


def _counting_session(attempts: list[str]):
    import boto3

    session = boto3.session.Session(region_name="us-east-1")
    session.events.register("before-send.s3", lambda event_name, **_: attempts.append(event_name.rsplit(".", 1)[-1]))
    return session


def test_unreachable_endpoint_fails_with_store_unavailable_after_two_attempts(s3_env):
    """Connection refused: the error names the operation and endpoint, and each
    call makes exactly two attempts (no retry storm). How long that takes is a
    benchmark's business, not a test's."""
    port = free_port()  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(StoreUnavailable) as down:
        S3ObjectLockStore.from_url(f"s3://audit-trail/x?endpoint_url={endpoint}&timeout=2")
    assert endpoint in str(down.value) and "HeadBucket" in str(down.value)
    attempts: list[str] = []
    with pytest.raises(StoreUnavailable, match="HeadBucket"):
        S3ObjectLockStore("audit-trail", "x", endpoint_url=endpoint, timeout=2, session=_counting_session(attempts))
    assert attempts == ["HeadBucket"] * 2

    store = S3ObjectLockStore("audit-trail", "x", endpoint_url=endpoint, timeout=2, check_bucket=False)
    attempts = _count_attempts(store.client)
    with pytest.raises(StoreUnavailable, match=r"PutObject s3://audit-trail/x/k at http://127\.0\.0\.1"):
        store.put_once("k", b"x")
    with pytest.raises(StoreUnavailable, match="GetObject"):
        store.get("k")
    with pytest.raises(StoreUnavailable, match="ListObjectsV2"):
        list(store.list_keys())
    assert attempts == ["PutObject"] * 2 + ["GetObject"] * 2 + ["ListObjectsV2"] * 2


def test_silent_endpoint_ends_in_a_read_timeout_after_two_attempts(s3_env):
    """A server that accepts the connection and never answers: the configured
    read timeout ends each attempt, and a call makes two attempts, no more."""
    timeout = 0.5
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accept(): the kernel completes connects, nobody answers
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = S3ObjectLockStore("audit-trail", endpoint_url=endpoint, timeout=timeout, check_bucket=False)
        assert (store.client.meta.config.connect_timeout, store.client.meta.config.read_timeout) == (timeout, timeout)
        attempts = _count_attempts(store.client)
        with pytest.raises(StoreUnavailable, match="ReadTimeoutError") as down:
            store.get("k")
        with pytest.raises(StoreUnavailable, match="ReadTimeoutError"):
            store.put_once("k", b"x")
    assert attempts == ["GetObject"] * 2 + ["PutObject"] * 2
    assert endpoint in str(down.value) and "GetObject" in str(down.value)


def test_stopped_server_is_unavailable_and_restart_comes_back_empty(tmp_path, s3_env):
    with MotoServer(log_dir=tmp_path) as server:
        client = _client(server.endpoint_url)
        create_audit_bucket(client, "restart-bucket", default_retention_days=1)
        store = S3ObjectLockStore("restart-bucket", "t", endpoint_url=server.endpoint_url, timeout=2, retention_days=1)
        ref = store.put_once("before", b"1")
        port = server.port

        server.stop()
        attempts = _count_attempts(store.client)
        calls = (lambda: store.put_once("during", b"2"), lambda: store.get("before"), lambda: store.exists("before"))
        for call in calls:
            with pytest.raises(StoreUnavailable, match=server.endpoint_url):
                call()
        assert attempts == ["PutObject"] * 2 + ["GetObject"] * 2 + ["HeadObject"] * 2  # no retry storm

        server.restart()
        assert server.port == port and server.endpoint_url == store.endpoint_url
        # moto keeps state in memory only: the bucket is gone after a restart
        with pytest.raises(StoreConfigurationError, match="restart-bucket"):
            store.put_once("after", b"3")
        create_audit_bucket(client, "restart-bucket", default_retention_days=1)
        after = store.put_once("after", b"3")
        assert after.version and after.version != ref.version
        assert store.get("after") == b"3"
        with pytest.raises(ObjectMissing):
            store.get("before")


class _DropFirstPutResponse:
    """Loopback TCP proxy that forwards everything, except that it swallows the
    response to the first PUT of ``path`` and closes the client connection: the
    server stored the object but the client never heard about it."""

    def __init__(self, upstream_port: int, path: bytes) -> None:
        self.upstream_port = upstream_port
        self.path = path
        self.dropped = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        head = b""
        while b"\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                break
            head += chunk
        drop = head.startswith(b"PUT " + self.path + b" ") and self.dropped == 0
        if drop:
            self.dropped += 1
        upstream.sendall(head)
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        if drop:
            while upstream.recv(65536):  # read the server's answer and throw it away
                pass
            for sock in (client, upstream):  # shutdown() wakes the pump blocked in recv()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        else:
            _pump(upstream, client)

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def test_put_whose_response_was_lost_is_not_reported_as_a_conflict(moto_server, s3_bucket, s3_client, s3_env):
    """botocore retries the PUT; the retry meets our own first write (412). The
    store recognises its own bytes and returns that version, exactly once."""
    proxy = _DropFirstPutResponse(moto_server.port, f"/{s3_bucket}/{PREFIX}lost/1".encode())
    try:
        store = S3ObjectLockStore(
            s3_bucket, "trail", endpoint_url=f"http://127.0.0.1:{proxy.port}", timeout=5, retention_days=1
        )
        ref = store.put_once("lost/1", b"payload")
        assert proxy.dropped == 1
        versions, _ = _versions(s3_client, s3_bucket, PREFIX + "lost/1")
        assert [v["VersionId"] for v in versions] == [ref.version]
        assert store.get("lost/1", ref.version) == b"payload"
        # a genuine conflict through the same proxy is still a conflict
        with pytest.raises(ObjectExists):
            store.put_once("lost/1", b"other payload")
    finally:
        proxy.close()


def test_moto_object_lock_gaps_as_observed(s3_store, s3_client, s3_bucket):
    """Canary for the moto gaps the immutability test must report as failures
    (see audit/stores/s3.py). If this fails, moto changed: update the module
    docstring and the immutability test's expectations."""
    ref = s3_store.put_once("gap/1", b"x")
    key = PREFIX + "gap/1"
    now = dt.datetime.now(dt.UTC)
    # protected as on AWS: a COMPLIANCE version cannot be deleted, even with the bypass header
    for bypass in (False, True):
        with pytest.raises(ClientError) as denied:
            s3_client.delete_object(Bucket=s3_bucket, Key=key, VersionId=ref.version, BypassGovernanceRetention=bypass)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    # gap 1: COMPLIANCE retention can be shortened (AWS refuses)
    s3_client.put_object_retention(
        Bucket=s3_bucket,
        Key=key,
        VersionId=ref.version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now + dt.timedelta(hours=1)},
    )
    # gap 2: COMPLIANCE can be turned into GOVERNANCE, and the bypass header is then honoured
    s3_client.put_object_retention(
        Bucket=s3_bucket,
        Key=key,
        VersionId=ref.version,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now + dt.timedelta(hours=1)},
        BypassGovernanceRetention=True,
    )
    s3_client.delete_object(Bucket=s3_bucket, Key=key, VersionId=ref.version, BypassGovernanceRetention=True)
    assert list(s3_store.list_versions("gap/")) == []


def _client(endpoint_url: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1}),
    )

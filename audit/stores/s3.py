"""S3 Object Lock WORM store: the audit trail in a bucket nobody can rewrite.

Every object is written with three protections, each closing a different hole:

``If-None-Match: *`` (conditional create)
    S3 refuses the PUT with ``412 PreconditionFailed`` when the key already
    has a current version. Without it a versioned bucket silently *adds* a
    new version on top, so two writers that both believe they own sequence
    number N would fork the chain and the later one would shadow the earlier
    one for every reader that does not pin a version. A HEAD before the PUT
    does not prevent this: two writers can both see "absent" and both write
    (check-then-act race); only the server-side condition is atomic. A 412 is
    reported as :class:`ObjectExists`; the existing object is never touched.

``ObjectLockMode=COMPLIANCE`` + ``ObjectLockRetainUntilDate`` (per object)
    Until the retain-until date nobody, not even the account root, can delete
    that version or shorten its retention on real S3. Retention is set on
    every PUT (now + ``retention_days``) rather than relying only on the
    bucket default, so the record says exactly what was requested. S3
    requires an integrity checksum on such PUTs; we send
    ``x-amz-checksum-sha256`` computed over our bytes, which real S3 verifies
    before storing (a body corrupted in transit is rejected with
    ``BadDigest``) and which we compare with the checksum S3 echoes back.

``VersionId`` pinning
    :meth:`S3ObjectLockStore.put_once` returns the VersionId S3 assigned;
    indexes store it and :meth:`get` reads that exact version, so even an
    object "replaced" by an out-of-band un-conditional PUT (which versioning
    keeps as an extra version) or hidden by a delete marker still reads back
    the bytes that were audited. :meth:`list_versions` exposes every version
    and delete marker so the verifier can flag any key with more than one.

Reads ask for the stored checksum (``ChecksumMode=ENABLED``); botocore then
validates the body it received against it and we raise
:class:`ChecksumMismatch` when they differ.

Failures are fail-closed: unreachable endpoint, timeouts, 5xx, throttling →
:class:`StoreUnavailable` naming the endpoint and the operation; every call
runs under ``connect_timeout``/``read_timeout`` = ``timeout`` and at most two
attempts (``total_max_attempts=2``; note that botocore's ``max_attempts``
key counts retries only). Worst case for a call against a silent endpoint:
2 x ``timeout``, plus up to 1 s per attempt on PUTs, where botocore sends
``Expect: 100-continue`` and waits that long for the interim response.

A PUT that botocore had to retry (e.g. the connection dropped after the
server stored the object) may come back 412 for our *own* first attempt; we
then read the current version and, only if it holds exactly our bytes, return
it as the successful write instead of a false :class:`ObjectExists` (bytes
identical to ours written by someone else are indistinguishable, and equally
harmless: same bytes, same record).
``409 ConditionalRequestConflict`` (real S3, concurrent conditional writes)
is retried a few times as AWS documents.

Known gaps of moto 5.2.5 in server mode (observed over HTTP, see
tests/audit/test_s3_store.py), relevant because our tests run against it:

* ``If-None-Match: *`` on PutObject IS enforced (412 PreconditionFailed), but
  as an unlocked check-then-write inside moto (no atomicity guarantee under
  concurrency; our concurrent-writer test has not seen it fail).
* When the current version is a delete marker, a conditional PUT succeeds and
  adds a new version (nothing to "match"): after an out-of-band delete the key
  can be written again. The verifier must flag delete markers.
* The upload checksum (``x-amz-checksum-sha256`` / ``Content-MD5``) is stored
  and echoed but NOT verified: moto accepts a body that does not match it.
  Corruption in transit is therefore only rejected by real S3; against moto
  it is detected on read (checksum validation in :meth:`get`).
* COMPLIANCE retention can be shortened, even into the past, and changed to
  GOVERNANCE with ``PutObjectRetention`` (real S3 refuses both); after that a
  locked version can be deleted. Deleting a COMPLIANCE version directly is
  refused (AccessDenied), with or without the governance bypass header.
* The governance bypass header is honoured without any permission check.
* ``GetObjectRetention`` is not implemented (returns the object body; boto3
  reports an error): use ``head_object`` (``ObjectLockMode``,
  ``ObjectLockRetainUntilDate``), as :meth:`S3ObjectLockStore.retention` does.
* A retain-until date in the past is accepted on PUT.
* State lives in the server process only: a restarted server has no buckets.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import boto3
import msgspec
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from verdict.audit.stores.base import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    ObjectVersion,
    StoreConfigurationError,
    StoreError,
    StoreUnavailable,
)
from verdict.audit.stores.keys import InvalidKey, check_key

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_TIMEOUT_S",
    "BucketProtectionReport",
    "ChecksumMismatch",
    "ObjectRetention",
    "S3ObjectLockStore",
    "create_audit_bucket",
]

DEFAULT_RETENTION_DAYS = 2555  # seven years: the usual record-keeping horizon for credit decisions
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONCURRENCY = 32
_CONFLICT_RETRIES = 3  # 409 ConditionalRequestConflict: AWS says retry
_URL_PARAMS = ("endpoint_url", "region", "profile", "retention_days", "timeout", "max_concurrency")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_LIST_PREFIX = re.compile(r"[A-Za-z0-9_.\-/]*")
_UNAVAILABLE_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}


class ChecksumMismatch(StoreError):
    """Bytes read or written do not match their SHA-256 checksum (corruption)."""


class BucketProtectionReport(msgspec.Struct, frozen=True):
    """What the bucket itself promises, as S3 reports it (for the immutability test)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    versioning_status: str | None  # "Enabled", "Suspended", or None (never enabled)
    mfa_delete: str | None
    object_lock_enabled: bool
    default_retention_mode: str | None  # "COMPLIANCE" / "GOVERNANCE" / None
    default_retention_days: int | None
    default_retention_years: int | None
    store_retention_mode: str  # what this store sets on every put
    store_retention_days: int


class ObjectRetention(msgspec.Struct, frozen=True):
    """Lock state of one object version, from HeadObject."""

    key: str
    version: str | None
    mode: str | None
    retain_until: dt.datetime | None
    legal_hold: str | None


class S3ObjectLockStore:
    """Write-once objects in an S3 bucket with Object Lock (COMPLIANCE mode).

    ``client`` (a boto3 S3 client) is used as given, timeouts included; it
    must be safe to share between threads (boto3 clients are). Otherwise a
    client is built from ``session`` (or a new boto3 session using
    ``profile``/``region``) with ``timeout`` as connect and read timeout and
    at most one retry. The bucket is checked on open: it must exist, have
    Object Lock enabled and versioning enabled; the store never creates it.
    """

    versioned = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        check_bucket: bool = True,
    ) -> None:
        if not _BUCKET_NAME.fullmatch(bucket or ""):
            raise StoreConfigurationError(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidKey as exc:
                raise StoreConfigurationError(f"invalid store prefix {prefix!r}: {exc}") from None
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise StoreConfigurationError(f"retention_days must be a positive integer, got {retention_days!r}")
        if not timeout or timeout <= 0:
            raise StoreConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not 1 <= max_concurrency <= 256:
            raise StoreConfigurationError(f"max_concurrency must be 1..256, got {max_concurrency!r}")
        if endpoint_url is not None and urlparse(endpoint_url).scheme not in ("http", "https"):
            raise StoreConfigurationError(f"endpoint_url must be http(s)://host[:port], got {endpoint_url!r}")

        self.bucket = bucket
        self.prefix = prefix
        self.retention_days = retention_days
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        if client is None:
            try:
                if session is None:
                    session = boto3.session.Session(profile_name=profile, region_name=region)
                client = session.client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=region,
                    config=Config(
                        connect_timeout=self.timeout,
                        read_timeout=self.timeout,
                        # total_max_attempts counts the first try; botocore's
                        # "max_attempts" would count retries only (2 → 3 tries)
                        retries={"total_max_attempts": 2, "mode": "standard"},
                        max_pool_connections=max_concurrency,
                        request_checksum_calculation="when_supported",
                        response_checksum_validation="when_supported",
                    ),
                )
            except ProfileNotFound as exc:
                raise StoreConfigurationError(f"S3 store: {exc}") from None
            except BotoCoreError as exc:
                raise StoreConfigurationError(f"S3 store: cannot create client: {exc}") from None
        self._client = client
        self.client = client  # read-only use by callers (e.g. the immutability test)
        self.endpoint_url = client.meta.endpoint_url
        query = {
            name: value
            for name, value in (
                ("endpoint_url", endpoint_url),
                ("region", region),
                ("profile", profile),
                ("retention_days", None if retention_days == DEFAULT_RETENTION_DAYS else retention_days),
                ("timeout", None if self.timeout == DEFAULT_TIMEOUT_S else _fmt_num(self.timeout)),
                ("max_concurrency", None if max_concurrency == DEFAULT_MAX_CONCURRENCY else max_concurrency),
            )
            if value is not None
        }
        self.url = f"s3://{bucket}/{prefix}" + (f"?{urlencode(query)}" if query else "")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        if check_bucket:
            self.check_bucket()

    # ------------------------------------------------------------------ opening

    @classmethod
    def from_url(cls, url: str, *, check_bucket: bool = True) -> S3ObjectLockStore:
        """Open ``s3://bucket/prefix?endpoint_url=..&region=..&profile=..&retention_days=..&timeout=..``.

        Parameters not in the URL come from the usual AWS configuration
        (environment variables, shared config/credentials files, profiles).
        Credentials are never accepted in the URL. ``check_bucket=False``
        opens a bucket without Object Lock or versioning too: the
        immutability test's job is to report exactly that.
        """
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreConfigurationError(f"S3 store URL {url!r} must look like s3://bucket/prefix")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parsed.query, keep_blank_values=True, strict_parsing=False):
            if name not in _URL_PARAMS:
                raise StoreConfigurationError(
                    f"S3 store URL {url!r}: unknown parameter {name!r} (allowed: {', '.join(_URL_PARAMS)})"
                )
            if name in params:
                raise StoreConfigurationError(f"S3 store URL {url!r}: parameter {name!r} given twice")
            params[name] = value
        kwargs: dict[str, Any] = {}
        for name in ("endpoint_url", "region", "profile"):
            if params.get(name):
                kwargs[name] = params[name]
        for name, conv in (("retention_days", int), ("timeout", float), ("max_concurrency", int)):
            if name in params:
                try:
                    kwargs[name] = conv(params[name])
                except ValueError:
                    raise StoreConfigurationError(
                        f"S3 store URL {url!r}: {name}={params[name]!r} is not a number"
                    ) from None
        return cls(parsed.netloc, parsed.path, check_bucket=check_bucket, **kwargs)

    def check_bucket(self) -> None:
        """Raise StoreConfigurationError unless the bucket exists with Object Lock and versioning."""
        b = self.bucket
        try:
            self._client.head_bucket(Bucket=b)
        except ClientError as exc:
            status = _status(exc)
            if status == 404 or _code(exc) in ("NoSuchBucket", "404"):
                raise StoreConfigurationError(
                    f"S3 bucket {b!r} does not exist at {self.endpoint_url}; "
                    f"create it with ObjectLockEnabledForBucket=True (the store never creates buckets)"
                ) from None
            if status == 403:
                raise StoreConfigurationError(f"S3 bucket {b!r} at {self.endpoint_url}: access denied") from None
            raise self._translate(exc, "HeadBucket") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "HeadBucket") from exc
        report = self.bucket_protection_report()
        if not report.object_lock_enabled:
            raise StoreConfigurationError(
                f"bucket {b} does not have Object Lock enabled; an audit trail needs it: "
                f"create it with ObjectLockEnabledForBucket=True"
            )
        if report.versioning_status != "Enabled":
            raise StoreConfigurationError(
                f"bucket {b} has versioning {report.versioning_status or 'never enabled'}; "
                f"an audit trail needs versioning Enabled (Object Lock requires it)"
            )

    def bucket_protection_report(self) -> BucketProtectionReport:
        """Versioning, Object Lock and default retention as the bucket reports them."""
        try:
            versioning = self._client.get_bucket_versioning(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "GetBucketVersioning") from exc
        lock_enabled = False
        mode = days = years = None
        try:
            lock = self._client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as exc:
            if _code(exc) != "ObjectLockConfigurationNotFoundError":
                raise self._translate(exc, "GetObjectLockConfiguration") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "GetObjectLockConfiguration") from exc
        else:
            lock_enabled = lock.get("ObjectLockEnabled") == "Enabled"
            retention = (lock.get("Rule") or {}).get("DefaultRetention") or {}
            mode = retention.get("Mode")
            days = retention.get("Days") or None
            years = retention.get("Years") or None
        return BucketProtectionReport(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url,
            versioning_status=versioning.get("Status"),
            mfa_delete=versioning.get("MFADelete"),
            object_lock_enabled=lock_enabled,
            default_retention_mode=mode,
            default_retention_days=days,
            default_retention_years=years,
            store_retention_mode="COMPLIANCE",
            store_retention_days=self.retention_days,
        )

    # ------------------------------------------------------------------ writes

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        return self._put(check_key(key), bytes(data))

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Ignored: an S3 put is durable when it returns, there is no barrier to share."""

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        """All puts of the batch run concurrently (one durable round).

        Keys are validated before anything is sent. A key repeated within the
        batch is written once (first occurrence) and reported as existing for
        the later ones. After every put has finished: the first failure other
        than a conflict (in input order) is raised, since the round was not
        durable; otherwise the first conflicting key raises ObjectExists.
        """
        keys = [check_key(key) for key, _ in items]
        if not items:
            return []
        first_index: dict[str, int] = {}
        for i, key in enumerate(keys):
            first_index.setdefault(key, i)
        work = [i for i, key in enumerate(keys) if first_index[key] == i]
        results: list[ObjectRef | BaseException | None] = [None] * len(items)
        if len(work) == 1:
            i = work[0]
            try:
                results[i] = self._put(keys[i], bytes(items[i][1]))
            except StoreError as exc:
                results[i] = exc
        else:
            pool = self._executor()
            futures = {i: pool.submit(self._put, keys[i], bytes(items[i][1])) for i in work}
            for i, future in futures.items():
                try:
                    results[i] = future.result()
                except StoreError as exc:
                    results[i] = exc
                except Exception as exc:  # noqa: BLE001 - reported after the round, never lost
                    results[i] = StoreUnavailable(f"S3 PutObject s3://{self.bucket}/{self._full(keys[i])}: {exc!r}")
        for i, key in enumerate(keys):
            if first_index[key] != i:
                results[i] = ObjectExists(key, "the same key appears earlier in this batch")
        failures = [r for r in results if isinstance(r, BaseException)]
        hard = [r for r in failures if not isinstance(r, ObjectExists)]
        if hard:
            raise hard[0]
        if failures:
            written = sum(isinstance(r, ObjectRef) for r in results)
            first = failures[0]
            assert isinstance(first, ObjectExists)
            raise ObjectExists(first.key, f"{written} of {len(items)} objects of this batch are durable")
        return [r for r in results if isinstance(r, ObjectRef)]

    def _put(self, key: str, data: bytes) -> ObjectRef:
        full = self._full(key)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        retried = False
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                response = self._client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=data,
                    IfNoneMatch="*",
                    ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=until,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                break
            except ClientError as exc:
                code = _code(exc)
                retried = retried or exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
                if code == "ConditionalRequestConflict" and attempt < _CONFLICT_RETRIES:
                    retried = True
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if code == "PreconditionFailed" or _status(exc) == 412:
                    if retried:
                        ref = self._our_earlier_attempt(key, data)
                        if ref is not None:
                            return ref
                    raise ObjectExists(
                        key, f"s3://{self.bucket}/{full}: If-None-Match refused the write; existing object untouched"
                    ) from None
                if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
                    raise ChecksumMismatch(
                        f"S3 PutObject s3://{self.bucket}/{full}: body rejected by checksum ({code}); nothing written"
                    ) from None
                raise self._translate(exc, "PutObject", key) from exc
            except BotoCoreError as exc:
                raise self._translate(exc, "PutObject", key) from exc
        version = response.get("VersionId")
        if not version or version == "null":
            raise StoreConfigurationError(
                f"S3 PutObject s3://{self.bucket}/{full} returned no VersionId: bucket {self.bucket} is not versioned"
            )
        echoed = response.get("ChecksumSHA256")
        if echoed is not None and echoed != checksum:
            raise ChecksumMismatch(
                f"S3 PutObject s3://{self.bucket}/{full} version {version}: server checksum {echoed} "
                f"differs from ours {checksum}"
            )
        return ObjectRef(key=key, version=version)

    def _our_earlier_attempt(self, key: str, data: bytes) -> ObjectRef | None:
        """After a retried PUT got 412: is the current version exactly our bytes?"""
        try:
            current = self._get_response(key, None, "GetObject")
        except ObjectMissing:
            return None
        if current[0] != data:
            return None
        return ObjectRef(key=key, version=current[1])

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="s3-worm-put")
            return self._pool

    def close(self) -> None:
        """Stop the batch thread pool (the store can still be used; it restarts lazily)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> S3ObjectLockStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def get(self, key: str, version: str | None = None) -> bytes:
        return self._get_response(check_key(key), version, "GetObject")[0]

    def _get_response(self, key: str, version: str | None, op: str) -> tuple[bytes, str | None]:
        full = self._full(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "ChecksumMode": "ENABLED"}
        if version is not None:
            kwargs["VersionId"] = version
        try:
            response = self._client.get_object(**kwargs)
            body = response["Body"]
            # Not "with body:": StreamingBody.__enter__ hands out the raw
            # urllib3 stream, which skips botocore's checksum and length checks.
            try:
                data = body.read()
            finally:
                body.close()
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "NoSuchVersion", "404") or _status(exc) == 404:
                detail = f"s3://{self.bucket}/{full}" + (f" version {version}" if version else "")
                raise ObjectMissing(key, detail) from None
            if code == "MethodNotAllowed" or _status(exc) == 405:
                raise ObjectMissing(key, f"s3://{self.bucket}/{full} version {version} is a delete marker") from None
            if code in ("InvalidArgument", "InvalidVersionId") and version is not None:
                raise ObjectMissing(key, f"s3://{self.bucket}/{full}: no version {version!r}") from None
            raise self._translate(exc, op, key) from exc
        except FlexibleChecksumError as exc:
            raise ChecksumMismatch(
                f"S3 {op} s3://{self.bucket}/{full}" + (f" version {version}" if version else "") + f": {exc}"
            ) from None
        except BotoCoreError as exc:
            raise self._translate(exc, op, key) from exc
        got_version = response.get("VersionId")
        if version is not None and got_version != version:
            raise StoreError(f"S3 {op} s3://{self.bucket}/{full}: asked for version {version}, got {got_version}")
        length = response.get("ContentLength")
        if length is not None and length != len(data):
            raise StoreUnavailable(
                f"S3 {op} s3://{self.bucket}/{full}: read {len(data)} of {length} bytes from {self.endpoint_url}"
            )
        return data, got_version

    def exists(self, key: str) -> bool:
        full = self._full(check_key(key))
        try:
            self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404"):
                return False
            raise self._translate(exc, "HeadObject", key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "HeadObject", key) from exc
        return True

    def retention(self, key: str, version: str | None = None) -> ObjectRetention:
        """Lock mode and retain-until date of one version (HeadObject; moto lacks GetObjectRetention)."""
        full = self._full(check_key(key))
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if version is not None:
            kwargs["VersionId"] = version
        try:
            head = self._client.head_object(**kwargs)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                where = f"s3://{self.bucket}/{full}" + (f" version {version}" if version else "")
                raise ObjectMissing(key, where) from None
            raise self._translate(exc, "HeadObject", key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "HeadObject", key) from exc
        return ObjectRetention(
            key=key,
            version=head.get("VersionId"),
            mode=head.get("ObjectLockMode"),
            retain_until=head.get("ObjectLockRetainUntilDate"),
            legal_hold=head.get("ObjectLockLegalHoldStatus"),
        )

    def extend_retention(self, key: str, until: dt.datetime, version: str | None = None) -> bool:
        """Lengthen one version's COMPLIANCE retention to ``until`` (PutObjectRetention); never
        shortens it (True if it was lengthened). Why: a segment is written with the store's
        retention, and a model whose records must be kept longer extends it (docs/compliance.md)."""
        current = self.retention(key, version)
        if current.retain_until is not None and current.retain_until >= until:
            return False
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(check_key(key))}
        if version is not None:
            kwargs["VersionId"] = version
        try:
            self._client.put_object_retention(
                **kwargs, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until.astimezone(dt.UTC)}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "PutObjectRetention", key) from exc
        return True

    def set_legal_hold(self, key: str, on: bool, version: str | None = None) -> None:
        """Set or clear one version's Object Lock legal hold (PutObjectLegalHold): while it is
        on, the version cannot be deleted even after its retention ends."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(check_key(key))}
        if version is not None:
            kwargs["VersionId"] = version
        try:
            self._client.put_object_legal_hold(**kwargs, LegalHold={"Status": "ON" if on else "OFF"})
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "PutObjectLegalHold", key) from exc

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (a plain string prefix, as in S3) in ascending byte order."""
        full_prefix = self._list_prefix(prefix)
        strip = len(self._base())
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"][strip:]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "ListObjectsV2") from exc

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and every delete marker under ``prefix``.

        Grouped by key in ascending order; within a key, newest first as far
        as the backend's LastModified resolution tells (``is_latest`` is
        authoritative).
        """
        full_prefix = self._list_prefix(prefix)
        strip = len(self._base())
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                entries: list[tuple[str, float, int, ObjectVersion]] = []
                for n, item in enumerate(page.get("Versions", ())):
                    entries.append((item["Key"], -_ts(item), n, _version(item, strip, False)))
                for n, item in enumerate(page.get("DeleteMarkers", ())):
                    entries.append((item["Key"], -_ts(item), n, _version(item, strip, True)))
                entries.sort(key=lambda e: (e[0].encode(), not e[3].is_latest, e[1], e[2]))
                for entry in entries:
                    yield entry[3]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "ListObjectVersions") from exc

    # ------------------------------------------------------------------ helpers

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _full(self, key: str) -> str:
        return self._base() + key

    def _list_prefix(self, prefix: str) -> str:
        if not _LIST_PREFIX.fullmatch(prefix) or prefix.startswith("/") or ".." in prefix.split("/"):
            raise InvalidKey(f"list prefix {prefix!r} must be a relative key prefix of [A-Za-z0-9_.-/] characters")
        return self._base() + prefix

    def _translate(self, exc: BaseException, operation: str, key: str | None = None) -> StoreError:
        """Map a botocore failure to the store's error classes, naming endpoint and operation."""
        where = f"S3 {operation} s3://{self.bucket}/" + (self._full(key) if key is not None else self.prefix)
        where += f" at {self.endpoint_url}"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return StoreConfigurationError(f"{where}: no usable AWS credentials ({exc})")
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            return StoreUnavailable(f"{where}: endpoint unreachable or timed out ({type(exc).__name__}: {exc})")
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            if status >= 500 or code in _UNAVAILABLE_CODES:
                return StoreUnavailable(f"{where}: server error {status} {code}: {message}")
            if code == "NoSuchBucket":
                return StoreConfigurationError(f"{where}: bucket {self.bucket!r} does not exist")
            if status == 403:
                return StoreConfigurationError(f"{where}: access denied ({code}: {message})")
            return StoreError(f"{where}: {status} {code}: {message}")
        return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def create_audit_bucket(client: Any, bucket: str, default_retention_days: int | None = DEFAULT_RETENTION_DAYS) -> None:
    """Create a bucket fit for an audit trail (for tests and development).

    Object Lock can only be switched on at creation (it also enables
    versioning); a default COMPLIANCE retention is added when
    ``default_retention_days`` is given. Production buckets belong in
    infrastructure code (deploy/), not in the application.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
    region = client.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**kwargs)
    if default_retention_days:
        client.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": int(default_retention_days)}},
            },
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _ts(item: dict[str, Any]) -> float:
    modified = item.get("LastModified")
    return modified.timestamp() if modified is not None else 0.0


def _version(item: dict[str, Any], strip: int, delete_marker: bool) -> ObjectVersion:
    return ObjectVersion(
        key=item["Key"][strip:],
        version=item.get("VersionId"),
        is_latest=bool(item.get("IsLatest")),
        is_delete_marker=delete_marker,
        size=None if delete_marker else item.get("Size"),
    )


def _fmt_num(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)

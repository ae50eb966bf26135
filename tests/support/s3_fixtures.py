"""S3 fixtures: one moto server (real HTTP on 127.0.0.1) for the whole suite.

* ``moto_server``      session-scoped :class:`MotoServer`; do not stop it in a
                       test (start your own ``MotoServer`` to test outages).
* ``s3_env``           fake credentials and region in the environment.
* ``s3_client``        a plain boto3 client on the server (for setup and for
                       out-of-band "tampering" in tests).
* ``s3_bucket``        a fresh Object Lock bucket (unique name) → its name.
* ``weak_s3_bucket``   a fresh bucket WITHOUT Object Lock → its name.
* ``s3_store_url``     ``s3://<bucket>/trail?endpoint_url=...&region=...``.
* ``s3_store``         an opened :class:`S3ObjectLockStore` on that URL.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from tests.support.moto_server import MotoServer

_counter = itertools.count()
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = MotoServer(log_dir=tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch):
    """Credentials and region for boto3, from the environment only (no profile files)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_client(moto_server, s3_env):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint_url,
        region_name=REGION,
        config=Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}),
    )


def _bucket_name(kind: str) -> str:
    return f"{kind}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3_bucket(s3_client):
    """A new bucket with Object Lock (and so versioning) and a 1-day COMPLIANCE default."""
    from verdict.audit.stores.s3 import create_audit_bucket

    name = _bucket_name("audit")
    create_audit_bucket(s3_client, name, default_retention_days=1)
    return name


@pytest.fixture
def weak_s3_bucket(s3_client):
    """A new plain bucket: no Object Lock, no versioning."""
    name = _bucket_name("weak")
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store_url(moto_server, s3_bucket):
    return f"s3://{s3_bucket}/trail?endpoint_url={moto_server.endpoint_url}&region={REGION}&retention_days=1&timeout=5"


@pytest.fixture
def s3_store(s3_store_url):
    from verdict.audit.stores.s3 import S3ObjectLockStore

    store = S3ObjectLockStore.from_url(s3_store_url)
    try:
        yield store
    finally:
        store.close()

"""Write-once stores, selected by URL (``file:///path`` or ``s3://bucket/prefix``)."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from verdict.audit.stores.base import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    ObjectVersion,
    StoreConfigurationError,
    StoreError,
    StoreUnavailable,
    WormStore,
    WriteProbe,
)
from verdict.audit.stores.filesystem import FilesystemStore

__all__ = [
    "FilesystemStore",
    "ObjectExists",
    "ObjectMissing",
    "ObjectRef",
    "ObjectVersion",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "WormStore",
    "WriteProbe",
    "open_store",
]


def open_store(url: str) -> WormStore:
    """Open the store named by ``url``; raise StoreConfigurationError for an unknown scheme."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreConfigurationError(f"file store URL {url!r} must be file:///absolute/path")
        return FilesystemStore(unquote(parsed.path))
    if parsed.scheme == "s3":
        from verdict.audit.stores.s3 import S3ObjectLockStore  # boto3 only when asked for

        return S3ObjectLockStore.from_url(url)
    raise StoreConfigurationError(f"unsupported store URL {url!r}: use file:///path or s3://bucket/prefix")

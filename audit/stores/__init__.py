"""Write-once stores, selected by URL through the backend registry (audit.stores.registry).

The two built-in backends are registered here, each with one call; a new
backend is registered the same way (see docs/operations.md, "Adding a storage
backend").
"""

from __future__ import annotations

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
from verdict.audit.stores.filesystem_probes import FilesystemProbes
from verdict.audit.stores.probes import ProbeContext, StoreProbes
from verdict.audit.stores.registry import StoreBackend, open_store, register_backend

__all__ = [
    "FilesystemStore",
    "ObjectExists",
    "ObjectMissing",
    "ObjectRef",
    "ObjectVersion",
    "StoreBackend",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "WormStore",
    "WriteProbe",
    "open_store",
    "register_backend",
]


def _filesystem_probes(store: WormStore, context: ProbeContext) -> StoreProbes | None:
    return FilesystemProbes(store, context) if isinstance(store, FilesystemStore) else None


def _open_s3(url: str) -> WormStore:
    # lazy: boto3 only for s3:// stores
    from verdict.audit.stores.s3 import S3ObjectLockStore

    return S3ObjectLockStore.from_url(url)


def _open_s3_unchecked(url: str) -> WormStore:
    # lazy: boto3 only for s3:// stores
    from verdict.audit.stores.s3 import S3ObjectLockStore

    return S3ObjectLockStore.from_url(url, check_bucket=False)


def _s3_probes(store: WormStore, context: ProbeContext) -> StoreProbes | None:
    # lazy: boto3 only for s3:// stores
    from verdict.audit.stores.s3 import S3ObjectLockStore
    from verdict.audit.stores.s3_probes import S3Probes

    return S3Probes(store, context) if isinstance(store, S3ObjectLockStore) else None


register_backend(
    StoreBackend(
        scheme="file",
        url_form="file:///path",
        open=FilesystemStore.from_url,
        probes=_filesystem_probes,
        present=FilesystemStore.present,
        local_reads=True,
    )
)
register_backend(
    StoreBackend(
        scheme="s3",
        url_form="s3://bucket/prefix",
        open=_open_s3,
        open_unchecked=_open_s3_unchecked,
        probes=_s3_probes,
    )
)

"""Store backends by URL scheme: the one place that knows ``file://`` from ``s3://``.

Why a registry: opening a store, opening it for the immutability test, asking
whether a store is there before a read-only command runs, choosing the
verifier's read strategy and finding a backend's immutability probes all
depend on the backend. Each of those asks here, so a new backend (GCS, Azure)
is one :func:`register_backend` call plus a run of the conformance suite
(tests/audit/test_store_conformance.py), not edits across the CLI, the
verifier and the immutability test.

A backend's callables are called lazily, so a registration costs nothing: the
S3 backend imports boto3 only when an ``s3://`` store is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from verdict.audit.stores.base import StoreConfigurationError, WormStore
from verdict.audit.stores.probes import ProbeFactory

__all__ = [
    "StoreBackend",
    "backend_for_url",
    "backends",
    "find_backend",
    "open_store",
    "open_store_unchecked",
    "reads_are_local",
    "register_backend",
    "store_present",
    "url_forms",
]


@dataclass(frozen=True)
class StoreBackend:
    """One kind of store, named by its URL scheme."""

    scheme: str
    """The URL scheme, e.g. ``"s3"`` for ``s3://bucket/prefix``."""
    url_form: str
    """How its URL looks, for help texts and error messages."""
    open: Callable[[str], WormStore]
    """Open the store at a URL; raise StoreConfigurationError where it is unfit for a trail."""
    open_unchecked: Callable[[str], WormStore] | None = None
    """Open it even where it is unfit (e.g. a bucket without Object Lock), so the
    immutability test can report why; None: same as ``open``."""
    probes: ProbeFactory | None = None
    """Its immutability probes (audit.stores.probes); None: the test reports it as unknown."""
    present: Callable[[str], bool] | None = None
    """Whether a store exists at the URL, for backends whose ``open`` would
    create it (the filesystem makes its directory); None: ``open`` tells."""
    local_reads: bool = False
    """Reads are local and cheap: readers gain nothing by reading ahead in threads."""


_BACKENDS: dict[str, StoreBackend] = {}
_LOCK = threading.Lock()


def register_backend(backend: StoreBackend) -> StoreBackend:
    """Make ``backend`` the one for its scheme; a scheme is registered once
    (a second registration is a mistake that would silently change where a
    trail is written)."""
    scheme = backend.scheme.lower()
    if not scheme or scheme != backend.scheme or not scheme.isascii():
        raise ValueError(f"store backend scheme {backend.scheme!r} must be a lower-case URL scheme")
    with _LOCK:
        if scheme in _BACKENDS:
            raise ValueError(f"a store backend for {scheme}:// is already registered")
        _BACKENDS[scheme] = backend
    return backend


def backends() -> list[StoreBackend]:
    """The registered backends, in registration order."""
    with _LOCK:
        return list(_BACKENDS.values())


def url_forms() -> str:
    """``file:///path or s3://bucket/prefix``: the URLs the registered backends take."""
    return " or ".join(b.url_form for b in backends())


def find_backend(url: str) -> StoreBackend | None:
    """The backend for ``url``'s scheme, or None."""
    with _LOCK:
        return _BACKENDS.get(urlparse(url).scheme)


def backend_for_url(url: str) -> StoreBackend:
    """The backend for ``url``; StoreConfigurationError for an unknown scheme."""
    backend = find_backend(url)
    if backend is None:
        raise StoreConfigurationError(f"unsupported store URL {url!r}: use {url_forms()}")
    return backend


def open_store(url: str) -> WormStore:
    """Open the store named by ``url``; raise StoreConfigurationError for an unknown scheme."""
    return backend_for_url(url).open(url)


def open_store_unchecked(url: str) -> WormStore:
    """Open the store even if it is unfit for an audit trail (for the immutability test)."""
    backend = backend_for_url(url)
    return (backend.open_unchecked or backend.open)(url)


def store_present(url: str) -> bool:
    """False only where the backend can tell that no store exists at ``url`` yet
    (a read-only command must then not create one by opening it)."""
    backend = find_backend(url)
    return backend is None or backend.present is None or backend.present(url)


def reads_are_local(url: str) -> bool:
    """Whether the store at ``url`` reads locally (no point reading ahead in threads)."""
    backend = find_backend(url)
    return backend is not None and backend.local_reads

"""Where Verdict keeps its data, shared by every command.

The data directory is ``./var`` unless ``VERDICT_HOME`` names another; the
store URL defaults to a filesystem store inside it unless ``VERDICT_STORE``
names another. Resolved on every call (not at import) so tests and
subprocesses can point one process at several homes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "default_store_url", "store_url"]


def data_dir() -> Path:
    """The data directory (created on demand by the code that writes into it)."""
    return Path(os.environ.get("VERDICT_HOME") or "var").absolute()


def default_store_url() -> str:
    return (data_dir() / "store").as_uri()


def store_url(override: str | None = None) -> str:
    """An explicit URL wins, then ``VERDICT_STORE``, then the embedded default."""
    return override or os.environ.get("VERDICT_STORE") or default_store_url()

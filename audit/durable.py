"""Small durable-file helpers shared by the filesystem store and the key store.

Why: a file is durable only once its directory entry is too, so both the
write-once store and the private key store fsync directories the same way.
"""

from __future__ import annotations

import os

__all__ = ["fsync_directory", "unlink_if_present"]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_if_present(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""Small durable-file helpers shared by the filesystem store and the key store.

Why: a file is durable only once its directory entry is too, so both the
write-once store and the private key store fsync directories the same way.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["fsync_directory", "replace_durably", "unlink_if_present", "write_file"]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_if_present(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_file(path: str | os.PathLike[str], data: bytes, *, exclusive: bool, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` (created with exactly ``mode``) and fsync it."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; make it exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically: after a crash it holds the old or the new bytes, never a mix."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp")
    unlink_if_present(tmp)
    write_file(tmp, data, exclusive=True, mode=mode)
    os.replace(tmp, path)
    fsync_directory(directory or ".")

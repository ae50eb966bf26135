"""A real small filesystem a test can fill, to make a gateway's store run out of space."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "small_tmpfs"]


def small_tmpfs(where: Path, size: str = "48m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where`` (needs root, as in CI; skips otherwise), yield it, unmount."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem says ENOSPC."""
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    while True:  # the last partial megabyte
        try:
            with open(path, "ab") as filler:
                filler.write(b"\0" * 4096)
        except OSError:
            return

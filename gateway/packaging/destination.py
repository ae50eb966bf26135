"""Where a packaged model directory goes, and how it gets there whole.

Why its own module: a half-written or unvalidated model directory at ``--out``
could be registered by mistake, and registering is forever. So the packager
writes into a staging folder beside ``--out`` and renames it into place only
when everything (validation included) succeeded; an existing non-empty
``--out`` is refused unless the user asked to replace it, and is then moved
aside first and deleted only once the new directory is in place. The checks
need no torch, so the command line refuses a bad ``--out`` at once.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from verdict.gateway.packaging.errors import PackagingError

__all__ = ["check_destination", "move_into_place", "staging_folder"]


def check_destination(out: Path, force: bool, protect: Path | None = None) -> None:
    """Refuse an ``out`` that is a file, that is not empty (unless ``force``), or that
    holds (or is) ``protect``, the spec's folder, which ``force`` would delete."""
    if protect is not None and (out.resolve() == protect.resolve() or protect.resolve().is_relative_to(out.resolve())):
        raise PackagingError(f"--out {out} holds the spec and its files; choose another directory")
    if out.exists() and not out.is_dir():
        raise PackagingError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PackagingError(f"--out {out} exists and is not empty: choose another directory, or --force to replace it")


def staging_folder(out: Path) -> Path:
    """A new, empty folder beside ``out`` (same file system, so the final rename is atomic).
    Not ``tempfile.mkdtemp``: its 0700 mode would become the model directory's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.packaging-{secrets.token_hex(6)}"
    staging.mkdir()
    return staging


def move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; an existing ``out`` (``force``) is moved
    aside first and deleted only once the new one is in place."""
    aside = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            aside = out.parent / f".{out.name}.replaced-{secrets.token_hex(6)}"
            out.rename(aside)
    staging.rename(out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)

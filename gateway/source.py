"""Identity of the code that is running: project version, source hash, commit.

Why: a model's provenance and every environment manifest must say which code
produced them. A git commit alone is not enough (a working tree can differ
from it, and an installed copy has no .git), so the source files themselves
are hashed.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["code_commit", "project_root", "project_version", "source_sha256"]

_PACKAGES = ("gateway", "audit", "replay")
_DISTRIBUTION = "verdict-gateway"
_SUFFIXES = {".py", ".json", ".md", ".data", ".doc", ".jsonl"}


def project_root() -> Path:
    """The folder holding ``gateway/``, ``audit/`` and ``replay/``: the checkout, or the installed ``verdict`` package."""
    return Path(__file__).resolve().parent.parent


def _namespace_files(root: Path) -> list[Path]:
    """The ``verdict`` package's own files (its ``__init__``, ``py.typed``...), under the same relative names
    whether ``root`` is a checkout (they sit in ``root/verdict``) or an installed wheel (``root`` is that package),
    so that a checkout and a wheel built from it hash alike."""
    folder = root / "verdict" if (root / "verdict" / "__init__.py").is_file() else root
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix in _SUFFIXES)


def project_version() -> str:
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def source_sha256() -> str:
    """SHA-256 over (relative path, file SHA-256) of every source file, sorted."""
    root = project_root()
    lines = [
        f"verdict/{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n" for path in _namespace_files(root)
    ]
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in _SUFFIXES and "__pycache__" not in path.parts:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                lines.append(f"{path.relative_to(root).as_posix()}\0{digest}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@functools.cache
def code_commit() -> str:
    """The git commit when the sources are exactly that commit, else "uncommitted"."""
    root = project_root()
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "verdict", *_PACKAGES],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "uncommitted"
    if head.returncode != 0 or dirty.returncode != 0 or dirty.stdout.strip():
        return "uncommitted"
    return head.stdout.strip()

"""Provenance of a packaged model's code: which source files made it, their
hashes, and the git commit they are, if they are exactly a commit.

Why not ``gateway.source``: that hashes *Verdict's* code. A packaged model was
made by the user's code (the factory's module and the helper modules it
imports from beside the spec), and a model-risk validator must be able to
trace the artifact back to those files: by sha256 always, by commit when the
files are committed and unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["UNCOMMITTED", "git_commit", "hash_sources"]

UNCOMMITTED = "uncommitted"


def hash_sources(files: Mapping[str, Path]) -> tuple[dict[str, str], str]:
    """(name -> sha256 of the file, sha256 over the sorted ``name NUL sha256 LF`` lines).

    Names are relative (``model.py``, ``helpers/layers.py``), never absolute
    paths: the same code must give the same manifest wherever it is checked out.
    No file (a module defined in a notebook or a REPL) hashes the empty listing."""
    digests = {name: hashlib.sha256(files[name].read_bytes()).hexdigest() for name in sorted(files)}
    listing = "".join(f"{name}\0{digest}\n" for name, digest in digests.items())
    return digests, hashlib.sha256(listing.encode()).hexdigest()


def git_commit(paths: list[Path]) -> str:
    """HEAD of the git work tree holding ``paths`` when every one of them is tracked
    and unchanged there, else ``"uncommitted"`` (also outside git, or without git)."""
    if not paths:
        return UNCOMMITTED
    where = paths[0].resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        # --porcelain lists modified, staged and untracked files alike; --ignored lists ignored ones too
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--ignored", "--", *(str(p.resolve()) for p in paths)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNCOMMITTED
    if head.returncode != 0 or status.returncode != 0 or status.stdout.strip():
        return UNCOMMITTED
    return head.stdout.strip()

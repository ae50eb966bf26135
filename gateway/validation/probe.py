"""The child side of the fresh-process check: ``python -m verdict.gateway.validation.probe``.

Why a separate process: bits that depend on process state (which kernels a
library picked at its first call, a thread pool's size, MKL's mode, a cache
warmed by earlier calls) agree within one process and differ in the next, and
a replay always runs in a new process. This module loads the model directory's
artifact exactly as serving does, scores the rows the parent wrote at the
score bucket and at the explain bucket, and writes the raw float32 bytes; the
parent compares them with its own, bit for bit.

Usage: ``python -m verdict.gateway.validation.probe MODEL_DIR ROWS.npy OUT.bin``
(exit 0 with the sha256 of the artifact it loaded on stdout, so the parent knows it ran the
same bytes; the error on stderr otherwise).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from verdict.gateway.manifest import decode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, MANIFEST_FILE
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.validation.behaviour import probe_outputs

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m verdict.gateway.validation.probe MODEL_DIR ROWS.npy OUT.bin", file=sys.stderr)
        return 2
    directory, rows, out = Path(args[0]), Path(args[1]), Path(args[2])
    manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    artifact = (directory / ARTIFACT_FILE).read_bytes()
    runtime = LoadedModel.load(manifest, artifact, "cpu")
    matrix = np.load(rows, allow_pickle=False)
    out.write_bytes(probe_outputs(runtime, matrix))
    print(hashlib.sha256(artifact).hexdigest())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The files of a model directory: what ``verdict models package`` and ``train``
write, ``validate`` checks and ``register`` stores.

Why a module of its own: the registry, the CLI and the packager all name these
files, and the registry must be importable without torch (``verdict models
list`` starts in well under two seconds), so the names cannot live beside the
training code.

A model directory holds:

* ``manifest.json``: the canonical manifest (gateway.manifest);
* ``model.pt2``: the ``torch.export`` program;
* ``background.json``: the explainer's pinned background (gateway.explanation);
* ``heldout.json`` (packaged models): held-out rows, their targets and the eager
  module's outputs on them, so ``validate`` can compare export and eager again at
  registration, where the user's Python code is not available;
* ``validation.json`` / ``validation.html``: the last validation report (the
  registry re-validates and stores its own report; these are for the user).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "ARTIFACT_FILE",
    "BACKGROUND_FILE",
    "HELDOUT_FILE",
    "MANIFEST_FILE",
    "VALIDATION_FILE",
    "VALIDATION_HTML",
    "HeldOut",
]

ARTIFACT_FILE = "model.pt2"
MANIFEST_FILE = "manifest.json"
BACKGROUND_FILE = "background.json"
HELDOUT_FILE = "heldout.json"
VALIDATION_FILE = "validation.json"
VALIDATION_HTML = "validation.html"


class HeldOut(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Held-out rows of the training data as the packager split them.

    ``rows``: raw attribute values as a client would send them (schema names);
    ``targets``: the target column for those rows; ``eager_outputs``: the eager
    (not exported) module's float32 outputs on them, computed at package time,
    or None when the model came as an already exported artifact."""

    format: Literal["verdict.heldout/v1"]
    rows: list[dict[str, Any]]
    targets: list[float]
    eager_outputs: list[float] | None = None

"""The training reference a model in production is compared with (issue 20, monitoring).

Why from the training data, scored through the engine: a population stability
index says how far live decisions have drifted from what the model was built
on, so the reference must be *that* population. The manifest's training
provenance names the data set (name, sha256, rows) and the split rule; where
Verdict can read that data set (gateway.datasets: the reference models' data,
vendored or in ``../shared``) the training rows are re-derived with the
recorded split and scored by :func:`gateway.engine.decide_rows`, the very
pipeline decisions are made with (never a re-implementation of the model).
Where it cannot (a bank's own model packaged from its own file), there is no
reference and :class:`NoReference` says why: nothing is invented in its place.

What is kept is small and fixed: for the score, the deciles of the reference
scores as bin edges and the reference count in each bin; per attribute, the
deciles of the training values (numeric; repeated edges merged, so an integer
attribute with few values gets one bin per value range) or one bin per
declared category. Live decisions are counted into these same bins, so the
comparison is exact integer counts on both sides.

Computed once per model version, keyed by the sha256 of its stored manifest
(which pins the artifact, inputs and provenance), kept in memory and, when a
directory is given, on disk (``$VERDICT_HOME/monitor/references/<sha256>.json``):
a restart does not re-score the training set. A cached file that does not
decode, or names another manifest, is recomputed.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np

from verdict.audit.stores import StoreError
from verdict.gateway.datasets import DATASETS, DatasetError, LoadedDataset
from verdict.gateway.engine import Engine, decide_rows
from verdict.gateway.manifest import Manifest
from verdict.gateway.registry import RegistryError
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.service_errors import ServiceError

__all__ = [
    "BINS",
    "REFERENCE_FORMAT",
    "AttributeReference",
    "NoReference",
    "ReferenceCache",
    "TrainingReference",
    "bin_index",
    "compute_reference",
    "count_bins",
    "quantile_edges",
]

_log = logging.getLogger(__name__)

REFERENCE_FORMAT: Final = "verdict.monitor-reference/v1"
BINS = 10
"""Deciles: the usual binning for a population stability index."""
_HASH_RULE = "sha256(row key)[0] % 5 == 0"
"""The held-out rule both gateway.training and the packager record (held out when true)."""
_ROW_KEYS = ("row key = German: 'index:line', Taiwan: 'taiwan:ID'", "row key = utf-8 of column 'row_key' as text")
"""How those rules name the data set's own row keys (``LoadedDataset.row_keys``): trained by
gateway.training, or packaged by gateway.reference_packaging with its ``row_key`` column."""


class AttributeReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One attribute's training distribution over fixed bins.

    ``numeric``: ``edges`` are the inner bin edges (ascending, distinct); value v
    falls in bin :func:`bin_index` (edges, v), so there are ``len(edges) + 1``
    bins, ``[edges[i-1], edges[i])``. ``category``: one bin per code in
    ``categories`` (the manifest's order, as text)."""

    name: str
    kind: Literal["numeric", "category"]
    counts: list[int]
    edges: list[float] = []
    categories: list[str] = []


class TrainingReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model version's training population: score and attribute bins with their counts."""

    format: Literal["verdict.monitor-reference/v1"]
    model: str
    version: str
    manifest_sha256: str
    dataset: str
    dataset_sha256: str
    rows: int
    """Training rows scored (the reference population)."""
    source: str
    """In words: which rows, from which file, how they were matched to the manifest."""
    score_edges: list[float]
    score_counts: list[int]
    attributes: list[AttributeReference]


class NoReference(msgspec.Struct, frozen=True):
    """Why a model version has no training reference (shown instead of a PSI)."""

    why: str


# -- bins ---------------------------------------------------------------------------------


def quantile_edges(values: Sequence[float] | np.ndarray, bins: int = BINS) -> list[float]:
    """The inner edges of ``bins`` quantile bins of ``values`` (repeated edges merged)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return []
    qs = np.quantile(data, [k / bins for k in range(1, bins)])
    return sorted({float(q) for q in qs})


def bin_index(edges: Sequence[float], value: float) -> int:
    """The bin of ``value``: the number of edges at or below it (bins are ``[lower, upper)``)."""
    return bisect.bisect_right(edges, value)


def count_bins(edges: Sequence[float], values: Sequence[float] | np.ndarray) -> list[int]:
    """Counts of ``values`` in the ``len(edges) + 1`` bins (the same rule as :func:`bin_index`)."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bin_index(edges, float(value))] += 1
    return counts


def category_key(value: Any) -> str:
    """A category code as text (codes are strings or integers; the bins are named by text)."""
    return str(value)


# -- the reference ------------------------------------------------------------------------


def compute_reference(engine: Engine, manifest: Manifest, manifest_sha256: str) -> TrainingReference | NoReference:
    """Score ``manifest``'s training rows through the engine and bin them (or say why not)."""
    found = _training_rows(manifest)
    if isinstance(found, NoReference):
        return found
    data, rows, source = found
    try:
        runtime = engine.runtime(manifest)
        decided = decide_rows(runtime, rows, [0] * len(rows))
    except (ServiceError, RegistryError, StoreError, ValueError, KeyError, RuntimeError) as exc:
        return NoReference(f"the training rows could not be scored: {exc}")
    scores = [outcome.score for outcome in decided.outcomes]
    edges = quantile_edges(scores)
    return TrainingReference(
        format=REFERENCE_FORMAT,
        model=manifest.name,
        version=manifest.version,
        manifest_sha256=manifest_sha256,
        dataset=data.name,
        dataset_sha256=data.sha256,
        rows=len(rows),
        source=source,
        score_edges=edges,
        score_counts=count_bins(edges, scores),
        attributes=[_attribute_reference(spec, [row[spec.name] for row in rows]) for spec in manifest.inputs],
    )


def _attribute_reference(spec: AttributeSpec, values: list[Any]) -> AttributeReference:
    if spec.kind == "category":
        categories = [category_key(code) for code in spec.categories or ()]
        position = {code: k for k, code in enumerate(categories)}
        counts = [0] * len(categories)
        for value in values:
            counts[position[category_key(value)]] += 1
        return AttributeReference(name=spec.name, kind="category", counts=counts, categories=categories)
    edges = quantile_edges([float(v) for v in values])
    return AttributeReference(name=spec.name, kind="numeric", counts=count_bins(edges, values), edges=edges)


def _training_rows(manifest: Manifest) -> tuple[LoadedDataset, list[dict[str, Any]], str] | NoReference:
    """The rows ``manifest`` was trained on, from a data set Verdict can read, or why not."""
    provenance = manifest.training.dataset
    dataset = DATASETS.get(provenance.name)
    if dataset is None:
        return NoReference(
            f"the training data set {provenance.name!r} (sha256 {provenance.sha256[:12]}..., {provenance.rows} rows) "
            f"is not one this installation can read (known: {', '.join(DATASETS)})"
        )
    try:
        data = dataset.load()  # refuses a file that is not the published one
    except DatasetError as exc:
        return NoReference(f"the training data set cannot be read: {exc}")
    if provenance.sha256 == data.sha256:
        matched = f"{dataset.title}, sha256 {data.sha256[:12]}... as the manifest records"
    elif manifest.training.packaged_by and provenance.rows == len(data.rows):
        # The packager records the sha256 of the data frame it was given, not of the published file.
        matched = (
            f"{dataset.title} (the published file, sha256 {data.sha256[:12]}...; the manifest records the packaged "
            f"frame's sha256 {provenance.sha256[:12]}... and the same {provenance.rows} rows)"
        )
    else:
        return NoReference(
            f"the manifest's training data ({provenance.name}, sha256 {provenance.sha256[:12]}..., "
            f"{provenance.rows} rows) is not the published file Verdict has (sha256 {data.sha256[:12]}..., "
            f"{len(data.rows)} rows)"
        )
    missing = [spec.name for spec in manifest.inputs if spec.name not in data.rows[0]]
    if missing:
        return NoReference(f"the data set has no column for input(s) {', '.join(missing)}")
    held_out = _held_out(manifest, data)
    names = [spec.name for spec in manifest.inputs]
    if held_out is None:
        rows = [{name: row[name] for name in names} for row in data.rows]
        source = f"all {len(rows)} rows of {matched} (its split rule is not one Verdict can re-apply)"
    else:
        rows = [{name: row[name] for name in names} for row, out in zip(data.rows, held_out, strict=True) if not out]
        source = (
            f"the {len(rows)} training rows (held-out rows left out, as the manifest's split rule says) of {matched}"
        )
    return data, rows, source


def _held_out(manifest: Manifest, data: LoadedDataset) -> list[bool] | None:
    """The held-out mask of the recorded split, applied as the manifest words it, where it is
    the hash split of the data set's own row keys (None: a rule Verdict cannot re-apply).

    Why from the words and not by importing the trainer's or packager's code: that would load
    scikit-learn and pandas into a serving process for one comparison of text."""
    rule = manifest.training.split
    if _HASH_RULE not in rule or not rule.endswith(_ROW_KEYS):
        return None
    return [hashlib.sha256(key).digest()[0] % 5 == 0 for key in data.row_keys]


# -- the cache ----------------------------------------------------------------------------


class ReferenceCache:
    """References by manifest sha256: in memory, on disk under ``directory`` (None: memory only)."""

    def __init__(self, engine: Engine, directory: Path | None = None) -> None:
        self.engine = engine
        self.directory = directory
        self._found: dict[str, TrainingReference | NoReference] = {}
        self._lock = threading.Lock()
        self.computed = 0
        """References computed (scored) by this cache: not read from memory or disk."""

    def get(self, manifest: Manifest, manifest_sha256: str) -> TrainingReference | NoReference:
        with self._lock:
            found = self._found.get(manifest_sha256)
            if found is None:
                found = self._load(manifest_sha256)
            if found is None:
                found = compute_reference(self.engine, manifest, manifest_sha256)
                self.computed += 1
                if isinstance(found, TrainingReference):
                    self._save(found)
            self._found[manifest_sha256] = found
            return found

    def _path(self, manifest_sha256: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{manifest_sha256}.json"

    def _load(self, manifest_sha256: str) -> TrainingReference | None:
        path = self._path(manifest_sha256)
        if path is None or not path.is_file():
            return None
        try:
            found = msgspec.json.decode(path.read_bytes(), type=TrainingReference)
        except (OSError, msgspec.MsgspecError) as exc:
            _log.warning("monitoring: ignoring the cached training reference %s: %s", path, exc)
            return None
        return found if found.manifest_sha256 == manifest_sha256 else None

    def _save(self, found: TrainingReference) -> None:
        path = self._path(found.manifest_sha256)
        if path is None:
            return
        try:
            write_atomically(path, msgspec.json.encode(found))
        except OSError as exc:  # a cache: the reference is still used from memory
            _log.warning("monitoring: cannot cache the training reference in %s: %s", path, exc)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def attribute_references(found: TrainingReference) -> Mapping[str, AttributeReference]:
    return {a.name: a for a in found.attributes}

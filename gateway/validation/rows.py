"""The rows a model comes with, and the rows validation runs it on.

Why every row through the schema: the background is averaged into every
explanation, so one background row the live API would refuse (an age of 7, a
category the schema does not know) silently puts an impossible applicant into
every decision's contributions. Held-out and training rows are checked the
same way because they are what the packager built the schema from.

The probe rows (held-out, background, and synthesised boundary rows: each
numeric attribute at its minimum and maximum, each category value, all at
once at their extremes) are what the output, batch-invariance and
fresh-process checks run; each carries a label so a refusal can say which
row gave a NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import numpy as np

from verdict.gateway import explanation
from verdict.gateway.manifest import Manifest
from verdict.gateway.model_files import BACKGROUND_FILE, HELDOUT_FILE, HeldOut
from verdict.gateway.schema import AttributeSpec, FieldError, InputValidationError, encode_rows, validate_batch
from verdict.gateway.validation.report import Check, measure

__all__ = [
    "MAX_HELDOUT_PROBES",
    "ProbeRows",
    "background_check",
    "boundary_rows",
    "heldout_check",
    "probe_rows",
    "training_rows_check",
]

MAX_HELDOUT_PROBES = 512
_SHOWN = 5


class ProbeRows(NamedTuple):
    rows: list[dict[str, Any]]
    labels: list[str]  # "heldout[3]", "background[0]", "boundary: age_years at minimum 18"
    matrix: np.ndarray  # float32 [n, d], encoded

    def count(self, source: str) -> int:
        return sum(1 for label in self.labels if label.startswith(source))


def _field_errors(
    specs: Sequence[AttributeSpec], rows: Any, prefix: str
) -> tuple[list[dict[str, Any]], list[FieldError]]:
    try:
        return validate_batch(specs, rows, max_rows=max(1, len(rows) if isinstance(rows, Sequence) else 1)), []
    except InputValidationError as exc:
        return [], [msgspec.structs.replace(e, field=prefix + e.field) for e in exc.errors]


def _errors_text(errors: Sequence[FieldError]) -> str:
    shown = "; ".join(f"{e.field}: {e.message} (rule {e.rule}, value {e.value!r})" for e in errors[:_SHOWN])
    return shown + (f" (and {len(errors) - _SHOWN} more)" if len(errors) > _SHOWN else "")


def background_check(manifest: Manifest, data: bytes | None) -> tuple[explanation.Background | None, Check]:
    """The decoded background (None unless it is exactly the pinned, schema-valid one) and its check."""
    name = "background"
    if data is None:
        return None, Check(
            name, False, f"not run: {BACKGROUND_FILE} is missing (see files)", status="failed-dependency"
        )
    try:
        parsed = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return None, Check(name, False, f"{BACKGROUND_FILE} is not JSON: {exc}", rule="background.json")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("rows"), list):
        return None, Check(
            name, False, f"{BACKGROUND_FILE} must be an object with rows and counts", rule="background.format"
        )
    rows = parsed["rows"]
    if not rows:
        return None, Check(name, False, f"{BACKGROUND_FILE} has no rows", rule="background.rows")
    _, errors = _field_errors(manifest.inputs, rows, "background.")
    measured: dict[str, Any] = {"rows": len(rows), "invalid_fields": len(errors)}
    if errors:
        return None, Check(
            name,
            False,
            f"{len({e.field.split('.')[1] for e in errors})} of {len(rows)} background rows break the schema: "
            + _errors_text(errors)
            + "; every background row is averaged into every explanation, so each must be a valid applicant",
            rule="background.schema",
            measured=measured,
        )
    try:
        background = explanation.decode_background(manifest, data)
    except explanation.ExplainerConfigError as exc:
        rule = "background.sha256" if "hashes to" in str(exc) else "background.format"
        return None, Check(name, False, str(exc), rule=rule, measured=measured)
    measured["weight_total"] = int(sum(background.counts))
    return background, Check(
        name,
        True,
        f"{len(rows)} background rows, every one valid for the schema, sha256 as pinned",
        rule="background.schema",
        measured=measured,
    )


def heldout_check(manifest: Manifest, data: bytes | None) -> tuple[HeldOut | None, Check]:
    name = "heldout_rows"
    if data is None:
        return None, Check(name, True, f"skipped: no {HELDOUT_FILE} (models trained here carry none)", status="skipped")
    try:
        heldout = msgspec.json.decode(data, type=HeldOut)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, Check(
            name, False, f"{HELDOUT_FILE} does not decode as verdict.heldout/v1: {exc}", rule="heldout.format"
        )
    problems = []
    n = len(heldout.rows)
    if not n:
        problems.append(("heldout.rows", f"{HELDOUT_FILE} has no rows"))
    _, errors = _field_errors(manifest.inputs, heldout.rows, "heldout.") if n else ([], [])
    if errors:
        problems.append(("heldout.schema", "held-out rows break the schema: " + _errors_text(errors)))
    if len(heldout.targets) != n:
        problems.append(("heldout.targets", f"{len(heldout.targets)} targets for {n} held-out rows"))
    eager = heldout.eager_outputs
    if eager is not None:
        if len(eager) != n:
            problems.append(("heldout.eager_outputs", f"{len(eager)} eager outputs for {n} held-out rows"))
        elif not all(math.isfinite(v) for v in eager):
            problems.append(("heldout.eager_outputs", "eager_outputs holds NaN or infinite values"))
    measured = {"rows": n, "invalid_fields": len(errors), "eager_outputs": measure(eager is not None)}
    if problems:
        return None, Check(name, False, "; ".join(p for _, p in problems), rule=problems[0][0], measured=measured)
    return heldout, Check(
        name, True, f"{n} held-out rows, every one valid for the schema", rule="heldout.schema", measured=measured
    )


def training_rows_check(manifest: Manifest, rows: Sequence[Mapping[str, Any]] | None) -> Check:
    name = "training_rows"
    if rows is None:
        return Check(name, True, "skipped: no training rows given (a registration has none)", status="skipped")
    if not rows:
        return Check(name, False, "the training rows given are empty", rule="training.rows")
    _, errors = _field_errors(manifest.inputs, list(rows), "training.")
    if errors:
        bad = len({e.field.split(".")[1] for e in errors})
        return Check(
            name,
            False,
            f"{bad} of {len(rows)} training rows break the schema the model is served with: "
            + _errors_text(errors)
            + "; widen the schema (ranges, categories) or clean the data, or live requests like them are refused",
            rule="training.schema",
            measured={"rows": len(rows), "invalid_rows": bad, "invalid_fields": len(errors)},
        )
    return Check(
        name,
        True,
        f"{len(rows)} training rows, every one valid for the schema",
        rule="training.schema",
        measured={"rows": len(rows)},
    )


def _numeric_bound(spec: AttributeSpec, bound: int | float, low: bool) -> int | float:
    if spec.kind == "integer":
        return int(math.ceil(bound) if low else math.floor(bound))
    return float(bound)


def boundary_rows(manifest: Manifest, base: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows that put each attribute at its edges, one at a time around ``base`` (a real
    row; each attribute's minimum or first category when there is none), plus every
    numeric attribute at its minimum at once and at its maximum at once."""
    specs = manifest.inputs
    start: dict[str, Any] = {}
    for spec in specs:
        if base is not None and spec.name in base:
            start[spec.name] = base[spec.name]
        elif spec.kind == "category":
            start[spec.name] = (spec.categories or ("",))[0]
        else:
            start[spec.name] = _numeric_bound(spec, spec.minimum or 0, True)
    rows, labels = [], []
    extremes: dict[str, dict[str, Any]] = {"minimum": dict(start), "maximum": dict(start)}
    for spec in specs:
        if spec.kind == "category":
            for code in spec.categories or ():
                rows.append({**start, spec.name: code})
                labels.append(f"boundary: {spec.name} = {code!r}")
            continue
        if spec.minimum is None or spec.maximum is None:
            continue
        for edge, bound in (("minimum", spec.minimum), ("maximum", spec.maximum)):
            value = _numeric_bound(spec, bound, edge == "minimum")
            rows.append({**start, spec.name: value})
            labels.append(f"boundary: {spec.name} at {edge} {value!r}")
            extremes[edge][spec.name] = value
    for edge, row in extremes.items():
        rows.append(row)
        labels.append(f"boundary: every number at its {edge}")
    return rows, labels


def probe_rows(manifest: Manifest, heldout: HeldOut | None, background: explanation.Background | None) -> ProbeRows:
    """Held-out rows (at most MAX_HELDOUT_PROBES), background rows, then boundary rows;
    boundary rows failing the schema (an inconsistent manifest range) are left out."""
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    if heldout is not None:
        for i, row in enumerate(heldout.rows[:MAX_HELDOUT_PROBES]):
            rows.append(row)
            labels.append(f"heldout[{i}]")
    if background is not None:
        for i, row in enumerate(background.rows):
            rows.append(row)
            labels.append(f"background[{i}]")
    extra, extra_labels = boundary_rows(manifest, rows[0] if rows else None)
    for row, label in zip(extra, extra_labels, strict=True):
        valid, errors = _field_errors(manifest.inputs, [row], "")
        if not errors:
            rows.append(valid[0])
            labels.append(label)
    ordered = [{spec.name: row[spec.name] for spec in manifest.inputs} for row in rows]
    return ProbeRows(ordered, labels, encode_rows(manifest.inputs, ordered))

"""Training data for a packaged model: reading it, inferring the input schema,
and refusing data that cannot make a servable, defensible model.

Why inference lives here and is public (``verdict.preprocessing.infer_schema``):
the schema is the model's contract (what a client sends, in which order, each
category as the index of its value in a sorted list), and the user's training
code must encode its data exactly as the runtime will. Using the very function
the packager uses, on the same data, gives the same attribute order, ranges and
category lists, so a model trained on ``encode_frame(frame, infer_schema(...))``
sees at serving time what it saw in training.

Inference is deterministic and needs no configuration: an integer column is an
``integer`` attribute, a float column a ``number``, a boolean column an
``integer`` (false = 0, true = 1: 0..1 when both occur; declare ``kind =
"category"`` for "false"/"true" categories instead), a text column a ``category`` with its
values sorted; numeric ranges are the data's minimum and maximum (widen them with ``minimum``/``maximum`` overrides: the runtime refuses
values outside the declared range). Every data problem is reported with the
column, the rule and how many rows break it, all at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import pandas as pd

from verdict.gateway.packaging.errors import DataError, SpecError
from verdict.gateway.packaging.spec import AttributeOverride
from verdict.gateway.schema import AttributeSpec, encode_rows

__all__ = [
    "HOLDOUT_RULE",
    "Columns",
    "check_values",
    "default_label",
    "encode_frame",
    "frame_rows",
    "holdout_mask",
    "infer_schema",
    "plan_columns",
    "read_table",
    "target_values",
]

NAME_RULE = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""An attribute name: what the manifest accepts, and a JSON key a client can type."""
FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}
HOLDOUT_RULE = "held out if sha256(row key)[0] % 5 == 0 (about 20%); row key = {key}"
ROW_KEY_ALL = "the row's values in file column order, as text, joined by U+001F (equal rows fall on the same side)"
_SHOWN = 5  # offending values / rows quoted in a message

OutputKind = Literal["probability", "score"]
Kind = Literal["integer", "number", "category"]


@dataclass(frozen=True)
class Columns:
    """Which data columns the model gets (``inputs``, in order) and which are
    deliberately withheld (``use = false`` overrides)."""

    inputs: tuple[str, ...]
    withheld: tuple[str, ...]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (by its suffix)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path.name}: data must be CSV (.csv) or Parquet (.parquet, .pq), got {path.suffix or 'no suffix'!r}"
        )
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        frame = pd.read_csv(path) if kind == "CSV" else pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: cannot read it as {kind}: {exc}") from None
    if len(frame) == 0:
        raise DataError(f"{path.name}: the data has no rows")
    return frame


def _overrides(overrides: Mapping[str, Any] | None) -> dict[str, AttributeOverride]:
    out: dict[str, AttributeOverride] = {}
    for name, value in (overrides or {}).items():
        if isinstance(value, AttributeOverride):
            out[name] = value
            continue
        try:
            out[name] = msgspec.convert(dict(value), AttributeOverride)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise SpecError(f"attributes.{name}: {str(exc).replace('`', '')}") from None
    return out


def _suggest(name: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()).strip("_")
    return text if text and text[0].isalpha() else f"x_{text}"


def plan_columns(
    frame: pd.DataFrame,
    *,
    target: str | None,
    inputs: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    id_column: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Columns:
    """The model's input columns and the withheld ones, or a DataError naming every
    column the spec mentions that the data lacks and every input whose name is not
    lower_snake_case."""
    columns = [str(c) for c in frame.columns]
    present = set(columns)
    listing = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
    problems: list[str] = []
    if non_text := [c for c in frame.columns if not isinstance(c, str)]:
        problems.append(f"column names must be text, got {non_text[:_SHOWN]}")
    if target is not None and target not in present:
        problems.append(f'target column "{target}" is not in the data (columns: {listing})')
    if id_column is not None and id_column not in present:
        problems.append(f'data.id: no column "{id_column}" in the data')
    problems += [f'data.exclude: no column "{c}" in the data' for c in exclude if c not in present]
    problems += [f'data.inputs: no column "{c}" in the data' for c in inputs or () if c not in present]
    overridden = _overrides(overrides)
    problems += [
        f'attributes.{name}: no column "{name}" in the data (columns: {listing})'
        for name in overridden
        if name not in present
    ]
    withheld = tuple(c for c in columns if c in overridden and not overridden[c].use)
    not_inputs = {target, id_column, *exclude, *withheld}
    if inputs is None:
        chosen = tuple(c for c in columns if c not in not_inputs)
    else:
        chosen = tuple(inputs)
        problems += [f'data.inputs: "{c}" is the target, the id or withheld' for c in chosen if c in not_inputs]
        if len(set(chosen)) != len(chosen):
            problems.append("data.inputs: a column is listed twice")
    if not chosen:
        problems.append("no input columns are left for the model")
    problems += [
        f"attributes.{name}: not a model input (excluded, the id, or not in data.inputs): leave it out of the "
        f"model with use = false and a reason, or drop the table"
        for name, o in overridden.items()
        if o.use and name in present and name not in chosen and name != target
    ]
    for name in chosen:
        if not NAME_RULE.fullmatch(name):
            problems.append(
                f'column "{name}": attribute names must be lower_snake_case ASCII ({NAME_RULE.pattern}), '
                f'e.g. "{_suggest(name)}": rename the column in the data, or leave it out (data.exclude)'
            )
    if problems:
        raise DataError("; ".join(problems))
    return Columns(chosen, withheld)


def _rows(count: int, singular: str, plural: str) -> str:
    return f"{count} row {singular}" if count == 1 else f"{count} rows {plural}"


def _row_list(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in rows[:_SHOWN]) + (", ..." if len(rows) > _SHOWN else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown} (0-based, header excluded)"


def check_values(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Every value present and finite: a NaN or an infinity would train or score as
    something no applicant can be (schema.py refuses them at serving time too)."""
    problems = []
    for name in columns:
        series = frame[name]
        missing = series.isna().to_numpy()
        if missing.any():
            problems.append(
                f'column "{name}": {_rows(int(missing.sum()), "has", "have")} no value (NaN or empty): {_row_list(missing)}'
            )
        if pd.api.types.is_float_dtype(series):
            infinite = np.isinf(series.to_numpy(dtype=np.float64, na_value=0.0))
            if infinite.any():
                problems.append(
                    f'column "{name}": {_rows(int(infinite.sum()), "is", "are")} infinite: {_row_list(infinite)}'
                )
    if problems:
        raise DataError("; ".join(problems))


def _is_text(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_string_dtype(series)
        or pd.api.types.is_object_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def _inferred_kind(name: str, series: pd.Series) -> Kind:
    if pd.api.types.is_bool_dtype(series):
        return "integer"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_float_dtype(series):
        return "number"
    if _is_text(series):
        return "category"
    raise DataError(
        f'column "{name}" has type {series.dtype}: inputs must be numbers or text; convert it or exclude it (data.exclude)'
    )


def _values(name: str, series: pd.Series, kind: str, categories: Sequence[str | int] | None = None) -> list[Any]:
    """The column as the plain values a client would send for ``kind``."""
    raw = series.tolist()
    if kind == "number":
        if _is_text(series):
            raise DataError(f'column "{name}": kind "number" needs numbers, the column holds text')
        return [float(v) for v in raw]
    if kind == "integer":
        if _is_text(series):
            raise DataError(f'column "{name}": kind "integer" needs whole numbers, the column holds text')
        if pd.api.types.is_float_dtype(series):
            fractional = np.array([not float(v).is_integer() for v in raw])
            if fractional.any():
                raise DataError(
                    f'column "{name}": kind "integer" needs whole numbers, {_rows(int(fractional.sum()), "has", "have")} a '
                    f"fraction: {_row_list(fractional)}"
                )
        return [int(v) for v in raw]
    # category: text as text, whole numbers as int (codes such as 1..5), booleans as "false"/"true"
    if categories and isinstance(categories[0], int) and _is_text(series):
        raise DataError(f'column "{name}": integer categories given, the column holds text')
    if pd.api.types.is_bool_dtype(series):
        return ["true" if v else "false" for v in raw]
    if _is_text(series):
        return [str(v) for v in raw]
    if pd.api.types.is_float_dtype(series) and not all(float(v).is_integer() for v in raw):
        raise DataError(f'column "{name}": category values must be text or whole numbers, the column has fractions')
    return [int(v) for v in raw]


def _sort_key(value: str | int) -> tuple[int, str | int]:
    return (0, value) if isinstance(value, int) else (1, value)


def default_label(name: str) -> str:
    """``days_to_report`` -> ``Days to report``: the label of an attribute without one."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _numeric(value: float, kind: str) -> int | float:
    return int(value) if kind == "integer" else float(value)


def _attribute(name: str, series: pd.Series, override: AttributeOverride | None) -> AttributeSpec:
    o = override or AttributeOverride()
    inferred = _inferred_kind(name, series)
    kind: Kind = o.kind or inferred
    values = _values(name, series, kind, o.categories)
    label = o.label or default_label(name)
    if kind == "category":
        seen = set(values)
        if o.categories is not None:
            categories = tuple(o.categories)
            if len(set(categories)) != len(categories):
                raise DataError(f"attributes.{name}.categories: a category is listed twice")
            if types := {type(c) for c in categories} - {type(v) for v in seen}:
                raise DataError(
                    f"attributes.{name}.categories: the data's values are {sorted({type(v).__name__ for v in seen})}, "
                    f"the categories given are {sorted(t.__name__ for t in types)}"
                )
            if unlisted := sorted(seen - set(categories), key=_sort_key):
                raise DataError(
                    f'column "{name}": values {unlisted[:_SHOWN]} are not among attributes.{name}.categories '
                    f"({list(categories)})"
                )
        else:
            categories = tuple(sorted(seen, key=_sort_key))
        if o.category_labels and (unknown := sorted(set(o.category_labels) - {str(c) for c in categories})):
            raise DataError(f"attributes.{name}.category_labels: {unknown} are not categories ({list(categories)})")
        if o.minimum is not None or o.maximum is not None:
            raise DataError(f"attributes.{name}: a category attribute has no minimum or maximum")
        return AttributeSpec(
            name=name,
            kind="category",
            label=label,
            unit=o.unit,
            categories=categories,
            category_labels=dict(o.category_labels) if o.category_labels else None,
            protected=bool(o.protected),
        )
    if o.categories is not None or o.category_labels is not None:
        raise DataError(f'attributes.{name}: categories and category_labels are for kind = "category", not {kind!r}')
    array = np.asarray(values, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    minimum = _numeric(low, kind) if o.minimum is None else _numeric(o.minimum, kind)
    maximum = _numeric(high, kind) if o.maximum is None else _numeric(o.maximum, kind)
    for bound, broken, word in ((minimum, array < minimum, "below"), (maximum, array > maximum, "above")):
        if broken.any():
            raise DataError(
                f'column "{name}": {_rows(int(broken.sum()), "is", "are")} {word} the declared {"minimum" if word == "below" else "maximum"} '
                f"{bound} ({_row_list(broken)}; data range {low:g}..{high:g})"
            )
    return AttributeSpec(
        name=name, kind=kind, label=label, unit=o.unit, minimum=minimum, maximum=maximum, protected=bool(o.protected)
    )


def infer_schema(
    frame: pd.DataFrame,
    *,
    target: str | None = None,
    inputs: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> tuple[AttributeSpec, ...]:
    """The model's input schema from its training data, deterministically.

    ``target``: the column the model predicts (never an input). ``inputs``:
    the input columns in order (default: every other column in file order,
    less ``exclude`` and the columns whose override says ``use = false``).
    ``overrides``: per-column tables as in the spec's ``[attributes.NAME]``
    (``label``, ``unit``, ``protected``, ``minimum``, ``maximum``, ``kind``,
    ``categories``, ``category_labels``, ``use``, ``reason``). Raises
    :class:`DataError` (a ``ValueError``) naming the column for anything the
    runtime could not serve: a missing value, an infinity, a name that is not
    lower_snake_case, a value outside a declared range."""
    overridden = _overrides(overrides)
    columns = plan_columns(frame, target=target, inputs=inputs, exclude=exclude, overrides=overridden)
    check_values(frame, columns.inputs)
    return tuple(_attribute(name, frame[name], overridden.get(name)) for name in columns.inputs)


def frame_rows(frame: pd.DataFrame, specs: Sequence[AttributeSpec]) -> list[dict[str, Any]]:
    """The rows as a client would send them: schema names, plain int / float / str values."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"the data has no column {', '.join(map(repr, missing))} of the schema")
    columns = [_values(s.name, frame[s.name], s.kind, s.categories) for s in specs]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def encode_frame(frame: pd.DataFrame, specs: Sequence[AttributeSpec]) -> np.ndarray:
    """The model's input matrix for a DataFrame: float32 ``[rows, len(specs)]``,
    numbers as they are, each category as the index of its value in the spec's
    list. Exactly ``verdict.gateway.schema.encode_rows`` of the rows a client
    would send, so training sees what serving will."""
    rows = frame_rows(frame, specs)
    for spec in specs:
        if spec.kind == "category":
            known = set(spec.categories or ())
            if unknown := sorted({row[spec.name] for row in rows} - known, key=_sort_key):
                raise DataError(f'column "{spec.name}": values {unknown[:_SHOWN]} are not among its categories')
    return encode_rows(specs, rows)


def target_values(
    frame: pd.DataFrame, target: str, kind: OutputKind, positive: str | int | bool | None = None
) -> np.ndarray:
    """The target as float64: 0/1 for a probability (1 = the adverse outcome), any finite
    real for a score. Refuses a missing or infinite value, a constant target, and for
    a probability a target that is not binary or has a single class."""
    check_values(frame, [target])
    series = frame[target]
    distinct = sorted(set(series.tolist()), key=lambda v: (str(type(v)), v))
    shown = ", ".join(map(repr, distinct[:_SHOWN])) + (", ..." if len(distinct) > _SHOWN else "")
    if kind == "score":
        if _is_text(series) or pd.api.types.is_bool_dtype(series):
            raise DataError(f'target "{target}": a score model needs a numeric target, found values {shown}')
        y = series.to_numpy(dtype=np.float64)
        if len(distinct) == 1:
            raise DataError(
                f'target "{target}" is constant (every row is {distinct[0]!r}): nothing to learn or evaluate'
            )
        return y
    if positive is not None:
        if positive not in distinct:
            raise DataError(f'data.positive {positive!r} is not a value of target "{target}" (values: {shown})')
        y = (series == positive).to_numpy(dtype=np.float64)
    elif pd.api.types.is_bool_dtype(series) or (not _is_text(series) and set(distinct) <= {0, 1}):
        y = series.to_numpy(dtype=np.float64)
    else:
        raise DataError(
            f'target "{target}" must be 0/1 for a probability model (1 = the adverse outcome), found values {shown}: '
            f"recode it, or set data.positive to the value that means the adverse outcome"
        )
    classes = sorted(set(y.tolist()))
    if len(classes) == 1:
        raise DataError(
            f'target "{target}" has a single class (every row is {int(classes[0])}): a probability model needs '
            f"rows of both outcomes to be trained and evaluated"
        )
    return y


def holdout_mask(frame: pd.DataFrame, id_column: str | None = None) -> tuple[np.ndarray, str]:
    """Boolean held-out mask from a hash of each row's key, and the rule in words
    (recorded in the manifest). A hash, not a random draw: the same row always
    falls on the same side, whatever the file order or the machine."""
    if id_column is not None:
        keys = [str(v).encode() for v in frame[id_column].tolist()]
        described = f"utf-8 of column {id_column!r} as text"
    else:
        columns = [frame[c].tolist() for c in frame.columns]
        keys = ["\x1f".join(map(str, values)).encode() for values in zip(*columns, strict=True)]
        described = ROW_KEY_ALL
    mask = np.array([hashlib.sha256(key).digest()[0] % 5 == 0 for key in keys], dtype=bool)
    return mask, HOLDOUT_RULE.format(key=described)

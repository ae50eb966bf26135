"""Input schema of a model and validation of raw applicant attributes.

Why here and not in the HTTP layer: the same rules must hold for the CLI,
the live API and replay, and every rejection must name the field, the rule
and the offending value so a client (or an examiner) can tell exactly what
was wrong. Nothing invalid may reach the model: a NaN or an unknown category
would silently produce a score nobody can defend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "AttributeSpec",
    "FieldError",
    "InputValidationError",
    "encode_rows",
    "validate_attributes",
    "validate_batch",
]

Kind = Literal["integer", "number", "category"]


class AttributeSpec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One raw applicant attribute, in the order the model consumes it.

    Categories are the codes a client sends (``"A11"``, or ``1`` for integer
    codes); the model sees the code's index. ``category_labels`` maps
    ``str(code)`` to the wording used in explanations.
    """

    name: str
    kind: Kind
    label: str
    unit: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    categories: tuple[str | int, ...] | None = None
    category_labels: dict[str, str] | None = None
    protected: bool = False
    """A protected characteristic (sex, age, nationality, ...): counted among principal
    reasons by validation, and a version using it is promoted only with a recorded
    justification (docs/bring-your-own-model.md)."""

    def describe(self, value: Any) -> str:
        """Human wording of a value, e.g. '48 months' or 'no checking account'."""
        if self.kind == "category":
            return (self.category_labels or {}).get(str(value), str(value))
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{text} {self.unit}" if self.unit else text


class FieldError(msgspec.Struct, frozen=True):
    """One broken rule: which field, which rule, the value, and a sentence."""

    field: str
    rule: str
    message: str
    value: Any = None


class InputValidationError(ValueError):
    """Raised with every FieldError found (not just the first)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    ((int, float), "number"),
    (str, "string"),
    (type(None), "null"),
    (Mapping, "object"),
    (Sequence, "array"),
)


def json_type(value: Any) -> str:
    """The JSON type a decoded value was written as ("null", not "NoneType"): clients write JSON."""
    return next((name for kinds, name in _JSON_TYPES if isinstance(value, kinds)), type(value).__name__)


def _check_value(spec: AttributeSpec, value: Any, field: str) -> FieldError | None:
    if spec.kind == "category":
        assert spec.categories is not None
        # bool is an int subclass in Python; True must not pass as category 1.
        if isinstance(value, bool) or value not in spec.categories or type(value) is not type(spec.categories[0]):
            allowed = ", ".join(map(repr, spec.categories))
            return FieldError(field, "category", f"must be one of {allowed}", value)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return FieldError(
            field,
            "type",
            f"must be a {'whole number' if spec.kind == 'integer' else 'number'}, got {json_type(value)}",
            value,
        )
    if isinstance(value, float) and not math.isfinite(value):
        return FieldError(field, "finite", "must be a finite number (NaN and infinities are refused)", repr(value))
    if spec.kind == "integer" and not isinstance(value, int):
        return FieldError(field, "integer", "must be a whole number without a decimal point", value)
    if spec.minimum is not None and value < spec.minimum:
        return FieldError(field, "minimum", f"must be >= {spec.minimum}", value)
    if spec.maximum is not None and value > spec.maximum:
        return FieldError(field, "maximum", f"must be <= {spec.maximum}", value)
    return None


def validate_attributes(specs: Sequence[AttributeSpec], attributes: Any, prefix: str = "attributes") -> dict[str, Any]:
    """Return the attributes in schema order, or raise InputValidationError listing every problem."""
    if not isinstance(attributes, Mapping):
        raise InputValidationError([FieldError(prefix, "type", f"must be a JSON object, got {json_type(attributes)}")])
    errors: list[FieldError] = []
    known = {spec.name for spec in specs}
    for name in attributes:
        if name not in known:
            errors.append(FieldError(f"{prefix}.{name}", "unknown_field", "is not an input of this model", None))
    ordered: dict[str, Any] = {}
    for spec in specs:
        field = f"{prefix}.{spec.name}"
        if spec.name not in attributes:
            errors.append(FieldError(field, "required", f"is required ({spec.label})"))
            continue
        error = _check_value(spec, attributes[spec.name], field)
        if error is not None:
            errors.append(error)
        else:
            ordered[spec.name] = attributes[spec.name]
    if errors:
        raise InputValidationError(errors)
    return ordered


def validate_batch(specs: Sequence[AttributeSpec], rows: Any, max_rows: int) -> list[dict[str, Any]]:
    """Validate a batch; errors are prefixed with the row index (``rows[3].attributes.age``)."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise InputValidationError([FieldError("rows", "type", "must be a list of attribute objects")])
    if not 1 <= len(rows) <= max_rows:
        raise InputValidationError(
            [FieldError("rows", "batch_shape", f"must hold 1..{max_rows} rows, got {len(rows)}", len(rows))]
        )
    errors: list[FieldError] = []
    valid: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        try:
            valid.append(validate_attributes(specs, row, prefix=f"rows[{i}]"))
        except InputValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InputValidationError(errors)
    return valid


def encode_rows(
    specs: Sequence[AttributeSpec], rows: Sequence[Mapping[str, Any]], dtype: DTypeLike = np.float32
) -> np.ndarray:
    """Raw attributes → the model's input matrix: numbers as they are,
    categories as their index. Assumes the rows were validated."""
    out = np.empty((len(rows), len(specs)), dtype=dtype)
    for j, spec in enumerate(specs):
        if spec.kind == "category":
            index = {code: k for k, code in enumerate(spec.categories or ())}
            out[:, j] = [index[row[spec.name]] for row in rows]
        else:
            out[:, j] = [row[spec.name] for row in rows]
    return out

"""Every validation rule names the field, the rule and the value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verdict.gateway.datasets import GERMAN_ATTRIBUTES, load_dataset
from verdict.gateway.schema import InputValidationError, encode_rows, validate_attributes, validate_batch


@pytest.fixture
def applicant() -> dict:
    return dict(load_dataset("german-credit").rows[0])


def _errors(attributes) -> list[tuple[str, str]]:
    with pytest.raises(InputValidationError) as info:
        validate_attributes(GERMAN_ATTRIBUTES, attributes)
    return [(e.field, e.rule) for e in info.value.errors]


def test_valid_applicant_is_returned_in_schema_order(applicant):
    shuffled = dict(reversed(list(applicant.items())))
    assert list(validate_attributes(GERMAN_ATTRIBUTES, shuffled)) == [s.name for s in GERMAN_ATTRIBUTES]


def test_missing_field(applicant):
    del applicant["age_years"]
    assert _errors(applicant) == [("attributes.age_years", "required")]


def test_unknown_field(applicant):
    applicant["shoe_size"] = 44
    assert _errors(applicant) == [("attributes.shoe_size", "unknown_field")]


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("age_years", "67", "type"),
        ("age_years", True, "type"),
        ("age_years", None, "type"),
        ("age_years", 67.5, "integer"),
        ("age_years", 17, "minimum"),
        ("age_years", 121, "maximum"),
        ("duration_months", math.nan, "finite"),
        ("duration_months", math.inf, "finite"),
        ("credit_amount", -math.inf, "finite"),
        ("purpose", "A99", "category"),
        ("purpose", 3, "category"),
        ("purpose", None, "category"),
    ],
)
def test_value_rules(applicant, field, value, rule):
    applicant[field] = value
    with pytest.raises(InputValidationError) as info:
        validate_attributes(GERMAN_ATTRIBUTES, applicant)
    (error,) = info.value.errors
    assert (error.field, error.rule) == (f"attributes.{field}", rule)
    assert error.message
    if rule != "finite":
        assert error.value == value or error.value is value


def test_all_problems_are_reported_at_once(applicant):
    del applicant["age_years"]
    applicant["purpose"] = "nope"
    applicant["extra"] = 1
    assert sorted(_errors(applicant)) == sorted(
        [
            ("attributes.age_years", "required"),
            ("attributes.purpose", "category"),
            ("attributes.extra", "unknown_field"),
        ]
    )


def test_not_an_object():
    assert _errors(["A11"]) == [("attributes", "type")]


def test_integer_categories_refuse_bool_and_strings():
    from verdict.gateway.datasets import TAIWAN_ATTRIBUTES

    spec = next(s for s in TAIWAN_ATTRIBUTES if s.name == "sex")
    from verdict.gateway.schema import _check_value

    assert _check_value(spec, 1, "sex") is None
    assert _check_value(spec, True, "sex").rule == "category"
    assert _check_value(spec, "1", "sex").rule == "category"


@pytest.mark.parametrize("rows", [[], "abc", {"a": 1}])
def test_batch_shape(rows):
    with pytest.raises(InputValidationError) as info:
        validate_batch(GERMAN_ATTRIBUTES, rows, max_rows=4)
    assert info.value.errors[0].field == "rows"


def test_batch_too_large(applicant):
    with pytest.raises(InputValidationError) as info:
        validate_batch(GERMAN_ATTRIBUTES, [applicant] * 5, max_rows=4)
    assert info.value.errors[0].rule == "batch_shape"


def test_batch_errors_name_the_row(applicant):
    bad = dict(applicant, age_years=5)
    with pytest.raises(InputValidationError) as info:
        validate_batch(GERMAN_ATTRIBUTES, [applicant, bad], max_rows=4)
    assert [(e.field, e.rule) for e in info.value.errors] == [("rows[1].age_years", "minimum")]


def test_encoding_uses_category_indexes(applicant):
    x = encode_rows(GERMAN_ATTRIBUTES, [applicant])
    assert x.dtype == np.float32 and x.shape == (1, 20)
    assert x[0, 0] == 0.0  # A11 is the first checking-account code
    assert x[0, 1] == applicant["duration_months"]

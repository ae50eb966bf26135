"""Canonical JSON encoding (RFC 8785, JSON Canonicalization Scheme).

Why: a record's hash and signature are computed over bytes, so the same
logical record must always produce the same bytes, on any machine, in any
language. RFC 8785 is a published standard with independent implementations,
so an auditor can re-derive the bytes without our code.

How: msgspec already emits RFC 8785 strings (minimal escaping, lower-case
``\\u00xx``) and sorts keys by code point; what differs is float formatting
(msgspec ``100.0``/``1e-7``/``1e16``/``-0.0``, RFC ``100``/``0.0000001``/
``10000000000000000``/``0``), NaN/Infinity (msgspec writes ``null``) and key
order for characters outside the BMP (the RFC sorts UTF-16 code units).

So the encoder runs msgspec once (fast path) and looks for any byte pattern
that could be one of those differences: a number ending in ``.0``, a positive
exponent, an exponent of -5..-7, a 16+ digit integer, a ``null``, or a
4-byte UTF-8 sequence. Only if one appears (possibly a false alarm inside a
string) does it take the slow path: a walk that renders every float with
:func:`format_number`, splices it in as ``msgspec.Raw``, checks I-JSON limits
and sorts keys by UTF-16. A property test checks both paths against the
independent ``rfc8785`` package.

Restrictions (I-JSON, RFC 7493), enforced rather than silently mangled:
object keys must be strings, integers must fit in +/- 2**53, floats must be
finite.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

__all__ = ["CanonicalEncodingError", "canonical_bytes", "format_number"]

_MAX_SAFE_INT = 2**53 - 1  # I-JSON (RFC 7493 2.2): integers in [-(2**53)+1, 2**53-1]
_sorted_encoder = msgspec.json.Encoder(order="sorted")
_plain_encoder = msgspec.json.Encoder()
# Any of these in msgspec's output may differ from RFC 8785 (see module doc).
# Separate searches: each is a fast literal scan, one big alternation is 20x slower.
_MAY_DIFFER = tuple(
    re.compile(pattern)
    # "e\d+" must end the token: hex digests ("...e5a1...") would otherwise
    # send almost every record down the slow path.
    for pattern in (rb"\.0(?:[,\]}]|$)", rb"e\d+(?:[,\]}]|$)", rb"e-[567](?:[,\]}]|$)", rb"null")
)
# Digits -> "0", "." -> ".", anything else -> "x": an integer token of 16+
# digits then shows as "x" followed by sixteen "0" (one C-speed scan, no regex).
_DIGIT_CLASSES = bytes(0x30 if 0x30 <= b <= 0x39 else (0x2E if b == 0x2E else 0x78) for b in range(256))
_SIXTEEN_DIGITS = b"x" + b"0" * 16
_SEVENTEEN_DIGITS = b"x" + b"0" * 17
_FOUR_BYTE_UTF8_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")


class CanonicalEncodingError(ValueError):
    """A value cannot be represented in canonical JSON; the message names the path."""


def format_number(x: float) -> str:
    """Render a float64 exactly as ECMAScript's Number.prototype.toString.

    Python's ``repr`` and ECMAScript both produce the shortest digit string
    that round-trips; they differ only in where the decimal point goes and how
    the exponent is written, which is what this function rearranges.
    """
    if not math.isfinite(x):
        raise CanonicalEncodingError(f"non-finite number {x!r} has no JSON form")
    if x == 0.0:
        return "0"  # also -0.0, per RFC 8785 section 3.2.2.3
    text = repr(x)
    if "e" not in text:
        # 1e-4 <= |x| < 1e16: repr is already the ECMAScript form, except
        # that integral values carry a trailing ".0".
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # n = position of the decimal point relative to the first significant digit
    n = len(int_part.lstrip("0")) + (int(exp_text) if exp_text else 0)
    if not int_part.lstrip("0"):
        n -= len(frac_part) - len(frac_part.lstrip("0"))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = ("+" if e >= 0 else "-") + str(abs(e))
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + exp
    return sign + body


def _prepare(value: Any, path: str) -> Any:
    """Replace floats by their canonical text and check I-JSON limits.

    Dispatches on the exact type: ``to_builtins`` output only holds these.
    """
    kind = type(value)
    if kind is float:
        try:
            return msgspec.Raw(format_number(value).encode())
        except CanonicalEncodingError as exc:
            raise CanonicalEncodingError(f"{path}: {exc}") from None
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise CanonicalEncodingError(f"{path}: object key {key!r} must be a string")
        ordered = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return {key: _prepare(value[key], f"{path}.{key}") for key in ordered}
    if kind is list or kind is tuple:
        return [_prepare(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind is int:
        if abs(value) > _MAX_SAFE_INT:
            raise CanonicalEncodingError(f"{path}: integer {value} exceeds the I-JSON range +/-(2**53-1)")
        return value
    raise CanonicalEncodingError(f"{path}: unsupported type {kind.__name__}")


def _may_differ(encoded: bytes) -> bool:
    """True if msgspec's bytes might not be canonical (false alarms are fine)."""
    return (
        any(p.search(encoded) for p in _MAY_DIFFER)
        or any(lead in encoded for lead in _FOUR_BYTE_UTF8_LEADS)
        or _has_long_integer(encoded)
    )


def _has_long_integer(encoded: bytes) -> bool:
    """True if an integer token may lie outside +/-(2**53-1).

    17+ digits always do; 16-digit tokens (common: 53-bit explanation seeds)
    are compared exactly, so they keep the fast path when in range.
    """
    classes = b"x" + encoded.translate(_DIGIT_CLASSES)  # "x" so a number at offset 0 is found too
    if _SEVENTEEN_DIGITS in classes:
        return True
    start = classes.find(_SIXTEEN_DIGITS)
    while start != -1:
        if int(encoded[start : start + 16]) > _MAX_SAFE_INT:
            return True
        start = classes.find(_SIXTEEN_DIGITS, start + 17)
    return False


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    ``value`` may be a msgspec Struct or plain JSON-like builtins. Struct
    fields are emitted by their encoded names; ``None``-valued fields are kept
    (explicit ``null``) unless the Struct omits defaults.
    """
    try:
        fast = _sorted_encoder.encode(value)
        if not _may_differ(fast):
            return fast
        return _plain_encoder.encode(_prepare(msgspec.to_builtins(value), "$"))
    except TypeError as exc:  # e.g. a key or value msgspec cannot encode
        raise CanonicalEncodingError(f"$: {exc}") from None

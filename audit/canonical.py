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

So the encoder runs msgspec once (fast path) and inspects only the
*structure* of its output: the bytes outside string literals (the
"skeleton": punctuation, numbers, ``true``/``false``/``null``), so text
inside strings (hex digests, reason texts) can never raise a false alarm.
If the skeleton holds no ``null``, no exponent that msgspec writes
differently, no 16+ digit integer outside I-JSON and the output has no
4-byte UTF-8 sequence, msgspec's bytes are returned as they are. If the only
difference is integral floats (``0.0``, ``12.0``: common, e.g. an additivity
error of exactly zero), they are rewritten to integers in the skeleton and
the strings are put back around them. Anything else takes the slow path: a
walk that renders every float with :func:`format_number`, splices it in as
``msgspec.Raw``, checks I-JSON limits and sorts keys by UTF-16. Property
tests check all three paths against the independent ``rfc8785`` package.

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
_QUOTE = b'"'
# In the skeleton (see module doc). msgspec writes exponents only below 1e-4 or
# from 1e16 up; "1e16" and "1e-6" differ from RFC 8785, "1e-7" and below do not.
_EXPONENT_THAT_DIFFERS = re.compile(rb"[0-9]e(?:[0-9]|-[56](?![0-9]))")
# Digits -> "0", "." and "e" kept, anything else -> "x": an integer token of 16+
# digits then shows as "x" and sixteen "0" (fraction digits follow a ".").
_NUMBER_CLASSES = bytes(0x30 if 0x30 <= b <= 0x39 else (b if b in b".e" else 0x78) for b in range(256))
_INTEGER_OF_16_DIGITS = b"x" + b"0" * 16
# An integral float as msgspec writes it ("12.0", "-0.0") before a delimiter.
_DELIMITERS = (b",", b"]", b"}")
# msgspec's MessagePack form writes every float as 0xcb + big-endian float64, so a
# non-finite one (exponent bits all ones) shows as 0xcb, 0x7f/0xff, 0xf?.
_NON_FINITE_FLOAT64 = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
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


def _split_strings(encoded: bytes) -> list[bytes]:
    """Split msgspec's output at the quotes that delimit string literals:
    even items lie outside strings, odd items are string contents."""
    parts = encoded.split(_QUOTE)
    if b"\\" not in encoded:
        return parts  # no escapes, so every quote delimits
    merged = parts[:1]
    in_string = False  # whether merged[-1] is string content
    for part in parts[1:]:
        if in_string and _ends_in_escape(merged[-1]):
            merged[-1] += _QUOTE + part  # an escaped quote: the same string goes on
        else:
            merged.append(part)
            in_string = not in_string
    return merged


def _ends_in_escape(text: bytes) -> bool:
    """True if ``text`` ends in an odd run of backslashes (the next quote is escaped)."""
    return (len(text) - len(text.rstrip(b"\\"))) % 2 == 1


def _skeleton_is_canonical(value: Any, skeleton: bytes) -> bool:
    """False if the bytes outside strings might differ from RFC 8785 in
    anything but integral floats (false alarms are fine: the slow path is exact).

    Only literal searches on the common path: a regex without a literal
    prefix costs more here than msgspec's whole encoding."""
    may_have_exponent = skeleton.count(b"e") > skeleton.count(b"true") + skeleton.count(b"false")
    if may_have_exponent and _EXPONENT_THAT_DIFFERS.search(skeleton):  # some number has an exponent
        return False
    if b"null" in skeleton and _NON_FINITE_FLOAT64.search(msgspec.msgpack.encode(value)):
        return False  # msgspec's JSON writes NaN and infinities as null, like None
    return not _has_unsafe_integer(skeleton)


def _has_unsafe_integer(skeleton: bytes) -> bool:
    """True if an integer token of 16+ digits may lie outside +/-(2**53-1).

    16-digit tokens are common (53-bit explanation seeds) and compared exactly."""
    classes = b"x" + skeleton.translate(_NUMBER_CLASSES)  # classes[i + 1] describes skeleton[i]
    first = classes.find(_INTEGER_OF_16_DIGITS)
    while first != -1:
        end = first + 16
        while classes[end + 1 : end + 2] == b"0":
            end += 1
        integer = skeleton[end : end + 1] not in (b".", b"e")  # else the integer part of a float
        if integer and (end - first > 16 or int(skeleton[first:end]) > _MAX_SAFE_INT):
            return True
        first = classes.find(_INTEGER_OF_16_DIGITS, end + 1)
    return False


def _integral_floats_as_integers(skeleton: bytes) -> bytes:
    """Rewrite msgspec's "12.0" / "-0.0" to RFC 8785's "12" / "0".

    Outside strings, ".0" followed by a delimiter (or the end) can only be an
    integral float: msgspec writes no other trailing zero, and an exponent
    follows a mantissa directly."""
    fixed = skeleton
    for delimiter in _DELIMITERS:
        fixed = fixed.replace(b".0" + delimiter, delimiter)
    if fixed.endswith(b".0"):
        fixed = fixed[:-2]
    if fixed == skeleton:
        return skeleton
    # "-0" is only ever a rewritten -0.0 (integers have no negative zero).
    for delimiter in _DELIMITERS:
        fixed = fixed.replace(b"-0" + delimiter, b"0" + delimiter)
    return b"0" if fixed == b"-0" else fixed


def _fast_canonical(value: Any, encoded: bytes) -> bytes | None:
    """msgspec's output for ``value`` made canonical without re-encoding, or
    None if the slow path is needed."""
    if not encoded.isascii() and any(lead in encoded for lead in _FOUR_BYTE_UTF8_LEADS):
        return None  # keys may need UTF-16 order
    parts = _split_strings(encoded)
    skeleton = _QUOTE.join(parts[0::2])
    if not _skeleton_is_canonical(value, skeleton):
        return None
    fixed = _integral_floats_as_integers(skeleton)
    if fixed == skeleton:
        return encoded
    parts[0::2] = fixed.split(_QUOTE)
    return _QUOTE.join(parts)


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    ``value`` may be a msgspec Struct or plain JSON-like builtins. Struct
    fields are emitted by their encoded names; ``None``-valued fields are kept
    (explicit ``null``) unless the Struct omits defaults.
    """
    try:
        fast = _fast_canonical(value, _sorted_encoder.encode(value))
        if fast is not None:
            return fast
        return _plain_encoder.encode(_prepare(msgspec.to_builtins(value), "$"))
    except TypeError as exc:  # e.g. a key or value msgspec cannot encode
        raise CanonicalEncodingError(f"$: {exc}") from None

"""Validation of store keys, shared by every backend so a key accepted by one
is accepted by all (a trail must move between backends byte for byte)."""

from __future__ import annotations

import re

__all__ = ["InvalidKey", "check_key", "check_prefix"]

# A segment may not start with "." (no hidden files, no "." or "..", and the
# filesystem store's staging directory ".incoming" can never be a key).
_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


class InvalidKey(ValueError):
    """A key that no backend may store."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative store key, else raise InvalidKey."""
    if not key or len(key) > 512:
        raise InvalidKey(f"store key must be 1..512 characters, got {len(key)}")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(f"store key {key!r}: segment {segment!r} must match {_SEGMENT.pattern} (no leading '.')")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key's leading part (may end in '/' or mid-segment)."""
    if prefix:
        check_key(prefix.rstrip("/") if prefix.rstrip("/") else "/")
    return prefix

"""API keys: random bearer tokens, stored only as SHA-256 digests.

Why SHA-256 and not a password hash: the secrets are 256-bit random tokens,
not human passwords, so a fast hash is not brute-forceable and keeps every
request's check cheap. The file holds no secret: losing it reveals nothing
that authenticates. Tokens look like ``vk_<key id>_<secret>``; the key id
finds the entry, the digest comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

__all__ = ["SCOPES", "ApiKey", "ApiKeyError", "ApiKeyStore"]

SCOPES = ("score", "explain", "replay", "admin")


class ApiKeyError(ValueError):
    """A key request that cannot be honoured (unknown scope, unreadable file)."""


class ApiKey(msgspec.Struct, frozen=True):
    key_id: str
    sha256: str
    scopes: tuple[str, ...]
    name: str
    created: str


class _KeyFile(msgspec.Struct):
    keys: list[ApiKey] = []


class ApiKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> _KeyFile:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=_KeyFile)
        except FileNotFoundError:
            return _KeyFile()
        except (OSError, msgspec.DecodeError) as exc:
            raise ApiKeyError(f"API key file {self.path} is unreadable: {exc}") from None

    def _save(self, data: _KeyFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.format(msgspec.json.encode(data)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def create(self, scopes: list[str] | tuple[str, ...], name: str = "") -> tuple[ApiKey, str]:
        """Create a key; returns (record, token). The token is shown once and never stored."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ApiKeyError(
                f"scopes must be a non-empty subset of {', '.join(SCOPES)}; unknown: {', '.join(unknown) or '-'}"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            key_id=key_id,
            sha256=hashlib.sha256(secret.encode()).hexdigest(),
            scopes=tuple(s for s in SCOPES if s in scopes),
            name=name,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        data = self._load()
        data.keys.append(key)
        self._save(data)
        return key, f"vk_{key_id}_{secret}"

    def authenticate(self, token: str) -> ApiKey | None:
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != "vk" or not key_id or not secret:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for key in self._cached():
            if key.key_id == key_id and hmac.compare_digest(key.sha256, digest):
                return key
        return None

    def find(self, key_id: str) -> ApiKey | None:
        """The key with this id as of the file's last change (a stat per call, a read only after a change)."""
        return next((k for k in self._cached() if k.key_id == key_id), None)

    def _cached(self) -> list[ApiKey]:
        """Re-read the file only when it changed, so new keys work without a restart."""
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if getattr(self, "_stamp", None) != stamp:
            self._keys = self._load().keys
            self._stamp = stamp
        return self._keys

    def list(self) -> list[ApiKey]:
        return self._load().keys

    def is_empty(self) -> bool:
        return not self._load().keys

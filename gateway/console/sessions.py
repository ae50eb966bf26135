"""Console sign-in sessions: an API key exchanged for a server-side session.

Why server-side: signing out must really end the session (a cookie that carries
its own authority stays valid until it expires, whatever the user clicked), and
an idle or over-age session must end on the server's clock, not the browser's.
The cookie holds only a random token; the server keeps its SHA-256, so a dump
of this process's memory does not hand out live sessions.

Why re-checked against the key file on every request: a session is the key's
authority lent to a browser, so a key deleted from the key file (or one whose
scopes were cut) takes its sessions with it at the next page.

Why a CSRF token per session: a form posted from another site carries the
cookie (SameSite=Strict stops today's browsers sending it, older ones may), but
never the token, which only the console's own pages hold. The sign-in form,
before there is a session, uses a double-submit cookie instead.

Sessions live in this process: behind several replicas, route a browser to one
replica (session affinity); a restart signs everyone out (docs/console.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

import msgspec

from verdict.gateway.apikeys import ApiKeyStore

__all__ = ["ConsoleSession", "SessionStore", "new_token", "same_token"]

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; a missing one never matches."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSession(msgspec.Struct, frozen=True):
    key_id: str
    key_name: str
    scopes: tuple[str, ...]
    csrf: str
    """The token every form of this session must post back."""
    started: float
    last_seen: float

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class SessionStore:
    """Sessions by token digest, ended by sign-out, idleness, age, or their key's removal."""

    def __init__(
        self,
        apikeys: ApiKeyStore,
        *,
        idle_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apikeys, self.idle_s, self.max_age_s, self._clock = apikeys, idle_s, max_age_s, clock
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def sign_in(self, api_key_token: str) -> tuple[str, ConsoleSession] | None:
        """A new session for a valid API key: (cookie token, session); None for a bad key."""
        key = self._apikeys.authenticate(api_key_token.strip())
        if key is None:
            return None
        now = self._clock()
        token = new_token()
        session = ConsoleSession(key.key_id, key.name, key.scopes, new_token(), now, now)
        with self._lock:
            self._expire(now)
            self._sessions[_digest(token)] = session
        return token, session

    def current(self, token: str | None) -> ConsoleSession | None:
        """The live session for a cookie token, its idle clock restarted; None when there is none."""
        if not token:
            return None
        now = self._clock()
        digest = _digest(token)
        with self._lock:
            session = self._sessions.get(digest)
            if session is None:
                return None
            key = self._apikeys.find(session.key_id)
            if key is None or self._expired(session, now):
                del self._sessions[digest]
                return None
            session = msgspec.structs.replace(session, last_seen=now, scopes=key.scopes)
            self._sessions[digest] = session
            return session

    def sign_out(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            return self._sessions.pop(_digest(token), None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._sessions)

    def _expired(self, session: ConsoleSession, now: float) -> bool:
        return now - session.last_seen > self.idle_s or now - session.started > self.max_age_s

    def _expire(self, now: float) -> None:
        for digest in [d for d, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[digest]

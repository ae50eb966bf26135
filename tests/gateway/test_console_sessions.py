"""Console sessions end on the server's clock: idle, over age, signed out, or with their key.

The store is driven with a hand-wound clock (the clock is an argument of the real
SessionStore), so expiry is tested on what the clock says, never on how long the
machine took; the same rule over HTTP is in test_console.py.
"""

from __future__ import annotations

import json

from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.console.sessions import SessionStore


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_with_key(tmp_path, *, idle_s: float = 60, max_age_s: float = 600):
    keys = ApiKeyStore(tmp_path / "apikeys.json")
    key, token = keys.create(["explain"], name="staff")
    clock = HandClock()
    return SessionStore(keys, idle_s=idle_s, max_age_s=max_age_s, clock=clock), clock, keys, key, token


def test_a_session_ends_once_idle_longer_than_the_idle_timeout_and_each_page_restarts_that_clock(tmp_path):
    sessions, clock, _, key, token = store_with_key(tmp_path, idle_s=60)
    cookie, session = sessions.sign_in(token)
    assert session.key_id == key.key_id and session.may("explain") and not session.may("replay")
    clock.now += 59
    assert sessions.current(cookie) is not None  # in time: the idle clock starts again here
    clock.now += 59
    assert sessions.current(cookie) is not None
    clock.now += 61
    assert sessions.current(cookie) is None
    assert sessions.current(cookie) is None and len(sessions) == 0  # gone, not merely refused once


def test_a_busy_session_still_ends_at_its_maximum_age(tmp_path):
    sessions, clock, _, _, token = store_with_key(tmp_path, idle_s=60, max_age_s=300)
    cookie, _ = sessions.sign_in(token)
    for _ in range(5):
        clock.now += 59
        assert sessions.current(cookie) is not None
    clock.now += 59  # 354 s after sign-in, never idle for a minute
    assert sessions.current(cookie) is None


def test_sign_out_and_a_removed_key_end_sessions_and_a_bad_key_gets_none(tmp_path):
    sessions, _, keys, key, token = store_with_key(tmp_path)
    assert sessions.sign_in("vk_nothere_secret") is None and sessions.sign_in("") is None
    first, _ = sessions.sign_in(token)
    second, _ = sessions.sign_in(token)
    assert first != second and len(sessions) == 2
    assert sessions.sign_out(first) and not sessions.sign_out(first)
    assert sessions.current(first) is None and sessions.current(second) is not None
    data = json.loads(keys.path.read_text())
    data["keys"] = [k for k in data["keys"] if k["key_id"] != key.key_id]
    keys.path.write_text(json.dumps(data))
    assert sessions.current(second) is None  # the key's authority went, its sessions with it


def test_idle_expiry_of_one_session_sweeps_other_stale_sessions_on_the_next_sign_in(tmp_path):
    sessions, clock, _, _, token = store_with_key(tmp_path, idle_s=60)
    stale, _ = sessions.sign_in(token)
    clock.now += 61
    fresh, _ = sessions.sign_in(token)
    assert len(sessions) == 1
    assert sessions.current(stale) is None and sessions.current(fresh) is not None

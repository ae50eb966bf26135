"""Load from a separate, lightweight process: wrk (Debian package ``wrk``).

Why: a Python load generator in the benchmark's own process needs a core of
its own to keep 16-64 requests in flight, and on a 2-core machine it then
competes with the server it measures (last measured: every variant flattened
to ~100 req/s at concurrency 64). wrk is an event loop in C that issues a
request as soon as its connection frees up (closed loop, like real clients),
so nearly all CPU goes to the server.

The Lua script posts German credit rows with a request id unique per
connection and request, and prints a one-line JSON summary that this module
parses: requests, seconds, latency percentiles, non-2xx count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["WrkResult", "available", "drive", "drive_script", "lua_string"]

_SETUP = r"""
local token = "{TOKEN}"
local prefix = "{PREFIX}"
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end
"""

_SCRIPT = r"""
local rows = {ROWS}
function request()
  counter = counter + 1
  local row = rows[(counter % #rows) + 1]
  local body = '{"model":"german-credit","request_id":"' .. prefix .. '-' .. thread_id .. '-' .. counter .. '","attributes":' .. row .. '}'
  return wrk.format("POST", "/v1/decisions", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
"""

_DONE = r"""
function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format('WRK_RESULT {"requests": %d, "micros": %d, "p50": %d, "p99": %d, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


class WrkResult:
    def __init__(self, raw: dict) -> None:
        self.requests = int(raw["requests"])
        self.seconds = raw["micros"] / 1e6
        self.rate = self.requests / self.seconds if self.seconds else 0.0
        self.p50_ms = raw["p50"] / 1000
        self.p99_ms = raw["p99"] / 1000
        self.errors = int(raw["non2xx"]) + int(raw["socket_errors"])


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_string(data: str | bytes) -> str:
    """A Lua string literal holding exactly ``data`` (bytes as decimal escapes: binary-safe)."""
    raw = data.encode() if isinstance(data, str) else data
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in raw) + '"'


_ATTRIBUTES = """ .. counter .. '","attributes":' .. row"""


def drive(
    url: str,
    token: str,
    rows: list[dict],
    concurrency: int,
    seconds: float,
    prefix: str,
    subject: str | None = None,
) -> WrkResult:
    """``subject``: a Lua expression for each body's ``subject_id`` (e.g. ``math.random(0, 9999)``);
    None sends none."""
    script = _SCRIPT
    if subject is not None:
        assert _ATTRIBUTES in script, "the script's body changed: update _ATTRIBUTES"
        script = f"math.randomseed({os.getpid()})\n" + script.replace(
            _ATTRIBUTES, f""" .. counter .. '","subject_id":"subject-' .. {subject} .. '","attributes":' .. row"""
        )
    script = script.replace(
        "{ROWS}", "{" + ",".join(lua_string(json.dumps(r, separators=(",", ":"))) for r in rows) + "}"
    )
    return drive_script(url, token, script, concurrency, seconds, prefix)


def drive_script(url: str, token: str, request_lua: str, concurrency: int, seconds: float, prefix: str) -> WrkResult:
    """Run wrk with a Lua ``request()`` of the caller's (it may use ``token``, ``prefix``,
    ``counter`` and ``thread_id``, set up here) and the summary line this module parses."""
    script = (_SETUP.replace("{TOKEN}", token).replace("{PREFIX}", prefix)) + request_lua + _DONE
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    duration = max(1, round(seconds))  # wrk takes whole seconds
    try:
        done = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "30s", "-s", file.name, url],
            capture_output=True,
            text=True,
            timeout=duration + 120,
        )
    finally:
        Path(file.name).unlink()
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    out = done.stdout
    line = next(text for text in out.splitlines() if text.startswith("WRK_RESULT "))
    return WrkResult(json.loads(line.removeprefix("WRK_RESULT ")))

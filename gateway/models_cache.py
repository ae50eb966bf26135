"""The gateway's model cache is the engine (gateway.engine.Engine).

Why this module still exists: the HTTP layer and the service assembly import
``ModelCache`` from here; the cache itself (one per process, shared with
replay) lives in gateway.engine so that the gateway and replay load, score and
explain through one piece of code.
"""

from __future__ import annotations

from verdict.gateway.engine import ALIAS_TTL_S, LoadedVersion
from verdict.gateway.engine import Engine as ModelCache

__all__ = ["ALIAS_TTL_S", "LoadedVersion", "ModelCache"]

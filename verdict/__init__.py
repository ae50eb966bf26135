"""Verdict: audited, explained, replayable decisions.

The installed distribution (``verdict-gateway``) has one top-level name,
``verdict``; the repository keeps its three folders, mapped to
``verdict.audit``, ``verdict.gateway`` and ``verdict.replay``.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]

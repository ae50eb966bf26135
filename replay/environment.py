"""Recorded environments: fetch the manifest a decision names, compare it with ours.

Every decision record carries ``environment_sha256``, the SHA-256 of the
canonical JSON of the gateway process's :class:`gateway.environment.EnvironmentFingerprint`,
stored content-addressed at ``environments/sha256/<sha256>`` when that process
started (gateway.service.publish_environment). A replay fetches it, checks
the bytes hash to the address (an altered manifest cannot be told from a
different machine), and diffs it with the environment the replay itself runs
in. The diff explains *why* bits may differ; the verdicts say *whether* they do.

Manifests are diffed as plain JSON so that one written by an older or newer
version of the fingerprint (fields added or removed) is still readable and
every difference still shows.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import msgspec

from verdict.audit.stores import ObjectExists, ObjectMissing, StoreError, WormStore

__all__ = [
    "ENVIRONMENTS_PREFIX",
    "Difference",
    "EnvironmentProblem",
    "RecordedEnvironment",
    "current_fingerprint",
    "diff",
    "environment_key",
    "fetch",
    "fingerprint_sha256",
    "publish",
    "summarize",
]

ENVIRONMENTS_PREFIX = "environments/sha256/"
"""Where gateway.service.publish_environment stores environment manifests."""


def environment_key(sha256: str) -> str:
    return f"{ENVIRONMENTS_PREFIX}{sha256}"


class EnvironmentProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Difference(msgspec.Struct, frozen=True):
    path: str
    """dotted path in the fingerprint, e.g. ``packages.numpy`` or ``determinism.intra_op_threads``"""
    recorded: Any
    current: Any


class RecordedEnvironment(msgspec.Struct, omit_defaults=True):
    """One environment manifest named by the replayed decisions, and how ours differs."""

    sha256: str
    decisions: int = 0
    status: str = "ok"
    """ok | missing | altered | unreadable"""
    problem: str | None = None
    identical: bool | None = None
    """True when the replay ran in an environment with the same fingerprint hash (None: not re-scored)."""
    differences: list[Difference] = []
    summary: list[str] = []


def fetch(store: WormStore, sha256: str) -> dict[str, Any]:
    """The recorded fingerprint as JSON, after checking it hashes to its address."""
    try:
        data = store.get(environment_key(sha256))
    except ObjectMissing:
        raise EnvironmentProblem(
            "environment_missing", f"environment manifest {environment_key(sha256)} is missing from {store.url}"
        ) from None
    except StoreError as exc:
        raise EnvironmentProblem("store_error", f"environment manifest {environment_key(sha256)}: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise EnvironmentProblem(
            "environment_altered", f"environment manifest {environment_key(sha256)} hashes to {actual}: altered"
        )
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvironmentProblem("environment_altered", f"environment manifest {sha256} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EnvironmentProblem("environment_altered", f"environment manifest {sha256} is not a JSON object")
    return value


def current_fingerprint(device: str = "cpu") -> tuple[dict[str, Any], str, bytes]:
    """(fingerprint as JSON, its sha256, canonical bytes) of this process, as the
    gateway captures its own (same function, same seed), so equal environments hash equal."""
    # lazy: torch (gateway.environment): the replaying parent proves records without it
    from verdict.gateway import environment

    fp = environment.capture(device=device, seed=0)
    data = environment.encode(fp)
    return msgspec.json.decode(data), hashlib.sha256(data).hexdigest(), data


def fingerprint_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(store: WormStore, data: bytes) -> str:
    """Store an environment manifest content-addressed (idempotent); return its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    with contextlib.suppress(ObjectExists):  # same address, same bytes (the verifier re-hashes it)
        store.put_once(environment_key(digest), data)
    return digest


def diff(recorded: Any, current: Any, path: str = "") -> list[Difference]:
    """Every leaf that differs, as (dotted path, recorded, current)."""
    out: list[Difference] = []
    _diff(recorded, current, path, out)
    return out


def _diff(a: Any, b: Any, path: str, out: list[Difference]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
    elif a != b:
        out.append(Difference(path, a, b))


# What matters most for floating-point bits, first in summaries.
_WEIGHTY = (
    "torch.",
    "accelerator.",
    "determinism.",
    "cpu.model",
    "machine",
    "python",
    "key_packages.",
    "project_source_sha256",
    "project_version",
)


def summarize(differences: list[Difference]) -> list[str]:
    """A few plain sentences for the examiner (the full list is in the report)."""
    if not differences:
        return [
            "identical fingerprint: same Python, platform, CPU, torch build, packages, project source and determinism flags"
        ]
    out: list[str] = []
    packages = [d for d in differences if d.path.startswith("packages.")]
    flags = [d for d in differences if d.path == "cpu.flags"]
    rest = [d for d in differences if not d.path.startswith("packages.") and d.path != "cpu.flags"]
    rest.sort(key=lambda d: (not d.path.startswith(_WEIGHTY), d.path))
    for d in rest:
        out.append(f"{d.path}: recorded {_short(d.recorded)}, now {_short(d.current)}")
    if flags:
        a, b = set(flags[0].recorded or []), set(flags[0].current or [])
        out.append(
            f"CPU flags: {len(a - b)} recorded flag(s) missing here ({', '.join(sorted(a - b)[:8])}), "
            f"{len(b - a)} extra ({', '.join(sorted(b - a)[:8])})"
        )
    if packages:
        names = ", ".join(f"{d.path[9:]} {d.recorded or '-'} -> {d.current or '-'}" for d in packages[:10])
        out.append(f"{len(packages)} installed package(s) differ: {names}" + (" ..." if len(packages) > 10 else ""))
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

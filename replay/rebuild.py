"""``--rebuild-env``: replay inside a fresh virtualenv built from the recorded pins.

The environment manifest of a decision lists every installed distribution
with its exact version and the project's own version and source hash. A
replay in the current installation can only *report* that numpy or torch
differ; rebuilding turns "the versions differ" into a replay on the exact
versions:

1. find a Python of the recorded version (exact, else the same minor version,
   said so in the report);
2. ``python -m venv`` a new environment and ``pip install --no-deps`` every
   recorded pin (``--no-deps``: exactly the recorded set, nothing resolved anew);
3. find the project source whose hash is the recorded ``project_source_sha256``:
   the current checkout, a directory named in ``VERDICT_REPLAY_SOURCES``
   (``:``-separated), or a commit in the checkout's git history; copy it and
   install it editable, then check the installed copy hashes as recorded;
4. run the replay of those decisions in that environment (``python -m
   replay._inner``, the recorded project's own replay code) and collect its
   verdicts and its environment fingerprint; the outer replay signs and stores
   the report, which names the virtualenv and says how its fingerprint
   compares with the recorded one.

Environments are cached under ``$VERDICT_HOME/replay-envs/<key>`` (key: the
Python version, the pins and the source hash), built once and reused; a
directory without its ``.complete`` marker is a build cut short and is
rebuilt. Anything that cannot be rebuilt gives every decision of that
environment ``cannot_replay`` (``environment_not_rebuilt``) with the reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from verdict.audit.config import data_dir
from verdict.audit.records import DecisionBody, decode_record
from verdict.gateway.source import project_root, source_sha256
from verdict.replay import environment as envs
from verdict.replay.verdicts import DecisionResult, cannot_replay

__all__ = ["RebuildError", "RebuiltEnvironment", "ensure_environment", "replay_in_rebuilt_environments"]

PROJECT_ITSELF = ("verdict", "verdict-gateway")  # the distribution's name before and after the namespace move
_PIP_TIMEOUT_S = 1800
_SOURCE_FILES = ("pyproject.toml", "README.md")
_PACKAGES = ("verdict", "gateway", "audit", "replay")  # older trees lack verdict/: copied when present


class RebuildError(Exception):
    """The recorded environment cannot be rebuilt here; the message says why."""


class RebuiltEnvironment(msgspec.Struct, omit_defaults=True):
    recorded_environment: str
    venv: str
    python: str
    python_recorded: str
    packages_pinned: int
    project_source: str
    project_source_sha256: str
    reused: bool
    build_seconds: float
    fingerprint_sha256: str | None = None
    fingerprint_identical_to_recorded: bool | None = None
    notes: list[str] = []


def envs_dir() -> Path:
    override = os.environ.get("VERDICT_REPLAY_ENVS")
    if override:
        return Path(override).absolute()

    return data_dir() / "replay-envs"


def _say(progress: Any, text: str) -> None:
    if progress is not None:
        progress(f"rebuild: {text}", 0, 0)


# --- python -------------------------------------------------------------------------------------------


def _python_version(executable: str) -> str | None:
    try:
        out = subprocess.run(
            [executable, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(recorded: str) -> tuple[str, str]:
    """(executable, its version): the recorded version exactly if found, else the same minor version."""
    major_minor = ".".join(recorded.split(".")[:2])
    candidates = [
        getattr(sys, "_base_executable", None),
        sys.executable,
        shutil.which(f"python{major_minor}"),
        shutil.which(f"python{major_minor.split('.')[0]}"),
        shutil.which("python3"),
    ]
    found: list[tuple[str, str]] = []
    for exe in dict.fromkeys(c for c in candidates if c):
        version = _python_version(exe)
        if version == recorded:
            return exe, version
        if version and version.startswith(major_minor + "."):
            found.append((exe, version))
    if found:
        return found[0]
    raise RebuildError(f"no Python {major_minor} on this machine (the decisions were made with Python {recorded})")


# --- project source --------------------------------------------------------------------------------------


def _tree_hash(root: Path) -> str:
    """gateway.source.source_sha256 of another tree (computed by that tree's own code, loaded by its path:
    every version's ``gateway/source.py`` needs only the standard library, whatever the package layout)."""
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import importlib.util, sys; spec = importlib.util.spec_from_file_location('source', sys.argv[1]); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "print(module.source_sha256())",
            str(root / "gateway" / "source.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RebuildError(f"cannot hash the project source in {root}: {out.stderr.strip()[-500:]}")
    return out.stdout.strip()


def _copy_tree(root: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in _PACKAGES:
        if (root / package).is_dir():
            shutil.copytree(root / package, dest / package, ignore=ignore)
    for name in _SOURCE_FILES:
        if (root / name).exists():
            shutil.copy2(root / name, dest / name)


def _git(root: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=300, check=False, **kwargs)


def _git_commits(root: Path, limit: int = 200) -> list[str]:
    try:
        out = _git(root, "rev-list", f"--max-count={limit}", "--all", text=True)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def _export_commit(root: Path, commit: str, dest: Path) -> bool:
    dest.mkdir(parents=True, exist_ok=True)
    paths = [p for p in (*_PACKAGES, *_SOURCE_FILES) if _git(root, "cat-file", "-e", f"{commit}:{p}").returncode == 0]
    if not paths:
        return False
    archive = _git(root, "archive", "--format=tar", commit, *paths)
    if archive.returncode != 0:
        return False
    untar = subprocess.run(
        ["tar", "-x", "-C", str(dest)], input=archive.stdout, capture_output=True, timeout=300, check=False
    )
    return untar.returncode == 0


def locate_source(wanted: str, dest: Path) -> str:
    """Copy the project source whose hash is ``wanted`` into ``dest``; return where it came from."""
    root = project_root()
    if source_sha256() == wanted:
        _copy_tree(root, dest)
        return f"current checkout {root}"
    for extra in filter(None, os.environ.get("VERDICT_REPLAY_SOURCES", "").split(":")):
        path = Path(extra)
        if path.is_dir() and _tree_hash(path) == wanted:
            _copy_tree(path, dest)
            return f"source directory {path}"
    for commit in _git_commits(root):
        with tempfile.TemporaryDirectory(prefix="verdict-src-") as tmp:
            if _export_commit(root, commit, Path(tmp)) and _tree_hash(Path(tmp)) == wanted:
                _copy_tree(Path(tmp), dest)
                return f"git commit {commit} of {root}"
    raise RebuildError(
        f"the recorded project source (sha256 {wanted[:16]}...) is neither the current checkout, nor in "
        f"VERDICT_REPLAY_SOURCES, nor any commit of {root}; check out the version the decisions were made with"
    )


# --- the virtualenv ---------------------------------------------------------------------------------------


def _pip_install(venv_python: str, args: list[str], what: str) -> None:
    """pip inside the rebuilt environment: exactly what is named, nothing it would pull in
    (the recorded pins are the whole environment), quietly, without byte-compiling."""
    _run(
        [
            venv_python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--disable-pip-version-check",
            *args,
        ],
        what,
    )


def _run(cmd: list[str], what: str, **kwargs: Any) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False, **kwargs)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-15:]
        raise RebuildError(f"{what} failed (exit {out.returncode}): " + " | ".join(tail))


def _key(python: str, pins: dict[str, str], source: str) -> str:
    text = python + "\n" + "".join(f"{k}=={v}\n" for k, v in sorted(pins.items())) + source
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def ensure_environment(recorded_sha: str, recorded: dict[str, Any], progress: Any = None) -> RebuiltEnvironment:
    """A virtualenv with the recorded pins and project source, built or reused."""
    python_recorded = str(recorded.get("python") or "")
    packages = recorded.get("packages")
    source = recorded.get("project_source_sha256")
    if not python_recorded or not isinstance(packages, dict) or not packages or not isinstance(source, str):
        raise RebuildError(
            f"environment manifest {recorded_sha[:16]}... lacks python, packages or project_source_sha256"
        )
    pins = {name: str(version) for name, version in packages.items() if name not in PROJECT_ITSELF}
    executable, python = find_python(python_recorded)
    notes = (
        [] if python == python_recorded else [f"Python {python} used; the decisions were made with {python_recorded}"]
    )
    base = envs_dir()
    base.mkdir(parents=True, exist_ok=True)
    target = base / _key(python, pins, source)
    with open(base / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per environment at a time
        marker = target / ".complete"
        if marker.exists():
            info = msgspec.json.decode(marker.read_bytes(), type=RebuiltEnvironment)
            return msgspec.structs.replace(info, reused=True, build_seconds=0.0, recorded_environment=recorded_sha)
        if target.exists():
            shutil.rmtree(target)  # a build cut short
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=base) as staging:
            staged = Path(staging) / "src"
            staged.mkdir()
            origin = locate_source(source, staged)  # before the slow part: fail fast
            _say(progress, f"creating {target} with Python {python}")
            _run([executable, "-m", "venv", str(target)], "creating the virtualenv")
            venv_python = str(target / "bin" / "python")
            (target / "pins.txt").write_text("".join(f"{k}=={v}\n" for k, v in sorted(pins.items())))
            _say(progress, f"installing {len(pins)} recorded pins")
            _pip_install(venv_python, ["-r", str(target / "pins.txt")], f"pip install of the {len(pins)} recorded pins")
            src = target / "src"
            shutil.move(str(staged), str(src))
        _say(progress, f"installing the project from {origin}")
        _pip_install(venv_python, ["--no-build-isolation", "-e", str(src)], "installing the recorded project source")
        check = subprocess.run(
            [venv_python, "-c", "from gateway.source import source_sha256; print(source_sha256())"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=src,
            env=_clean_env(),
            check=False,
        )
        if check.returncode != 0 or check.stdout.strip() != source:
            raise RebuildError(
                f"the installed project hashes to {check.stdout.strip() or check.stderr.strip()[-300:]}, "
                f"recorded {source}"
            )
        info = RebuiltEnvironment(
            recorded_environment=recorded_sha,
            venv=str(target),
            python=python,
            python_recorded=python_recorded,
            packages_pinned=len(pins),
            project_source=origin,
            project_source_sha256=source,
            reused=False,
            build_seconds=round(time.perf_counter() - started, 1),
            notes=notes,
        )
        marker.write_bytes(msgspec.json.encode(info))
        return info


def _clean_env() -> dict[str, str]:
    """The environment for processes in the rebuilt venv: nothing of ours on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


# --- replaying inside it -----------------------------------------------------------------------------------


class InnerJob(msgspec.Struct):
    store_url: str
    options: bytes
    """msgpack of replay.rescore.ReplayOptions"""
    records: list[bytes]
    workers: int | None = None
    opened: list[bytes] = []
    """Per record, the clear body of a sealed decision the outer replay opened (spec §3a), or b""."""


class InnerResult(msgspec.Struct):
    results: list[DecisionResult]
    fingerprints: dict[str, bytes]


def _inner_module(src: Path) -> str:
    """The recorded version's replay entry point: ``verdict.replay._inner`` since the ``verdict`` namespace,
    ``replay._inner`` before it."""
    return "verdict.replay._inner" if (src / "verdict" / "__init__.py").is_file() else "replay._inner"


def run_inside(
    info: RebuiltEnvironment,
    job: Any,
    records: list[bytes],
    progress: Any,
    done_before: int,
    total: int,
    workers: int,
    opened: list[bytes] | None = None,
) -> InnerResult:
    with tempfile.TemporaryDirectory(prefix="verdict-inner-") as tmp:
        inp, out = Path(tmp) / "in.msgpack", Path(tmp) / "out.msgpack"
        inp.write_bytes(
            msgspec.msgpack.encode(
                InnerJob(job.store_url, msgspec.msgpack.encode(job.options), records, workers, opened or [])
            )
        )
        process = subprocess.Popen(
            [str(Path(info.venv) / "bin" / "python"), "-m", "verdict.replay._inner", str(inp), str(out)],
            cwd=Path(info.venv) / "src",
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "progress" and progress is not None:
                progress("replaying", done_before + int(parts[1]), total)
        stderr = process.stderr.read() if process.stderr else ""
        if process.wait() != 0 or not out.exists():
            raise RebuildError(
                f"the replay inside {info.venv} failed (exit {process.returncode}): "
                + " | ".join(stderr.strip().splitlines()[-12:])
            )
        return msgspec.msgpack.decode(out.read_bytes(), type=InnerResult)


def replay_in_rebuilt_environments(
    store: Any,
    job: Any,
    todo: list[Any],
    env_status: list[envs.RecordedEnvironment],
    results: dict[str, DecisionResult],
    fingerprints: dict[str, bytes],
    store_progress: Any,
    progress: Any,
    workers_for: Callable[[int], int],
) -> list[dict[str, Any]]:
    """Replay ``todo`` grouped by recorded environment, each group in its rebuilt virtualenv.

    ``store_progress``: the replay's progress file (its ``record`` keeps each group's
    verdicts); ``workers_for(n)``: worker processes for ``n`` decisions (the replay's rule)."""

    groups: dict[str, list[Any]] = {}
    for t in todo:
        body = t.body or decode_record(t.record).body
        assert isinstance(body, DecisionBody)
        groups.setdefault(body.environment_sha256, []).append(t)
    rebuilt: list[dict[str, Any]] = []
    total = len(results) + len(todo)
    done = len(results)
    for sha, members in sorted(groups.items()):
        try:
            info = ensure_environment(sha, envs.fetch(store, sha), progress)
            inner = run_inside(
                info,
                job,
                [t.record for t in members],
                progress,
                done,
                total,
                workers_for(len(members)),
                [t.opened for t in members],
            )
        except (RebuildError, envs.EnvironmentProblem, OSError, subprocess.SubprocessError) as exc:
            for t in members:
                results[t.request_id] = cannot_replay(
                    t.request_id,
                    "environment_not_rebuilt",
                    f"--rebuild-env: {exc}",
                    chain_id=t.chain_id,
                    seq=t.seq,
                    record_hash=t.record_hash,
                    decided_at=t.decided_at,
                    model=t.model,
                    environment_sha256=sha,
                )
            rebuilt.append({"recorded_environment": sha, "venv": None, "problem": str(exc)})
            done += len(members)
            continue
        fingerprints.update(inner.fingerprints)
        store_progress.record(inner.results, inner.fingerprints)
        for r in inner.results:
            results[r.request_id] = r
        done += len(members)
        shas = sorted(inner.fingerprints)
        info = msgspec.structs.replace(
            info,
            fingerprint_sha256=shas[0] if shas else None,
            fingerprint_identical_to_recorded=sha in inner.fingerprints,
        )
        rebuilt.append(msgspec.to_builtins(info))
        if progress is not None:
            progress("replaying", done, total)
    return rebuilt

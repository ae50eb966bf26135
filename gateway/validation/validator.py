"""``validate_directory``: every check, in dependency order, into one report.

Why one report and never an exception for a bad model: the packager, the
registry and the CLI all need to show *every* reason a model is refused at
once (a user fixing one problem per registration attempt would give up), and
the registry stores the report either way. A check that cannot run because
one it needs failed is reported as ``failed-dependency`` naming that check;
a check with nothing to look at (no held-out rows, no eager module) as
``skipped``. Only an unreadable directory or a bug in this code raises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import torch

from verdict.audit.records import utc_now
from verdict.gateway import environment
from verdict.gateway.manifest import Manifest, ManifestError, decode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, HELDOUT_FILE, MANIFEST_FILE
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.source import project_version
from verdict.gateway.validation.artifact import inspect_artifact
from verdict.gateway.validation.behaviour import batch_invariance_check, eager_check, outputs_check
from verdict.gateway.validation.explaining import additivity_check, exact_check, reasons_check
from verdict.gateway.validation.fresh import fresh_process_check
from verdict.gateway.validation.graph import graph_checks
from verdict.gateway.validation.manifest_rules import manifest_checks
from verdict.gateway.validation.report import (
    FORMAT,
    Check,
    OutputDistribution,
    ProtectedAmongReasons,
    ReasonFrequency,
    ValidationReport,
)
from verdict.gateway.validation.rows import background_check, heldout_check, probe_rows, training_rows_check

__all__ = ["CHECKS", "validate_directory"]

CHECKS = (
    "files",
    "artifact_format",
    "graph_input",
    "graph_output",
    "graph_state",
    "graph_dtypes",
    "graph_random_ops",
    "graph_control_flow",
    "graph_nondeterministic_ops",
    "manifest_inputs",
    "manifest_explainer",
    "manifest_reasons",
    "manifest_decision",
    "manifest_runtime",
    "background",
    "heldout_rows",
    "training_rows",
    "outputs",
    "export_vs_eager",
    "batch_invariance",
    "fresh_processes",
    "additivity",
    "sampled_vs_exact",
    "protected_among_reasons",
)
"""Every check, in the order the report lists them."""
GRAPH_CHECKS = CHECKS[CHECKS.index("graph_input") : CHECKS.index("manifest_inputs")]
AFTER_MANIFEST = CHECKS[CHECKS.index("manifest_inputs") :]
AFTER_OUTPUTS = CHECKS[CHECKS.index("export_vs_eager") :]
RUNS_THE_MODEL = ("graph_input", "graph_output", "graph_state")
"""What must hold before the model is run at all (shapes the runtime relies on, no state)."""
EXPLAINS = (*RUNS_THE_MODEL, "manifest_explainer", "background", "outputs")


class _Findings(msgspec.Struct):
    """The report's informational parts, filled as far as the checks got."""

    output_distribution: OutputDistribution | None = None
    protected_among_reasons: ProtectedAmongReasons | None = None
    reason_frequency: list[ReasonFrequency] = msgspec.field(default_factory=list)


class _Checks:
    """The checks so far, and what a dependent check says when one it needs failed."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.done: dict[str, Check] = {}
        self._progress = progress

    def add(self, *checks: Check) -> None:
        for check in checks:
            self.done[check.name] = check
            if self._progress:
                self._progress(f"{check.name}: {check.status}")

    def blocked(self, name: str, needs: Sequence[str]) -> bool:
        """Record ``name`` as failed-dependency (and say so) when any of ``needs`` did not pass."""
        failed = [need for need in needs if need in self.done and not self.done[need].passed]
        missing = [need for need in needs if need not in self.done]
        if not failed and not missing:
            return False
        which = failed or missing
        self.add(
            Check(
                name,
                False,
                f"not run: depends on {', '.join(which)}, which did not pass",
                rule="dependency",
                status="failed-dependency",
                measured={"depends_on": ", ".join(which)},
            )
        )
        return True

    def ordered(self) -> list[Check]:
        return [self.done[name] for name in CHECKS if name in self.done]


def _read(directory: Path, name: str) -> bytes | None:
    path = directory / name
    return path.read_bytes() if path.is_file() else None


def _sha(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest() if data is not None else ""


def _model_name(data: bytes | None, manifest: Manifest | None) -> str:
    if manifest is not None:
        return manifest.ref
    try:
        raw = json.loads(data or b"")
        return f"{raw['name']}:{raw['version']}"
    except (ValueError, KeyError, TypeError):
        return "unknown"


def _environment() -> dict[str, str]:
    captured = environment.capture(device="cpu")
    return {
        "python": captured.python,
        "torch": captured.torch.version,
        "platform": captured.platform,
        "machine": captured.machine,
        "cpu": captured.cpu.model,
        "cpu_capability": str(captured.torch.cpu_capability),
        "mkl_dispatch": str(captured.torch.mkl_dispatch),
        "mkl_cnr": str(captured.determinism.mkl_cbwr),
        "device": "cpu",
    }


def _files_check(
    manifest_data: bytes | None, artifact: bytes | None, background: bytes | None
) -> tuple[Manifest | None, Check]:
    problems: list[tuple[str, str]] = []
    manifest = None
    for label, data in ((MANIFEST_FILE, manifest_data), (ARTIFACT_FILE, artifact), (BACKGROUND_FILE, background)):
        if data is None:
            problems.append(("files.missing", f"{label} is missing"))
    if manifest_data is not None:
        try:
            manifest = decode_manifest(manifest_data)
        except ManifestError as exc:
            problems.append(("files.manifest", f"{MANIFEST_FILE}: {exc}"))
    measured: dict[str, float | int | str] = {}
    if manifest is not None:
        pins = (
            (ARTIFACT_FILE, artifact, manifest.artifact_sha256, manifest.artifact_bytes),
            (BACKGROUND_FILE, background, manifest.explainer.background_sha256, None),
        )
        for label, data, sha, size in pins:
            if data is None:
                continue
            measured[f"{label}_bytes"] = len(data)
            if _sha(data) != sha:
                problems.append(
                    ("files.sha256", f"{label} hashes to {_sha(data)}, the manifest pins {sha}: not the bytes it names")
                )
            if size is not None and len(data) != size:
                problems.append(("files.bytes", f"{label} is {len(data)} bytes, the manifest says {size}"))
    if problems:
        return manifest, Check(
            "files", False, "; ".join(p for _, p in problems), rule=problems[0][0], measured=measured
        )
    return manifest, Check(
        "files",
        True,
        f"{MANIFEST_FILE} decodes; {ARTIFACT_FILE} and {BACKGROUND_FILE} are the bytes it pins (sha256 and size)",
        rule="files.sha256",
        measured=measured,
    )


def validate_directory(
    directory: Path,
    *,
    eager: torch.nn.Module | None = None,
    training_rows: Sequence[Mapping[str, Any]] | None = None,
    fresh_processes: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Validate a model directory (gateway.model_files); returns the report, never raises for
    a bad model. ``eager``: the module before export (the packager has it), compared with the
    exported program; ``training_rows``: the data it was trained on, checked against the
    schema; ``fresh_processes``: also score in two new processes (seconds: they import torch)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a model directory")
    validated_at = utc_now()
    manifest_data = _read(directory, MANIFEST_FILE)
    artifact = _read(directory, ARTIFACT_FILE)
    background_data = _read(directory, BACKGROUND_FILE)
    heldout_data = _read(directory, HELDOUT_FILE)
    key = _files_key(manifest_data, artifact, background_data, heldout_data)
    if fresh_processes and eager is None and training_rows is None and key in _PASSED:
        return _PASSED[key]
    report = _validate(
        directory,
        manifest_data,
        artifact,
        background_data,
        heldout_data,
        validated_at,
        eager,
        training_rows,
        fresh_processes,
        progress,
    )
    if report.passed and fresh_processes:
        _PASSED[key] = report
    return report


_PASSED: dict[str, ValidationReport] = {}
"""Full (fresh-process) reports that passed in this process, by the sha256 of the
directory's files: the registry re-validating what the packager just validated, or
registering the same bytes into a second store, reuses the report instead of
running every check again. Only passes, only in memory, only for the same bytes: a
report file a user could edit is never trusted."""


def _files_key(*files: bytes | None) -> str:
    digest = hashlib.sha256()
    for data in files:
        digest.update(b"absent" if data is None else b"sha256:" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _validate(
    directory: Path,
    manifest_data: bytes | None,
    artifact: bytes | None,
    background_data: bytes | None,
    heldout_data: bytes | None,
    validated_at: str,
    eager: torch.nn.Module | None,
    training_rows: Sequence[Mapping[str, Any]] | None,
    fresh_processes: bool,
    progress: Callable[[str], None] | None,
) -> ValidationReport:
    checks = _Checks(progress)

    manifest, files = _files_check(manifest_data, artifact, background_data)
    checks.add(files)
    program = None
    if artifact is None:
        checks.blocked("artifact_format", ["files"])
    else:
        program, format_check = inspect_artifact(artifact)
        checks.add(format_check)
    if program is None:
        for name in GRAPH_CHECKS:
            checks.blocked(name, ["artifact_format"])
    else:
        checks.add(*graph_checks(program, manifest))
    del program  # the runtime loads its own; the graph is not needed any more

    findings = _Findings()
    if manifest is None:
        for name in AFTER_MANIFEST:
            checks.blocked(name, ["files"])
    else:
        checks.add(*manifest_checks(manifest))
        _run_model_checks(
            checks,
            directory,
            manifest,
            artifact,
            background_data,
            heldout_data,
            eager,
            training_rows,
            fresh_processes,
            findings,
        )
    ordered = checks.ordered()
    return ValidationReport(
        format=FORMAT,
        model=_model_name(manifest_data, manifest),
        manifest_sha256=_sha(manifest_data),
        artifact_sha256=_sha(artifact),
        background_sha256=_sha(background_data),
        heldout_sha256=_sha(heldout_data) if heldout_data is not None else None,
        validated_at=validated_at,
        validator=f"verdict {project_version()}",
        environment=_environment(),
        checks=ordered,
        passed=all(check.passed for check in ordered),
        protected_among_reasons=findings.protected_among_reasons,
        reason_frequency=findings.reason_frequency,
        output_distribution=findings.output_distribution,
    )


def _run_model_checks(
    checks: _Checks,
    directory: Path,
    manifest: Manifest,
    artifact: bytes | None,
    background_data: bytes | None,
    heldout_data: bytes | None,
    eager: torch.nn.Module | None,
    training_rows: Sequence[Mapping[str, Any]] | None,
    fresh_processes: bool,
    findings: _Findings,
) -> None:
    background, check = background_check(manifest, background_data)
    checks.add(check)
    heldout, check = heldout_check(manifest, heldout_data)
    checks.add(check)
    checks.add(training_rows_check(manifest, training_rows))
    if checks.blocked("outputs", RUNS_THE_MODEL) or artifact is None:
        for name in AFTER_OUTPUTS:
            checks.blocked(name, ["outputs"])
        return
    probes = probe_rows(manifest, heldout, background)
    try:
        runtime = LoadedModel.load(manifest, artifact, "cpu")
    except Exception as exc:  # noqa: BLE001 - loading runs torch's deserialiser on user bytes; the report names it
        checks.add(
            Check(
                "outputs",
                False,
                f"the runtime could not load the artifact: {type(exc).__name__}: {str(exc)[:400]}",
                rule="runtime.load",
            )
        )
        for name in AFTER_OUTPUTS:
            checks.blocked(name, ["outputs"])
        return
    _, check, distribution = outputs_check(runtime, manifest, probes)
    checks.add(check)
    findings.output_distribution = distribution
    checks.add(eager_check(runtime, manifest, eager, heldout, probes))
    checks.add(batch_invariance_check(runtime, manifest, probes))
    if not fresh_processes:
        checks.add(
            Check(
                "fresh_processes",
                True,
                "skipped: fresh processes not requested (--no-fresh-processes)",
                status="skipped",
            )
        )
    else:
        checks.add(fresh_process_check(directory, runtime, probes, hashlib.sha256(artifact).hexdigest()))
    if checks.blocked("additivity", EXPLAINS) or background_data is None:
        checks.blocked("sampled_vs_exact", ["additivity"])
        checks.blocked("protected_among_reasons", ["additivity"])
        return
    explained, check = additivity_check(runtime, manifest, background_data, probes)
    checks.add(check)
    if explained is None:
        checks.blocked("sampled_vs_exact", ["additivity"])
        checks.blocked("protected_among_reasons", ["additivity"])
        return
    checks.add(exact_check(runtime, manifest, background_data, explained))
    if not checks.blocked("protected_among_reasons", ["manifest_reasons"]):
        summary, frequency, check = reasons_check(manifest, explained)
        checks.add(check)
        findings.protected_among_reasons = summary
        findings.reason_frequency = frequency

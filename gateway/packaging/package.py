"""Packaging: a spec, a model and its training data -> a validated model directory.

The steps, in order, each refusing what the next could not use: read the
spec and the data; pick the input columns and infer the schema; split
training and held-out rows by a hash of each row (the rule is recorded);
load the model (factory + weights, a module given in Python, or an already
exported program, screened and graph-checked by the validator's own code before
it runs), check its output contract and export it with a dynamic batch dimension; score the held-out rows and measure (AUC and log loss for a
probability, MAE and RMSE for a score); pin the explainer's background
(herded training rows) and budget; write ``manifest.json``, ``model.pt2``,
``background.json`` and ``heldout.json``; run the validator on the result.

Why the directory appears only at the end: a half-written or unvalidated
model directory at ``--out`` could be registered by mistake, and registering
is forever. Everything is written into a temporary folder beside ``--out``
and renamed into place once the validator passed; on any failure the
temporary folder is removed and ``--out`` is left as it was.

Why deterministic: the same spec, code, weights and data on the same
platform give the same artifact, background, held-out and manifest bytes
(no timestamps, a hash split, sorted categories, stack traces stripped), so a
model-risk validator can re-package and compare sha256s.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from verdict import __version__
from verdict.audit.canonical import canonical_bytes
from verdict.gateway import determinism, environment, explanation
from verdict.gateway.manifest import (
    CertificationSettings,
    DatasetProvenance,
    DecisionRule,
    ExplainerSettings,
    Manifest,
    ModelCard,
    OutputSpec,
    ReplayTolerance,
    RuntimeSettings,
    TrainingProvenance,
    WithheldAttribute,
    encode_manifest,
)
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, HELDOUT_FILE, MANIFEST_FILE, HeldOut
from verdict.gateway.packaging import export, tabular
from verdict.gateway.packaging.destination import check_destination, move_into_place, staging_folder
from verdict.gateway.packaging.errors import DataError, ModelError, PackagingError, SpecError, ValidationFailed
from verdict.gateway.packaging.provenance import UNCOMMITTED, git_commit, hash_sources
from verdict.gateway.packaging.spec import PackageSpec, load_spec
from verdict.gateway.reasons import DEFAULT_REASON_TEMPLATES
from verdict.gateway.schema import AttributeSpec, encode_rows
from verdict.gateway.validation import ValidationReport, validate_directory, write_reports

__all__ = ["HELDOUT_ROWS", "Packaged", "package_module", "package_spec_file"]

HELDOUT_ROWS = 256  # held-out rows kept in heldout.json for validation at registration
PACKAGED_BY = f"verdict models package {__version__}"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Packaged:
    """A packaged model directory. ``report``: the validator's report (None when
    packaging ran with ``validate=False``)."""

    directory: Path
    manifest: Manifest
    report: ValidationReport | None
    training_rows: int
    heldout_rows: int


@dataclass(frozen=True)
class _Data:
    """The training data, the optional separate held-out data, and their identity."""

    frame: pd.DataFrame
    name: str
    sha256: str
    heldout: pd.DataFrame | None = None
    heldout_name: str = ""
    heldout_sha256: str = ""


@dataclass(frozen=True)
class _Model:
    """What scores: an eager module (factory or given) or an already exported program."""

    module: nn.Module | None
    artifact: bytes | None
    program: torch.export.ExportedProgram | None
    sources: dict[str, Path]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _file_data(path: Path) -> tuple[pd.DataFrame, str]:
    frame = tabular.read_table(path)
    return frame, hashlib.sha256(path.read_bytes()).hexdigest()


def _frame_sha256(frame: pd.DataFrame) -> str:
    """A DataFrame has no file bytes: its identity is the sha256 of its CSV form
    (no index, LF line ends), which a validator can recompute from the same frame."""
    return hashlib.sha256(frame.to_csv(index=False, lineterminator="\n").encode()).hexdigest()


def _split(data: _Data, spec: PackageSpec) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, str]:
    """(training rows, held-out rows, their targets, the rule in words)."""
    d = spec.data
    y = tabular.target_values(data.frame, d.target, spec.output.kind, d.positive)
    if data.heldout is not None:
        rule = (
            f"held-out rows: every row of the separate file {data.heldout_name} (sha256 {data.heldout_sha256}, "
            f"{len(data.heldout)} rows); training rows: every row of {data.name}"
        )
        return data.frame, data.heldout, y, _held_targets(data.heldout, d.target, spec.output.kind, d.positive), rule
    mask, rule = tabular.holdout_mask(data.frame, d.id)
    if mask.all() or not mask.any():
        raise DataError(
            f"the hash split ({rule}) left {'no training' if mask.all() else 'no held-out'} rows out of "
            f"{len(mask)}: add rows, or give a separate held-out file (data.heldout)"
        )
    train, held = data.frame[~mask].reset_index(drop=True), data.frame[mask].reset_index(drop=True)
    return train, held, y[~mask], y[mask], rule


def _schema(data: _Data, spec: PackageSpec) -> tuple[tuple[AttributeSpec, ...], tabular.Columns]:
    d = spec.data
    exclude = [*d.exclude, *([d.id] if d.id else [])]
    columns = tabular.plan_columns(
        data.frame, target=d.target, inputs=d.inputs, exclude=exclude, id_column=d.id, overrides=spec.attributes
    )
    frames = [data.frame]
    if data.heldout is not None:
        missing = [c for c in (*columns.inputs, d.target) if c not in data.heldout.columns]
        if missing:
            raise DataError(f"data.heldout {data.heldout_name}: no column {', '.join(map(repr, missing))}")
        frames.append(data.heldout[[*columns.inputs, d.target]])
    # The ranges and category lists cover the held-out rows too: they are rows a client could send.
    combined = pd.concat([f[list(columns.inputs)] for f in frames], ignore_index=True)
    overrides = {name: o for name, o in spec.attributes.items() if name in columns.inputs}
    return tabular.infer_schema(combined, inputs=columns.inputs, overrides=overrides), columns


def _load_model(spec: PackageSpec, base_dir: Path, specs: tuple[AttributeSpec, ...], given: nn.Module | None) -> _Model:
    if given is not None:
        return _Model(given.eval(), None, None, export.module_sources(given))
    if spec.model.artifact is not None:
        buckets = (spec.runtime.score_bucket, spec.runtime.explain_bucket)
        data, program = export.load_artifact(base_dir / spec.model.artifact, attributes=len(specs), buckets=buckets)
        return _Model(None, data, program, {})
    assert spec.model.factory is not None  # load_spec / the Python API checked one of the two is there
    loaded = export.load_factory(spec.model.factory, base_dir, specs)
    if spec.model.weights is not None:
        export.load_weights(loaded.module, base_dir / spec.model.weights, factory=spec.model.factory, inputs=len(specs))
    return _Model(loaded.module.eval(), None, None, loaded.sources)


def _forward(model: _Model) -> Callable[[torch.Tensor], Any]:
    if model.module is not None:
        return model.module
    assert model.program is not None
    return model.program.module()


def _export(model: _Model, x_train: np.ndarray, bucket: int) -> bytes:
    """Check the output contract on real rows, then export (or take the given artifact)."""
    example = x_train[: max(2, min(bucket, len(x_train)))]
    if len(example) < 2:
        example = np.concatenate([example, example])
    what = "the model" if model.module is not None else "the exported program"
    if model.module is not None:
        export.check_output(export.run_eager(model.module, example), len(example), what)
        return export.export_program(model.module, example)
    try:
        with torch.inference_mode():
            result = _forward(model)(torch.from_numpy(np.ascontiguousarray(example)))
    except Exception as exc:
        raise ModelError(f"{what} failed on {len(example)} encoded rows: {type(exc).__name__}: {exc}") from exc
    export.check_output(result, len(example), what)
    assert model.artifact is not None
    return model.artifact


def _check_outputs(outputs: np.ndarray, kind: str) -> None:
    if not np.isfinite(outputs).all():
        bad = int((~np.isfinite(outputs)).sum())
        raise ModelError(f"the model gave {bad} non-finite outputs (NaN or infinity) on the held-out rows")
    if kind == "probability" and (outputs.min() < 0 or outputs.max() > 1):
        raise ModelError(
            f"outputs outside [0, 1] (min {outputs.min():.6g}, max {outputs.max():.6g}) for output.kind = "
            f'"probability": a probability model must end in a sigmoid; is it returning logits?'
        )


def _metrics(kind: str, y: np.ndarray, p: np.ndarray, threshold: float, n_train: int) -> dict[str, float]:
    metrics = {"training_rows": float(n_train), "heldout_rows": float(len(y))}
    p64 = p.astype(np.float64)
    if kind == "probability":
        if len(set(y.tolist())) == 2:  # AUC needs both outcomes among the held-out rows
            metrics["auc_heldout"] = float(roc_auc_score(y, p64))
        metrics["log_loss_heldout"] = float(log_loss(y, np.clip(p64, 1e-7, 1 - 1e-7), labels=[0.0, 1.0]))
        metrics["positive_rate_heldout"] = float(y.mean())
    else:
        error = p64 - y
        metrics["mae_heldout"] = float(np.abs(error).mean())
        metrics["rmse_heldout"] = float(np.sqrt((error**2).mean()))
    metrics["at_or_above_rate_heldout"] = float((p64 >= threshold).mean())
    return metrics


def _decision(spec: PackageSpec, y_train: np.ndarray) -> DecisionRule:
    """The spec's rule; a score model without one is split at the training median
    of its target ("high" at or above, "low" below), so its decisions still say
    which side of typical each score is."""
    if spec.decision is not None:
        d = spec.decision
        return DecisionRule(
            threshold=float(d.threshold), at_or_above=d.at_or_above, below=d.below, rationale=d.rationale
        )
    median = float(np.median(y_train))
    return DecisionRule(
        threshold=median,
        at_or_above="high",
        below="low",
        rationale=f"default for a score model without [decision]: the training median of {spec.data.target} ({median:g})",
    )


def _output(spec: PackageSpec) -> OutputSpec:
    target, kind = spec.data.target, spec.output.kind
    if kind == "probability":
        meaning = f"{target} = {spec.data.positive!r}" if spec.data.positive is not None else f"{target} = 1"
        name, description = f"probability_of_{target}", f"Probability that {meaning} (the adverse outcome)"
    else:
        name, description = target, f"Predicted {target}"
    return OutputSpec(name=spec.output.name or name, description=spec.output.description or description, space=kind)


def _reason_templates(spec: PackageSpec) -> dict[str, str]:
    if spec.output.kind == "probability":
        defaults = dict(DEFAULT_REASON_TEMPLATES)
    else:
        what = spec.data.target.replace("{", "").replace("}", "")
        defaults = {
            "increased_risk": f"{{label}}: {{value}} — raised the predicted {what}",
            "decreased_risk": f"{{label}}: {{value}} — lowered the predicted {what}",
        }
    return {**defaults, **(spec.explainer.reason_templates or {})}


class _Budgeted(NamedTuple):
    """The settings explanation.worst_case_rows reads, before the ExplainerSettings exist."""

    algorithm: str
    background_rows: int
    permutations: int
    certification: CertificationSettings | None


def _explainer(spec: PackageSpec, d: int, background: bytes) -> ExplainerSettings:
    e = spec.explainer
    rows = e.background_rows
    budget = explanation.default_budget(d, rows)
    algorithm: Literal["exact", "permutation", "certified"] = e.algorithm or budget.algorithm  # type: ignore[assignment]
    certification = None
    if algorithm == "exact":
        if d > explanation.MAX_EXACT_ATTRIBUTES:
            raise SpecError(
                f'explainer.algorithm = "exact" enumerates every coalition: at most '
                f"{explanation.MAX_EXACT_ATTRIBUTES} attributes, the model has {d}"
            )
        permutations = 0
    elif algorithm == "permutation":
        permutations = e.permutations or 1
    else:
        permutations = e.permutations or explanation.DEFAULT_FIRST_PAIRS
        default = explanation.DEFAULT_CERTIFICATION
        certification = msgspec.structs.replace(
            default,
            max_pairs=e.max_pairs if e.max_pairs is not None else max(default.max_pairs, permutations),
            exact_rows=e.exact_rows if e.exact_rows is not None else default.exact_rows,
        )
    needed = explanation.worst_case_rows(_Budgeted(algorithm, rows, permutations, certification), d)
    max_evaluations = e.max_evaluations if e.max_evaluations is not None else needed
    if max_evaluations < needed:
        raise SpecError(
            f"explainer.max_evaluations {max_evaluations} is below the {needed} model rows that {algorithm} "
            f"({permutations} permutation pairs) over {rows} background rows needs for {d} attributes"
        )
    settings = ExplainerSettings(
        algorithm=algorithm,
        output_space=spec.output.kind,
        background_sha256=hashlib.sha256(background).hexdigest(),
        background_rows=rows,
        background_summary=explanation.BACKGROUND_SUMMARY.format(rows=rows),
        max_evaluations=max_evaluations,
        permutations=permutations,
        seed_policy=explanation.SEED_POLICY,
        additivity_epsilon=e.additivity_epsilon,
        reason_templates=_reason_templates(spec),
        certification=certification,
    )
    # at most one reason per attribute: a model with 3 inputs gives at most 3 principal reasons
    top_reasons = e.top_reasons if e.top_reasons is not None else min(settings.top_reasons, d)
    return msgspec.structs.replace(settings, top_reasons=top_reasons)


def _background(specs: tuple[AttributeSpec, ...], rows: list[dict[str, Any]], x: np.ndarray, count: int) -> bytes:
    if len(rows) < count:
        raise DataError(
            f"explainer.background_rows is {count} but there are only {len(rows)} training rows: "
            f"lower it or bring more data"
        )
    chosen = explanation.summarise_background(specs, x, count)
    summary = explanation.BACKGROUND_SUMMARY.format(rows=count)
    return explanation.encode_background([rows[i] for i in chosen], [1] * count, summary)


def _withheld(spec: PackageSpec, columns: tabular.Columns) -> tuple[WithheldAttribute, ...]:
    out = []
    for name in columns.withheld:
        o = spec.attributes[name]
        label = o.label or tabular.default_label(name)
        out.append(WithheldAttribute(name=name, label=label, reason=o.reason, protected=o.protected is not False))
    return tuple(out)


def _provenance(
    spec: PackageSpec, data: _Data, model: _Model, split_rule: str, metrics: dict[str, float]
) -> TrainingProvenance:
    """Where the model came from: the user's source files (hashed; their commit when
    they are exactly one), the data (hashed), the split, the seed, the environment."""
    source_files, source_sha256 = hash_sources(model.sources)
    env = environment.capture(device="cpu", seed=spec.training.seed)
    return TrainingProvenance(
        code_commit=git_commit(sorted(model.sources.values())) if model.sources else UNCOMMITTED,
        source_sha256=source_sha256,
        dataset=DatasetProvenance(
            name=spec.data.name or data.name,
            title=spec.data.title,
            sha256=data.sha256,
            rows=len(data.frame),
            citation=spec.data.citation,
            licence=spec.data.licence,
        ),
        split=split_rule,
        seed=spec.training.seed,
        hyperparameters=dict(spec.training.hyperparameters),
        environment_sha256=environment.fingerprint_sha256(env),
        environment_summary=environment.summary(env),
        metrics=metrics,
        source_files=source_files,
        target=spec.data.target,
        packaged_by=PACKAGED_BY,
    )


def _write(directory: Path, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        (directory / name).write_bytes(content)


def _validate(
    staging: Path, model: _Model, training_rows: list[dict[str, Any]], fresh: bool, progress: Progress | None
) -> ValidationReport:
    report = validate_directory(
        staging, eager=model.module, training_rows=training_rows, fresh_processes=fresh, progress=progress
    )
    if not report.passed:
        failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
        raise ValidationFailed("validation refused the package: " + "; ".join(failed), report)
    write_reports(staging, report)
    return report


def _package(
    spec: PackageSpec,
    base_dir: Path,
    data: _Data,
    out: Path,
    *,
    module: nn.Module | None = None,
    force: bool = False,
    validate: bool = True,
    fresh_processes: bool = True,
    progress: Progress | None = None,
    protect: Path | None = None,
) -> Packaged:
    check_destination(out, force, protect)
    try:
        threads = determinism.enable(threads=spec.runtime.threads, seed=spec.training.seed).intra_op_threads
    except determinism.DeterminismError as exc:
        raise PackagingError(
            f"cannot package in deterministic mode: {exc}. In Python, import verdict.preprocessing before "
            f"training (it pins that mode), or package from a fresh process (verdict models package)"
        ) from None
    kind = spec.output.kind
    specs, columns = _schema(data, spec)
    train_frame, held_frame, y_train, y_held, split_rule = _split(data, spec)
    train_rows, held_rows = tabular.frame_rows(train_frame, specs), tabular.frame_rows(held_frame, specs)
    x_train, x_held = encode_rows(specs, train_rows), encode_rows(specs, held_rows)
    _say(
        progress,
        f"schema: {len(specs)} inputs, {len(columns.withheld)} withheld; {len(train_rows)} training rows, {len(held_rows)} held out",
    )

    _say(progress, "loading the model")
    model = _load_model(spec, base_dir, specs, module)
    _say(progress, "exporting with torch.export (dynamic batch)")
    bucket = spec.runtime.score_bucket
    artifact = _export(model, x_train, bucket)
    outputs = export.outputs_at_bucket(_forward(model), x_held, bucket)
    _check_outputs(outputs, kind)
    decision = _decision(spec, y_train)
    metrics = _metrics(kind, y_held, outputs, decision.threshold, len(train_rows))

    _say(progress, f"choosing {spec.explainer.background_rows} background rows (herding)")
    background = _background(specs, train_rows, x_train, spec.explainer.background_rows)
    manifest = Manifest(
        format="verdict.model/v1",
        name=spec.name,
        version=spec.version,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        artifact_bytes=len(artifact),
        inputs=specs,
        output=_output(spec),
        decision=decision,
        explainer=_explainer(spec, len(specs), background),
        tolerance=ReplayTolerance(absolute=spec.tolerance.absolute, relative=spec.tolerance.relative),
        runtime=RuntimeSettings(
            dtype="float32",
            score_bucket=bucket,
            explain_bucket=spec.runtime.explain_bucket,
            threads=threads,
        ),
        training=_provenance(spec, data, model, split_rule, metrics),
        description=spec.description,
        card=_card(spec),
        withheld=_withheld(spec, columns),
    )
    kept = min(HELDOUT_ROWS, len(held_rows))
    heldout = HeldOut(
        format="verdict.heldout/v1",
        rows=held_rows[:kept],
        targets=[float(v) for v in y_held[:kept]],
        eager_outputs=[float(v) for v in outputs[:kept]] if model.module is not None else None,
    )
    try:
        manifest_bytes = encode_manifest(manifest)
    except ValueError as exc:
        raise SpecError(f"the manifest would be refused: {exc}") from None
    files = {
        MANIFEST_FILE: manifest_bytes,
        ARTIFACT_FILE: artifact,
        BACKGROUND_FILE: background,
        HELDOUT_FILE: canonical_bytes(heldout),
    }
    staging = staging_folder(out)
    try:
        _write(staging, files)
        report = None
        if validate:
            _say(progress, "validating the model directory")
            report = _validate(staging, model, train_rows, fresh_processes, progress)
        move_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return Packaged(out, manifest, report, len(train_rows), len(held_rows))


def _held_targets(frame: pd.DataFrame, target: str, kind: str, positive: Any) -> np.ndarray:
    """Held-out targets: the same checks as training ones, except that a held-out
    set may hold one class (AUC is then not reported)."""
    tabular.check_values(frame, [target])
    if kind == "probability" and positive is not None:
        return (frame[target] == positive).to_numpy(dtype=np.float64)
    y = frame[target].to_numpy(dtype=np.float64)
    if kind == "probability" and not set(y.tolist()) <= {0.0, 1.0}:
        raise DataError(f'target "{target}" of the held-out rows must be 0/1')
    return y


def _card(spec: PackageSpec) -> ModelCard | None:
    c = spec.card
    if c is None:
        return None
    return ModelCard(
        purpose=c.purpose,
        owner=c.owner,
        intended_use=c.intended_use,
        limitations=c.limitations,
        risk_tier=c.risk_tier,
        regulations=tuple(c.regulations),
        contact=c.contact,
    )


def package_spec_file(
    spec_path: Path,
    out: Path,
    *,
    force: bool = False,
    validate: bool = True,
    fresh_processes: bool = True,
    progress: Progress | None = None,
) -> Packaged:
    """``verdict models package SPEC.toml --out DIR``: paths in the spec are relative to its folder."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    base_dir = spec_path.resolve().parent
    check_destination(Path(out), force, base_dir)
    assert spec.data.path is not None  # load_spec requires it
    data_path = base_dir / spec.data.path
    _say(progress, f"reading {spec.data.path}")
    frame, sha = _file_data(data_path)
    data = _Data(frame, data_path.stem, sha)
    if spec.data.heldout is not None:
        held_path = base_dir / spec.data.heldout
        held, held_sha = _file_data(held_path)
        data = _Data(frame, data_path.stem, sha, held, held_path.name, held_sha)
    return _package(
        spec,
        base_dir,
        data,
        Path(out),
        force=force,
        validate=validate,
        fresh_processes=fresh_processes,
        progress=progress,
        protect=base_dir,
    )


def package_module(
    module: nn.Module,
    data: pd.DataFrame | Path,
    spec: PackageSpec,
    out: Path,
    *,
    heldout: pd.DataFrame | Path | None = None,
    base_dir: Path | None = None,
    force: bool = False,
    validate: bool = True,
    fresh_processes: bool = True,
    progress: Progress | None = None,
) -> Packaged:
    """Package an ``nn.Module`` already in memory (the Python API): ``data`` a DataFrame
    or a CSV/Parquet path; ``spec`` as from a spec file, its ``[model]`` table unused."""
    frames: list[tuple[pd.DataFrame, str, str]] = []
    for source in (data, heldout):
        if source is None:
            continue
        if isinstance(source, pd.DataFrame):
            if len(source) == 0:
                raise DataError("the DataFrame has no rows")
            frames.append((source.reset_index(drop=True), "dataframe", _frame_sha256(source)))
        else:
            frame, sha = _file_data(Path(source))
            frames.append((frame, Path(source).stem, sha))
    (frame, name, sha), *rest = frames
    bundle = _Data(frame, name, sha)
    if rest:
        held, held_name, held_sha = rest[0]
        bundle = _Data(frame, name, sha, held, held_name, held_sha)
    if not isinstance(module, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(module).__name__}")
    return _package(
        spec,
        base_dir or Path.cwd(),
        bundle,
        Path(out),
        module=module,
        force=force,
        validate=validate,
        fresh_processes=fresh_processes,
        progress=progress,
    )

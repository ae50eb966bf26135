"""The package spec: what a user writes to package a model (``spec.toml``).

Why TOML decoded into strict structs: the spec decides what a bank will serve
and defend for years, so a typo must not be silently ignored (``wieghts`` for
``weights`` would package a model without its trained weights). Every table
forbids unknown keys and the message names the key as the user wrote it
(``spec.toml: unknown key "model.wieghts"``). Paths in the spec are relative
to the spec file. The Python API (``verdict.package``) builds the same
structure from keyword settings, so both routes share one set of rules.

Example (every table but ``[model]``, ``[data]`` and, for a probability,
``[decision]`` is optional)::

    name = "claims-triage"
    version = "1.0.0"
    [model]
    factory = "model:build"     # or: artifact = "model.pt2"
    weights = "weights.pt"
    [data]
    path = "claims.csv"
    target = "fraud"
    [output]
    kind = "probability"
    [decision]
    threshold = 0.3
    at_or_above = "refer"
    below = "approve"
    [attributes.sex]
    protected = true
    use = false
    reason = "protected characteristic: not a model input"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from verdict.gateway.manifest import NAME_RE, VERSION_RE
from verdict.gateway.packaging.errors import SpecError

__all__ = [
    "AttributeOverride",
    "CardSection",
    "DataSection",
    "DecisionSection",
    "ExplainerSection",
    "ModelSection",
    "OutputSection",
    "PackageSpec",
    "RuntimeSection",
    "ToleranceSection",
    "TrainingSection",
    "check_spec",
    "load_spec",
    "spec_from_mapping",
]

DEFAULT_BACKGROUND_ROWS = 24  # as the reference models (docs/explanations.md)


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ModelSection(_Table, frozen=True, kw_only=True):
    """``factory``: ``module:function`` returning an ``nn.Module`` (the module a
    file beside the spec, or importable); the function may take one argument,
    ``inputs``, the inferred attribute specs. ``weights``: a ``state_dict`` file
    for it (read with ``torch.load(weights_only=True)``). ``artifact``: an
    already exported ``torch.export`` program instead of a factory."""

    factory: str | None = None
    weights: str | None = None
    artifact: str | None = None


class DataSection(_Table, frozen=True, kw_only=True):
    """The training data. ``inputs``: the model's input columns in order (default:
    every column but ``target``, ``id`` and ``exclude``, in file order);
    ``id``: a row identifier, the hash split's key, never an input; ``heldout``: a
    separate held-out file (default: a hash split of ``path``); ``positive``: the
    target value meaning the adverse outcome when the target is not 0/1."""

    path: str | None = None
    target: str
    inputs: list[str] | None = None
    exclude: list[str] = []
    id: str | None = None
    heldout: str | None = None
    positive: str | int | bool | None = None
    name: str | None = None
    title: str = ""
    citation: str = ""
    licence: str = ""


class OutputSection(_Table, frozen=True, kw_only=True):
    """``probability``: of the adverse outcome, in [0, 1]; ``score``: any real value."""

    kind: Literal["probability", "score"] = "probability"
    name: str | None = None
    description: str | None = None


class DecisionSection(_Table, frozen=True, kw_only=True):
    threshold: float
    at_or_above: str
    below: str
    rationale: str = ""


class AttributeOverride(_Table, frozen=True, kw_only=True):
    """Per-attribute overrides of the inferred schema. ``use = false`` leaves the
    column out of the model's inputs; it is then listed in the manifest's
    ``withheld`` with ``reason`` (required)."""

    label: str | None = None
    unit: str | None = None
    kind: Literal["integer", "number", "category"] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    categories: list[str | int] | None = None
    category_labels: dict[str, str] | None = None
    protected: bool | None = None
    use: bool = True
    reason: str = ""


class ExplainerSection(_Table, frozen=True, kw_only=True):
    """Defaults: 24 herded background rows and ``explanation.default_budget``."""

    background_rows: int = DEFAULT_BACKGROUND_ROWS
    algorithm: Literal["exact", "permutation", "certified"] | None = None
    permutations: int | None = None
    max_pairs: int | None = None
    """"certified": antithetic pairs per background row at most (default: explanation.DEFAULT_CERTIFICATION)."""
    exact_rows: int | None = None
    """"certified": model rows exact enumeration may take when sampling could not certify (0: never)."""
    max_evaluations: int | None = None
    reason_templates: dict[str, str] | None = None
    top_reasons: int | None = None
    additivity_epsilon: float = 1e-6


class ToleranceSection(_Table, frozen=True, kw_only=True):
    """The replay tolerance, fixed at packaging: as the reference models by default."""

    absolute: float = 1e-6
    relative: float = 1e-5


class RuntimeSection(_Table, frozen=True, kw_only=True):
    score_bucket: int = 64
    explain_bucket: int = 4096
    threads: int = 1


class CardSection(_Table, frozen=True, kw_only=True):
    """The model card (``manifest.ModelCard``)."""

    purpose: str
    owner: str
    intended_use: str
    limitations: str
    risk_tier: str
    regulations: list[str] = []
    contact: str = ""


class TrainingSection(_Table, frozen=True, kw_only=True):
    """Recorded in the manifest's provenance: the seed packaging runs under (and that
    the user's training used) and the user's training hyperparameters."""

    seed: int = 0
    hyperparameters: dict[str, float | int | str | list[int]] = {}


class PackageSpec(_Table, frozen=True, kw_only=True):
    name: str
    version: str = "1.0.0"
    description: str = ""
    model: ModelSection = ModelSection()
    data: DataSection
    output: OutputSection = OutputSection()
    decision: DecisionSection | None = None
    attributes: dict[str, AttributeOverride] = {}
    explainer: ExplainerSection = ExplainerSection()
    tolerance: ToleranceSection = ToleranceSection()
    runtime: RuntimeSection = RuntimeSection()
    card: CardSection | None = None
    training: TrainingSection = TrainingSection()


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")
_AT = re.compile(r"(?P<what>.*) - at `\$(?P<at>[^`]*)`")


def _path(prefix: str, at: str | None, key: str | None = None) -> str:
    parts = [p for p in (prefix, (at or "").lstrip("."), key) if p]
    return ".".join(parts).replace(".[", "[")


def _message(exc: msgspec.ValidationError, where: str, prefix: str = "") -> str:
    """msgspec's message in the spec's own words: keys as dotted TOML paths."""
    text = str(exc)
    if match := _UNKNOWN.fullmatch(text):
        return f'{where}: unknown key "{_path(prefix, match["at"], match["key"])}"'
    if match := _MISSING.fullmatch(text):
        return f'{where}: missing required key "{_path(prefix, match["at"], match["key"])}"'
    if match := _AT.fullmatch(text):
        what = match["what"].replace("`", "")
        return f"{where}: {_path(prefix, match['at'])}: {what[0].lower()}{what[1:]}"
    return f"{where}: {prefix + ': ' if prefix else ''}{text.replace('`', '')}"


def spec_from_mapping(data: Mapping[str, Any], where: str = "package settings") -> PackageSpec:
    """Decode a spec from plain data (a parsed TOML document, or the Python API's
    settings). Attribute tables are decoded one by one so that an error names
    the attribute (msgspec would say ``attributes[...]``)."""
    data = dict(data)
    raw_attributes = data.pop("attributes", {})
    if not isinstance(raw_attributes, Mapping):
        raise SpecError(f"{where}: attributes must be a table of per-attribute tables")
    attributes: dict[str, AttributeOverride] = {}
    for name, table in raw_attributes.items():
        prefix = f"attributes.{name}"
        if isinstance(table, AttributeOverride):
            attributes[name] = table
            continue
        if not isinstance(table, Mapping):
            raise SpecError(f"{where}: {prefix} must be a table (e.g. [{prefix}] with label = ...)")
        try:
            attributes[name] = msgspec.convert(dict(table), AttributeOverride)
        except msgspec.ValidationError as exc:
            raise SpecError(_message(exc, where, prefix)) from None
    try:
        spec = msgspec.convert(data, PackageSpec)
    except msgspec.ValidationError as exc:
        raise SpecError(_message(exc, where)) from None
    return check_spec(msgspec.structs.replace(spec, attributes=attributes), where)


def load_spec(path: Path) -> PackageSpec:
    """Read and check a spec file (file paths in it stay relative to its folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path.name}: not valid TOML: {exc}") from None
    spec = spec_from_mapping(document, where=path.name)
    problems = []
    if spec.data.path is None:
        problems.append('missing required key "data.path" (the training data, CSV or Parquet)')
    if spec.model.factory is None and spec.model.artifact is None:
        problems.append('[model] needs factory = "module:function" or artifact = "model.pt2"')
    if problems:
        raise SpecError(f"{path.name}: " + "; ".join(problems))
    return spec


def check_spec(spec: PackageSpec, where: str) -> PackageSpec:
    """Rules the struct types cannot express; every problem at once."""
    problems = []
    if not NAME_RE.fullmatch(spec.name):
        problems.append(f"name {spec.name!r} must be lower case letters, digits, '.', '_' or '-' (at most 64)")
    if not VERSION_RE.fullmatch(spec.version):
        problems.append(f"version {spec.version!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    model = spec.model
    if model.factory is not None and model.artifact is not None:
        problems.append("model: give factory or artifact, not both")
    if model.weights is not None and model.factory is None:
        problems.append("model.weights needs model.factory (an exported artifact carries its own weights)")
    if model.factory is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", model.factory):
        problems.append(f"model.factory {model.factory!r} must be module:function, e.g. 'model:build'")
    decision = spec.decision
    if spec.output.kind == "probability":
        if decision is None:
            problems.append("a probability model needs a [decision] table (threshold, at_or_above, below)")
        elif not 0 < decision.threshold <= 1:
            problems.append(f"decision.threshold {decision.threshold!r} must be in (0, 1] for a probability")
    if decision is not None and (
        not decision.at_or_above or not decision.below or decision.at_or_above == decision.below
    ):
        problems.append("decision.at_or_above and decision.below must be two different non-empty labels")
    for name, override in spec.attributes.items():
        if not override.use and not override.reason.strip():
            problems.append(f"attributes.{name}: use = false needs a reason (recorded in the manifest)")
        if override.minimum is not None and override.maximum is not None and override.minimum > override.maximum:
            problems.append(f"attributes.{name}: minimum {override.minimum} is above maximum {override.maximum}")
    if spec.data.target in spec.attributes:
        problems.append(f"attributes.{spec.data.target}: the target column cannot be an attribute")
    if spec.explainer.background_rows < 1:
        problems.append("explainer.background_rows must be >= 1")
    for field in ("score_bucket", "explain_bucket"):
        if not 1 <= getattr(spec.runtime, field) <= 1 << 16:
            problems.append(f"runtime.{field} must be 1..65536")
    if spec.runtime.threads < 1:
        problems.append("runtime.threads must be >= 1")
    if spec.tolerance.absolute < 0 or spec.tolerance.relative < 0:
        problems.append("tolerance.absolute and tolerance.relative must be >= 0")
    if problems:
        raise SpecError(f"{where}: " + "; ".join(problems))
    return spec

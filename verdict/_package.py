"""Package your own model from Python: what ``verdict models package`` does.

Why two ways in: a team with a training pipeline in a notebook or a job has
the ``nn.Module`` and the DataFrame in memory and should not have to write a
factory module and a TOML file first; a team that wants the package to be
reproducible from files writes the spec (``verdict models package``'s
``spec.toml``) and passes its path. Both go through the same spec checks, the
same packager and the same validator. Importing this module imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from verdict._errors import VerdictError
from verdict.gateway.packaging.errors import PackagingError
from verdict.gateway.packaging.package import package_module, package_spec_file
from verdict.gateway.packaging.spec import spec_from_mapping

__all__ = ["package"]

_CALLER = "verdict.package"


def _spec_document(
    *,
    target: str | None,
    name: str | None,
    version: str | None,
    kind: str | None,
    description: str | None,
    decision: Mapping[str, Any] | None,
    attributes: Mapping[str, Mapping[str, Any]] | None,
    card: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The spec, as a TOML document would hold it, from the keyword settings."""
    document: dict[str, Any] = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in (settings or {}).items()
    }
    if "model" in document:
        raise VerdictError(f"{_CALLER}: settings['model'] is for spec files; pass the nn.Module itself")
    data = document.setdefault("data", {})
    if given := sorted({"path", "heldout"} & set(data)):
        raise VerdictError(
            f"{_CALLER}: pass the data (and held-out data) as arguments, not settings['data'][{given[0]!r}]"
        )
    if name is None or target is None:
        raise VerdictError(f"{_CALLER}: packaging an nn.Module needs name= and target=")
    document["name"] = name
    document["version"] = version or document.get("version", "1.0.0")
    if description is not None:
        document["description"] = description
    data["target"] = target
    output = document.setdefault("output", {})
    if kind is not None:
        output["kind"] = kind
    for key, value in (("decision", decision), ("attributes", attributes), ("card", card)):
        if value is not None:
            document[key] = value
    return document


def package(
    model: nn.Module | str | os.PathLike[str],
    data: pd.DataFrame | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    target: str | None = None,
    name: str | None = None,
    version: str | None = None,
    kind: str | None = None,
    description: str | None = None,
    decision: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    card: Mapping[str, Any] | None = None,
    heldout: pd.DataFrame | str | os.PathLike[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    force: bool = False,
    validate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Package a model and its training data into a validated model directory at ``out``
    (``manifest.json``, ``model.pt2``, ``background.json``, ``heldout.json`` and the
    validation report), ready for :meth:`ModelRegistry.register`; returns ``out``.

    ``model``: the path of a package spec (``spec.toml``; everything else then
    comes from the file), or an ``nn.Module`` that takes the encoded attributes
    (float32 ``[B, d]``, schema order, categories as indexes; see
    ``verdict.preprocessing``) and returns one float32 value per row (``[B]``).
    With a module: ``data`` (a DataFrame, or a CSV / Parquet path), ``target``
    and ``name`` are required; ``kind`` is ``"probability"`` (default; then
    ``decision={"threshold": ..., "at_or_above": ..., "below": ...}`` is required)
    or ``"score"``; ``attributes`` maps a column to its overrides (``label``,
    ``unit``, ``protected``, ``minimum``, ``maximum``, ``use``/``reason``...);
    ``card`` is the model card; ``settings`` holds any other spec table
    (``data``, ``output``, ``explainer``, ``tolerance``, ``runtime``, ``training``).

    Nothing is written at ``out`` unless packaging and validation succeed; an
    existing non-empty ``out`` is refused unless ``force=True``. Raises
    :class:`VerdictError` naming what to fix. Like the gateway, packaging
    switches this process to deterministic mode (deterministic algorithms,
    ``runtime.threads`` torch threads, seeded): the model is measured as it
    will be served."""
    try:
        if isinstance(model, nn.Module):
            if data is None:
                raise VerdictError(f"{_CALLER}: packaging an nn.Module needs data= (a DataFrame or a CSV/Parquet path)")
            document = _spec_document(
                target=target,
                name=name,
                version=version,
                kind=kind,
                description=description,
                decision=decision,
                attributes=attributes,
                card=card,
                settings=settings,
            )
            spec = spec_from_mapping(document, where=_CALLER)
            source = data if isinstance(data, pd.DataFrame) else Path(data)
            held = heldout if heldout is None or isinstance(heldout, pd.DataFrame) else Path(heldout)
            packaged = package_module(
                model, source, spec, Path(out), heldout=held, force=force, validate=validate, progress=progress
            )
        else:
            given = {
                "data": data,
                "target": target,
                "name": name,
                "version": version,
                "kind": kind,
                "description": description,
                "decision": decision,
                "attributes": attributes,
                "card": card,
                "heldout": heldout,
                "settings": settings,
            }
            if extra := sorted(key for key, value in given.items() if value is not None):
                raise VerdictError(
                    f"{_CALLER}: with a spec file everything comes from the file; drop {', '.join(extra)}"
                )
            packaged = package_spec_file(Path(model), Path(out), force=force, validate=validate, progress=progress)
    except PackagingError as exc:
        raise VerdictError(str(exc)) from None
    return packaged.directory

"""Bring-your-own models for tests: the claims-triage example run end to end, and
tiny packages (data, factory module, spec) to break one thing at a time.

Real things only: the example's own scripts run in fresh processes exactly as
its README says, the packager is the real one, the models are real torch
modules exported by torch.export.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verdict.gateway.packaging.package import Packaged, package_spec_file

__all__ = [
    "EXAMPLE",
    "SCORE_FACTORY",
    "TINY_FACTORY",
    "package_claims_example",
    "prepare_claims_example",
    "tiny_frame",
    "tiny_package",
    "toml_document",
]

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "examples" / "claims-triage"


def prepare_claims_example(directory: Path, *, rows: int = 4000) -> Path:
    """Copy the example into ``directory`` (made if missing), generate its data and train its weights with
    its own scripts (fresh processes, as a user runs them); returns the spec path."""
    shutil.copytree(
        EXAMPLE,
        directory,
        ignore=shutil.ignore_patterns("claims.csv", "weights.pt", "packaged", "__pycache__"),
        dirs_exist_ok=True,
    )
    for script, args in (("generate_data.py", ["--rows", str(rows)]), ("train.py", [])):
        done = subprocess.run(
            [sys.executable, script, *args], cwd=directory, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    return directory / "spec.toml"


def package_claims_example(
    directory: Path, *, validate: bool = True, rows: int = 4000, out_name: str = "packaged"
) -> Packaged:
    """The claims-triage example end to end in ``directory``: data, training, packaging
    (validated unless ``validate=False``). Returns the packaged model; its directory
    is ``directory / out_name``."""
    spec = prepare_claims_example(directory, rows=rows)
    return package_spec_file(spec, directory / out_name, validate=validate)


def tiny_frame(rows: int = 240, seed: int = 7) -> pd.DataFrame:
    """A small mixed table: two numbers, an integer, two categories, a 0/1 target
    (``bad``) and a real-valued one (``cost``), each learnable from the inputs."""
    rng = np.random.Generator(np.random.PCG64(seed))
    income = np.round(rng.lognormal(10.0, 0.5, rows), 2)
    debt_ratio = np.round(rng.uniform(0.0, 1.5, rows), 4)
    dependants = rng.integers(0, 5, rows)
    housing = rng.choice(["own", "rent", "family"], rows)
    channel = rng.choice(["branch", "online"], rows)
    logit = -1.0 + 1.8 * debt_ratio - 0.4 * np.log(income / 20000) + 0.3 * (housing == "rent")
    bad = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    cost = np.round(200 + 900 * debt_ratio + 40 * dependants + rng.normal(0, 20, rows), 2)
    return pd.DataFrame(
        {
            "income": income,
            "debt_ratio": debt_ratio,
            "dependants": dependants,
            "housing": housing,
            "channel": channel,
            "bad": bad,
            "cost": cost,
        }
    )


TINY_FACTORY = """\
import torch
from torch import nn

from verdict.preprocessing import TabularEncoder


class Tiny(nn.Module):
    def __init__(self, inputs):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = TabularEncoder(inputs, scaling={"income": "asinh"})
        self.linear = nn.Linear(self.encoder.width, 1)

    def forward(self, x):
        return torch.sigmoid(self.linear(self.encoder(x)).squeeze(-1))


def build(inputs):
    return Tiny(inputs)
"""

SCORE_FACTORY = """\
import torch
from torch import nn

from verdict.preprocessing import TabularEncoder


class Cost(nn.Module):
    def __init__(self, inputs):
        super().__init__()
        self.encoder = TabularEncoder(inputs)
        self.linear = nn.Linear(self.encoder.width, 1)

    def forward(self, x):
        return self.linear(self.encoder(x)).squeeze(-1)


def build(inputs):
    return Cost(inputs)
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_document(spec: dict[str, Any]) -> str:
    """A spec dict as TOML: top-level keys, then one table per dict (``attributes``
    as ``[attributes.NAME]`` tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for key, table in spec.items():
        if not isinstance(table, dict):
            continue
        if key == "attributes":
            for name, override in table.items():
                lines.append(f"\n[attributes.{name}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in override.items()]
            continue
        lines.append(f"\n[{key}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def tiny_package(
    directory: Path,
    *,
    frame: pd.DataFrame | None = None,
    factory: str | None = TINY_FACTORY,
    spec: dict[str, Any] | None = None,
    data_name: str = "data.csv",
) -> Path:
    """Write a tiny package into ``directory`` (the data, ``model.py`` unless
    ``factory`` is None, and ``spec.toml``: a probability of ``bad`` by default,
    ``spec`` entries replacing whole tables); returns the spec path."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = tiny_frame() if frame is None else frame
    path = directory / data_name
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, lineterminator="\n")
    if factory is not None:
        (directory / "model.py").write_text(textwrap.dedent(factory))
    document: dict[str, Any] = {
        "name": "tiny",
        "version": "1.0.0",
        "model": {"factory": "model:build"},
        "data": {"path": data_name, "target": "bad", "exclude": ["cost"]},
        "output": {"kind": "probability"},
        "decision": {"threshold": 0.5, "at_or_above": "decline", "below": "approve"},
        "explainer": {"background_rows": 8},
    }
    document.update(spec or {})
    document = {k: v for k, v in document.items() if v is not None}
    (directory / "spec.toml").write_text(toml_document(document))
    return directory / "spec.toml"

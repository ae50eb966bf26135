"""The reference models, packaged through the bring-your-own-model path with
their protected characteristics left out (version 2.0.0).

Why: the German credit reference model 1.0.0 takes all 20 attributes of the
Statlog data, among them personal status and sex, age and foreign-worker
status; 53 % of its declines cite one of them among the principal reasons. A
compliance officer cannot defend that. Version 2.0.0 is the same recipe
(architecture, optimiser, seed) trained on the other attributes, and it goes
through exactly the path a bank's own model takes (``verdict models
package``'s packager and validator), so the validation report counts the
protected attributes among reasons for both versions side by side
(docs/bring-your-own-model.md, "Protected attributes"). The protected columns
are named in the manifest's ``withheld`` list with the reason; 1.0.0 stays
registered and replayable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from verdict.gateway import determinism
from verdict.gateway.datasets import DATASETS, load_dataset
from verdict.gateway.packaging.package import Packaged, package_module
from verdict.gateway.packaging.spec import spec_from_mapping
from verdict.gateway.packaging.tabular import encode_frame, holdout_mask
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.training import RECIPES, fit_credit_model

__all__ = ["PROTECTED", "WITHHELD_VERSION", "package_reference"]

WITHHELD_VERSION = "2.0.0"
PROTECTED: dict[str, dict[str, str]] = {
    "german-credit": {
        "personal_status": "sex and marital status: protected characteristics (ECOA / Reg B; EU Charter Art. 21)",
        "age_years": "age: a protected characteristic (ECOA / Reg B, EU Charter Art. 21)",
        "foreign_worker": "national origin: a protected characteristic (ECOA / Reg B; EU Charter Art. 21)",
    },
    "taiwan-default": {
        "sex": "sex: a protected characteristic (EU Charter Art. 21)",
        "marriage": "marital status: a protected characteristic (ECOA / Reg B)",
        "age_years": "age: a protected characteristic (ECOA / Reg B, EU Charter Art. 21)",
    },
}
"""Per reference model: the attributes withheld from 2.0.0, and why."""
_ID = "row_key"
_TARGET = "adverse_outcome"


def _override(spec: AttributeSpec, withheld: dict[str, str]) -> dict[str, Any]:
    """The packager's attribute table for one column: the data set's own documented
    schema (label, unit, range, categories and their wording), so 2.0.0 words its
    reasons exactly as 1.0.0 did."""
    table: dict[str, Any] = {"label": spec.label, "kind": spec.kind}
    for key in ("unit", "minimum", "maximum", "category_labels"):
        if (value := getattr(spec, key)) is not None:
            table[key] = value
    if spec.categories is not None:
        table["categories"] = list(spec.categories)
    if spec.name in withheld:
        table.update(protected=True, use=False, reason=withheld[spec.name])
    return table


def package_reference(
    recipe_name: str,
    out: Path,
    *,
    version: str = WITHHELD_VERSION,
    force: bool = False,
    fresh_processes: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Packaged:
    """Train ``recipe_name``'s model without its protected attributes and package it
    (validated) into ``out``."""
    recipe = RECIPES[recipe_name]
    withheld = PROTECTED[recipe_name]
    determinism.enable(threads=1, seed=recipe.seed)
    data = load_dataset(recipe.dataset)
    frame = pd.DataFrame(data.rows)
    frame.insert(0, _ID, [key.decode("utf-8", "replace") for key in data.row_keys])
    frame[_TARGET] = data.labels.astype(np.int64)
    inputs = tuple(s for s in data.attributes if s.name not in withheld)
    train_rows = frame[~holdout_mask(frame, _ID)[0]]
    if progress:
        progress(f"training {recipe.model_name} {version} on {len(train_rows)} rows without {', '.join(withheld)}")
    x_train = torch.from_numpy(encode_frame(train_rows, inputs))
    y_train = torch.from_numpy(train_rows[_TARGET].to_numpy(dtype=np.float32))
    model = fit_credit_model(recipe, inputs, x_train, y_train)
    dataset = DATASETS[recipe.dataset]
    document = {
        "name": recipe.model_name,
        "version": version,
        "description": f"Reference MLP trained on {dataset.title}, protected characteristics withheld",
        "data": {
            "target": _TARGET,
            "id": _ID,
            "inputs": [s.name for s in inputs],
            "exclude": sorted(withheld),
            "name": dataset.name,
            "title": dataset.title,
            "citation": dataset.citation,
            "licence": dataset.licence,
        },
        "output": {"kind": "probability", "name": recipe.output.name, "description": recipe.output.description},
        "decision": {
            "threshold": recipe.decision.threshold,
            "at_or_above": recipe.decision.at_or_above,
            "below": recipe.decision.below,
            "rationale": recipe.decision.rationale,
        },
        "attributes": {s.name: _override(s, withheld) for s in data.attributes},
        "explainer": {"background_rows": recipe.background_rows},
        "training": {
            "seed": recipe.seed,
            "hyperparameters": recipe.hyperparameters(),
        },
        "card": {
            "purpose": "Reference credit-risk model: shows how Verdict serves, explains, audits and replays a decision",
            "owner": "Verdict maintainers",
            "intended_use": "demonstration and testing; not for decisions about real applicants",
            "limitations": f"trained on {dataset.title} ({len(frame)} historical applicants); "
            "a small, dated data set; no fairness assessment beyond leaving protected characteristics out "
            "(proxies such as housing or job may remain)",
            "risk_tier": "reference (not for production)",
            "regulations": ["EU AI Act Annex III 5(b)", "SR 26-2", "ECOA / Regulation B"],
        },
    }
    spec = spec_from_mapping(document, where=f"reference model {recipe.model_name}")
    return package_module(model, frame, spec, out, force=force, fresh_processes=fresh_processes, progress=progress)

"""Verdict: audited, explained, replayable decisions.

The installed distribution (``verdict-gateway``) has one top-level name,
``verdict``; the repository keeps its three folders, mapped to
``verdict.audit``, ``verdict.gateway`` and ``verdict.replay``.

The public Python API is what this module exports (docs/python-api.md);
everything under ``verdict.audit``, ``verdict.gateway`` and ``verdict.replay``
is private machinery that may change. ``import verdict`` stays light: the
names whose modules import torch (the gateway, the registry) are loaded on
first use (PEP 562), so ``verdict --version`` and a verifying examiner never
pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = [
    "Decision",
    "DecisionErased",
    "DecisionRefused",
    "Finding",
    "Gateway",
    "LoggedDecision",
    "ModelRegistry",
    "ModelVersion",
    "Promotion",
    "Reason",
    "Receipt",
    "RecordNotVerified",
    "ReplayVerdict",
    "Store",
    "StoreUnavailable",
    "TrustPolicy",
    "TrustPolicyRequired",
    "VerdictError",
    "Verification",
    "__version__",
    "load_trust_policy",
    "open_store",
    "package",
    "sample_applicants",
    "train_reference_model",
    "trust_policy",
]

_WHERE = {
    "Decision": "verdict._types",
    "Finding": "verdict._types",
    "LoggedDecision": "verdict._types",
    "ModelVersion": "verdict._types",
    "Promotion": "verdict._types",
    "Reason": "verdict._types",
    "Receipt": "verdict._types",
    "ReplayVerdict": "verdict._types",
    "Verification": "verdict._types",
    "DecisionErased": "verdict._errors",
    "DecisionRefused": "verdict._errors",
    "RecordNotVerified": "verdict._errors",
    "StoreUnavailable": "verdict._errors",
    "TrustPolicyRequired": "verdict._errors",
    "VerdictError": "verdict._errors",
    "Store": "verdict._store",
    "open_store": "verdict._store",
    "TrustPolicy": "verdict.audit.trust",
    "load_trust_policy": "verdict._trust",
    "trust_policy": "verdict._trust",
    "Gateway": "verdict._gateway",  # torch
    "ModelRegistry": "verdict._models",  # torch
    "package": "verdict._package",  # torch
    "sample_applicants": "verdict._models",
    "train_reference_model": "verdict._models",
}

if TYPE_CHECKING:
    from verdict._errors import (
        DecisionErased,
        DecisionRefused,
        RecordNotVerified,
        StoreUnavailable,
        TrustPolicyRequired,
        VerdictError,
    )
    from verdict._gateway import Gateway
    from verdict._models import ModelRegistry, sample_applicants, train_reference_model
    from verdict._package import package
    from verdict._store import Store, open_store
    from verdict._trust import load_trust_policy, trust_policy
    from verdict._types import (
        Decision,
        Finding,
        LoggedDecision,
        ModelVersion,
        Promotion,
        Reason,
        Receipt,
        ReplayVerdict,
        Verification,
    )
    from verdict.audit.trust import TrustPolicy


def __getattr__(name: str) -> Any:
    """PEP 562: import a public name's module on first use, then keep the name here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'verdict' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

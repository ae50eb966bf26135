"""``verdict models validate``: refuse any model that cannot be served deterministically.

Why a gate of its own: registration stores a model version for good (the
registry is write-once), and a manifest that decodes says nothing about
whether its artifact is an exported program, whether its graph is batch
invariant, random or float64 inside, whether its outputs are probabilities,
or whether its explanations add up. :func:`validate_directory` runs every such
check on a model directory (gateway.model_files) and returns a
:class:`ValidationReport`; :func:`require_valid` turns a refusal into
:class:`ValidationRefused`. The packager validates what it writes; the
registry validates again before it writes anything and keeps the report as
evidence.

Modules: ``report`` (the document), ``artifact`` (format, opened without
unpickling), ``graph`` (the graph contract), ``manifest_rules``, ``rows``
(background, held-out, training and probe rows), ``behaviour`` (outputs,
export vs eager, batch invariance), ``fresh`` and ``probe`` (fresh
processes), ``explaining`` (additivity, exact comparison, reasons),
``validator`` (the order and dependencies), ``render`` (text and HTML),
``quiet`` (torch's own stderr chatter held back while a model loads).
"""

from __future__ import annotations

from verdict.gateway.validation.render import STATUS_WORDS, render_html, render_text, write_reports
from verdict.gateway.validation.report import (
    Check,
    OutputDistribution,
    ProtectedAmongReasons,
    ReasonFrequency,
    ValidationRefused,
    ValidationReport,
    decode_report,
    encode_report,
    require_valid,
)
from verdict.gateway.validation.validator import CHECKS, validate_directory

__all__ = [
    "CHECKS",
    "STATUS_WORDS",
    "Check",
    "OutputDistribution",
    "ProtectedAmongReasons",
    "ReasonFrequency",
    "ValidationRefused",
    "ValidationReport",
    "decode_report",
    "encode_report",
    "render_html",
    "render_text",
    "require_valid",
    "validate_directory",
    "write_reports",
]

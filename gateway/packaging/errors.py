"""The failure family of packaging: one base class, a few kinds that a caller
(the CLI, the Python API, a test) tells apart.

Why a family of ``ValueError``: every one of them is something wrong with what
the user brought (the spec, the data, the model), never a fault of Verdict; the
message names the key, column, factory or rule and the offending value, so it
can be fixed without reading our code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataError", "ModelError", "PackagingError", "SpecError", "ValidationFailed"]


class PackagingError(ValueError):
    """Nothing was packaged; the message says what to fix."""


class SpecError(PackagingError):
    """The package spec (TOML file or keyword settings) is malformed or inconsistent."""


class DataError(PackagingError):
    """The training or held-out data cannot make a model directory (missing column, NaN, one class...)."""


class ModelError(PackagingError):
    """The model cannot be loaded, run or exported as Verdict serves models."""


class ValidationFailed(PackagingError):
    """The packaged directory did not pass ``validate_directory``; ``report`` has every check.
    Nothing was written at the destination."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report

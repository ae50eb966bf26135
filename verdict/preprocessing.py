"""Preprocessing for bring-your-own models (docs/python-api.md, "Package your own model").

Torch modules that turn the attributes, as Verdict's runtime encodes them
(float32 ``[batch, d]`` in schema order, each category as the index of its
value), into features, inside the model, so that they are exported with it
and replayed exactly: :class:`OneHot`, :class:`Standardise`, :class:`Asinh`,
:class:`Log1p`, and :class:`TabularEncoder`, which composes them and fits
itself to training data. And the helpers a training script needs to see its
data as the packager will: :func:`infer_schema` (the very inference
``verdict models package`` runs), :func:`encode_frame` (the runtime's
encoding of a DataFrame) and :func:`heldout_mask` (the packager's held-out
rows, to train without them).

Importing this module imports torch and pandas, and pins Intel MKL's
reproducible mode (MKL fixes it at its first matrix product): import it before
your training script multiplies anything, so that the model trains, and is
measured when packaged, in the mode Verdict serves in.
"""

from __future__ import annotations

from verdict.gateway.preprocessing import (
    Asinh,
    Log1p,
    OneHot,
    Scaling,
    Standardise,
    TabularEncoder,
    encode_frame,
    heldout_mask,
    infer_schema,
)
from verdict.gateway.schema import AttributeSpec

__all__ = [
    "Asinh",
    "AttributeSpec",
    "Log1p",
    "OneHot",
    "Scaling",
    "Standardise",
    "TabularEncoder",
    "encode_frame",
    "heldout_mask",
    "infer_schema",
]

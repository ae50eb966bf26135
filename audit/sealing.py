"""Sealing a decision's personal data, and opening it again (spec §3a).

Why: records are written once and kept for years, but personal data must
become unreadable on erasure or at the end of retention. A sealed decision
keeps everything the trail proves about the model in clear and holds the
personal fields (attributes, subject id, reason values and texts) only as
AES-256-GCM ciphertext under the subject's data key; destroying that key
erases them everywhere while the chain, signatures and checkpoints, which
cover the ciphertext, still verify.

Two functions and one error family: :func:`seal` turns the clear (v1-shaped)
decision the gateway computed into the sealed body it stores;
:func:`open_sealed` turns a stored sealed body back into that clear decision,
so lookups, explanations and replay work on one shape. The key material
comes from the data keyring (:mod:`audit.data_keys`); nothing here stores
or fetches keys.
"""

from __future__ import annotations

import base64
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from verdict.audit.canonical import canonical_bytes
from verdict.audit.records import DecisionBody, PlainInputs, Reason, Scalar, SealedInputs

__all__ = ["AAD_PREFIX", "DATA_KEY_BYTES", "SealError", "SealedPlaintext", "aad_for", "open_sealed", "seal"]

AAD_PREFIX = b"verdict.audit/v2 sealed\x00"
"""Associated data = this prefix || the request id (UTF-8): binds an envelope to its decision."""
DATA_KEY_BYTES = 32
"""AES-256."""
_NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed decision does not open (wrong key, or its ciphertext was altered), or a
    decision cannot be sealed; the message names the request."""


class _ReasonText(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str
    value: Scalar


class SealedPlaintext(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a sealed envelope holds (spec §3a "sealed plaintext")."""

    attributes: dict[str, Scalar]
    reasons: list[_ReasonText]
    subject_id: str | None = None


_plaintext_decoder = msgspec.json.Decoder(SealedPlaintext)


def aad_for(request_id: str) -> bytes:
    return AAD_PREFIX + request_id.encode("utf-8")


def seal(body: DecisionBody, key: bytes, key_ref: str, *, nonce: bytes | None = None) -> DecisionBody:
    """The sealed (v2) form of a clear decision ``body`` under data key ``key``.

    ``nonce``: fixed only for golden vectors; otherwise 12 random bytes (a nonce is
    never reused with a key: 2^-96 per pair of records of one subject)."""
    if not isinstance(body.inputs, PlainInputs):
        raise SealError(f"decision {body.request_id!r}: only plain inputs can be sealed")
    if len(key) != DATA_KEY_BYTES:
        raise SealError(f"decision {body.request_id!r}: a data key is {DATA_KEY_BYTES} bytes")
    reasons = []
    for reason in body.reasons:
        if reason.value is None or reason.text is None:
            raise SealError(f"decision {body.request_id!r}: a reason without value or text cannot be sealed")
        reasons.append(_ReasonText(text=reason.text, value=reason.value))
    plaintext = canonical_bytes(SealedPlaintext(body.inputs.attributes, reasons, body.subject_id))
    nonce = os.urandom(_NONCE_BYTES) if nonce is None else nonce
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad_for(body.request_id))
    return msgspec.structs.replace(
        body,
        inputs=SealedInputs(
            key_ref=key_ref,
            nonce=base64.b64encode(nonce).decode(),
            ciphertext=base64.b64encode(ciphertext).decode(),
            algorithm="AES-256-GCM",
        ),
        subject_id=None,
        reasons=[Reason(attribute=r.attribute, label=r.label, direction=r.direction) for r in body.reasons],
    )


def open_sealed(body: DecisionBody, key: bytes) -> DecisionBody:
    """The clear (v1-shaped) decision a sealed ``body`` was made from; SealError if
    ``key`` does not open it (the wrong key, or a ciphertext altered after sealing)."""
    sealed = body.inputs
    if not isinstance(sealed, SealedInputs):
        raise SealError(f"decision {body.request_id!r} is not sealed")
    try:
        plaintext = AESGCM(key).decrypt(
            base64.b64decode(sealed.nonce), base64.b64decode(sealed.ciphertext), aad_for(body.request_id)
        )
    except (InvalidTag, ValueError):
        raise SealError(
            f"decision {body.request_id!r}: the sealed personal data does not authenticate under "
            f"{sealed.key_ref} (altered after sealing, or another key)"
        ) from None
    try:
        opened = _plaintext_decoder.decode(plaintext)
    except msgspec.MsgspecError as exc:
        raise SealError(f"decision {body.request_id!r}: the sealed plaintext is not well formed: {exc}") from None
    if len(opened.reasons) != len(body.reasons):
        raise SealError(f"decision {body.request_id!r}: the sealed reasons do not match the record's")
    return msgspec.structs.replace(
        body,
        inputs=PlainInputs(attributes=opened.attributes),
        subject_id=opened.subject_id,
        reasons=[
            Reason(attribute=r.attribute, label=r.label, direction=r.direction, value=o.value, text=o.text)
            for r, o in zip(body.reasons, opened.reasons, strict=True)
        ],
    )

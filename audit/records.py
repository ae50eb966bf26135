"""The audit record format, ``verdict.audit/v1`` (specified in docs/audit-format.md).

Why this shape: every record shares one header (chain, position, link to the
previous record, time, signing key) and carries one tagged body (``kind``):
a ``decision`` holds everything needed to explain and replay that decision
years later; ``genesis``, ``key_rotation``, ``access`` and ``evidence`` make the
chain self-describing (who signed, who looked, what was tested) so a verifier
needs nothing but the store; ``registry`` records what the model registry did
(registrations, promotions, status changes), naming the objects by hash.

Rules that keep the bytes stable:

* every Struct omits fields left at their default, so an absent optional
  field is *absent* (never ``null``) and adding an optional field later does
  not change the bytes of records that do not use it;
* no field is ever renamed or retyped within ``verdict.audit/v1``: a change of
  meaning is a new format string;
* the hash and the signature cover the record exactly as stored, so the
  ``inputs`` section can later hold an encrypted envelope (``encrypted``)
  instead of plain attributes and still be covered.

The golden vectors in ``tests/audit/golden`` pin the canonical bytes, hashes
and signatures of fixed records; any drift fails the tests.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import math
import re
from typing import Annotated, Literal

import msgspec

from verdict.audit.canonical import canonical_bytes

__all__ = [
    "FORMAT",
    "FORMAT_V2",
    "GENESIS_PREV_HASH",
    "NOT_EXPLAINED",
    "AccessBody",
    "Body",
    "DecisionBody",
    "EncryptedInputs",
    "ErasureBody",
    "EvidenceBody",
    "Explanation",
    "Fidelity",
    "GenesisBody",
    "Inputs",
    "KeyDocument",
    "KeyRotationBody",
    "LegalHoldBody",
    "ModelRef",
    "ModelVersion",
    "PlainInputs",
    "Reason",
    "Record",
    "RecordError",
    "RecordHeader",
    "RecordV2",
    "RegistryBody",
    "Runtime",
    "SealedInputs",
    "body_kind",
    "decode_body",
    "decode_header",
    "decode_record",
    "encode_line",
    "explain_bucket",
    "format_for",
    "format_time",
    "is_sealed",
    "iter_lines",
    "new_record",
    "parse_time",
    "record_bytes",
    "record_hash",
    "split_line",
    "utc_now",
]

FORMAT = "verdict.audit/v1"
FORMAT_V2 = "verdict.audit/v2"
"""Records holding sealed personal data, erasures and legal holds (spec §3a)."""
GENESIS_PREV_HASH = "0" * 64
"""``prev_hash`` of the genesis record (there is no previous record)."""
NOT_EXPLAINED = "none"
"""``explanation.method`` of a decision made without an explanation (spec §3 ``decision``):
written by the gateway, read by lookups and replay, so it is defined once, here."""

Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^ed25519:[0-9a-f]{16}$")]
DataKeyRef = Annotated[str, msgspec.Meta(pattern=r"^dk_[0-9a-f]{32}$")]
"""A data key's reference (spec §3a): random, never derived from the subject."""
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
ChainId = Annotated[str, msgspec.Meta(pattern=r"^(?!\.{1,2}$)[A-Za-z0-9_.\-]{1,64}$")]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Scalar = int | float | str


class RecordError(ValueError):
    """A record (or a stored line) does not match the format; the message says where."""


class _Struct(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base for every part of a record: immutable, strict, defaults omitted.

    Subclasses inherit these options; they repeat ``frozen=True`` only because type
    checkers (dataclass_transform) do not inherit it and would see a mutable subclass."""


# --- key documents -------------------------------------------------------------------


class KeyDocument(_Struct, frozen=True, tag_field="algorithm", tag="ed25519"):
    """A public signing key as published in the store (``keys/...json``) and
    embedded in genesis and key-rotation records.

    ``key_id`` = "ed25519:" + first 16 hex digits of SHA-256(raw 32-byte key);
    ``public_key`` = standard base64 of the raw key; ``vkey`` = the C2SP
    signed-note verifier key (name = key_id) that checkpoints are checked with.
    ``algorithm`` ("ed25519") is the Struct's tag: always encoded, checked on decode.
    """

    key_id: KeyId
    public_key: str
    created: Timestamp
    vkey: str


# --- decision parts ------------------------------------------------------------------


class ModelRef(_Struct, frozen=True):
    name: str
    version: str
    sha256: Hex64
    """SHA-256 of the model artifact bytes (the registry blob)."""


class Runtime(_Struct, frozen=True):
    device: str
    """e.g. "cpu", "cuda:0"."""
    dtype: str
    """e.g. "float32"."""
    bucket: int
    """The fixed batch shape the request was scored at (batch invariance)."""
    threads: int
    explain_bucket: int | None = None
    """The fixed batch shape the explanation's model evaluations ran at. Absent on
    records made before it was a field (the bucket was ``explanation.budget["bucket"]``)
    and on decisions without an explanation; see :func:`explain_bucket`."""


class PlainInputs(_Struct, frozen=True, tag_field="kind", tag="plain"):
    """The applicant's attributes as the model received them (by attribute name)."""

    attributes: dict[str, Scalar]


class EncryptedInputs(_Struct, frozen=True, tag_field="kind", tag="encrypted"):
    """Reserved: attributes sealed with AES-256-GCM under a managed key.

    ``ciphertext`` is the AES-GCM output (ciphertext || 16-byte tag) of the
    canonical JSON of the attributes object; ``nonce`` (12 bytes) and
    ``ciphertext`` are standard base64; ``aad`` is the additional
    authenticated data as text. The record hash and signature cover these
    stored fields, so crypto-shredding the key later does not break the chain.
    """

    key_ref: str
    nonce: str
    ciphertext: str
    aad: str
    algorithm: Literal["AES-256-GCM"]


class SealedInputs(_Struct, frozen=True, tag_field="kind", tag="sealed"):
    """The decision's personal data sealed under its subject's data key (spec §3a).

    ``ciphertext`` is AES-256-GCM (ciphertext || 16-byte tag) of the sealed
    plaintext (attributes, reason values and texts, subject id), bound to the
    request id by the associated data; :mod:`audit.sealing` seals and opens it.
    Only in ``verdict.audit/v2`` records."""

    key_ref: DataKeyRef
    nonce: str
    ciphertext: str
    algorithm: Literal["AES-256-GCM"]

    def __post_init__(self) -> None:
        if len(_b64(self.nonce, "nonce")) != 12:
            raise ValueError("a sealed nonce is 12 bytes")
        if len(_b64(self.ciphertext, "ciphertext")) < 16:
            raise ValueError("a sealed ciphertext holds at least its 16-byte tag")


def _b64(text: str, name: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not standard base64") from None
    if base64.b64encode(data).decode() != text:
        raise ValueError(f"{name} is not canonical base64")
    return data


Inputs = PlainInputs | EncryptedInputs | SealedInputs


class Fidelity(_Struct, frozen=True):
    """How faithful an explanation is (spec §3 ``decision``, "Fidelity"): the record's copy of
    the explainer's ``gateway.fidelity.Fidelity``, checked for shape only.

    Why a record carries it: an applicant is told a reason *list*; ``certified`` says that
    list is the one the exact Shapley values give (exact enumeration, or no value within
    ``error_bounds`` could change it: a statistical certificate at ``z`` standard errors),
    and replay must reproduce it like any other logged value."""

    certified: bool
    """Both reason lists (principal and top reasons) equal those of the exact values."""
    evaluations: int
    """Model rows evaluated for this explanation, f(x) included."""
    pairs: int
    """Antithetic pairs: per background row ("certified"), in all ("permutation"); 0 for exact."""
    error_bounds: dict[str, float] = {}
    """Per attribute: ``z`` standard errors of its contribution (0 where exact); absent = not estimated."""
    z: float | None = None
    """Standard errors per bound; absent when nothing was estimated."""

    def __post_init__(self) -> None:
        if self.evaluations < 1:
            raise ValueError("fidelity.evaluations counts model rows, f(x) included: at least 1")
        if self.pairs < 0:
            raise ValueError("fidelity.pairs cannot be negative")
        for name, bound in self.error_bounds.items():
            if not (math.isfinite(bound) and bound >= 0.0):
                raise ValueError(f"fidelity.error_bounds[{name!r}] must be a finite number >= 0, got {bound!r}")
        if self.z is not None and not (math.isfinite(self.z) and self.z > 0.0):
            raise ValueError(f"fidelity.z must be a finite number > 0, got {self.z!r}")


class Explanation(_Struct, frozen=True):
    method: str
    """e.g. "shap.PermutationExplainer"."""
    output_space: str
    """What the contributions add up to, e.g. "probability" or "logit"."""
    base_value: float
    contributions: dict[str, float]
    """Per applicant attribute (not per one-hot column)."""
    seed: int
    budget: dict[str, Scalar] = {}
    """Explainer cost settings and usage, e.g. {"evaluations": 913}. Records made before
    ``runtime.explain_bucket`` existed also hold the explain bucket here, as "bucket"."""
    additivity_error: float | None = None
    """|base_value + sum(contributions) - output| as measured at decision time."""
    fidelity: Fidelity | None = None
    """Error bounds and whether the reasons are certified; on every decision explained since
    it became a field, absent on older records and on decisions not explained."""

    def __post_init__(self) -> None:
        if self.fidelity is not None and (extra := sorted(set(self.fidelity.error_bounds) - set(self.contributions))):
            raise ValueError(f"fidelity.error_bounds names attributes without a contribution: {', '.join(extra)}")


class Reason(_Struct, frozen=True):
    attribute: str
    label: str
    """Human label of the attribute, e.g. "Duration of credit"."""
    direction: str
    """e.g. "raises_risk" or "lowers_risk"."""
    value: Scalar | None = None
    """The applicant's value of the attribute (required in v1; sealed, so absent, in v2)."""
    text: str | None = None
    """The sentence shown to the applicant (required in v1; sealed, so absent, in v2)."""


# --- bodies --------------------------------------------------------------------------


class GenesisBody(_Struct, frozen=True, tag_field="kind", tag="genesis"):
    """First record of every chain: names the chain and its first signing key."""

    chain_id: ChainId
    public_key: KeyDocument
    origin: str
    """Checkpoint origin line for this chain, e.g. "verdict/gateway-0"."""
    created_by: str


class DecisionBody(_Struct, frozen=True, tag_field="kind", tag="decision"):
    request_id: str
    request_sha256: Hex64
    """SHA-256 of the canonical JSON of the client's request body."""
    received_at: Timestamp
    decided_at: Timestamp
    model: ModelRef
    environment_sha256: Hex64
    runtime: Runtime
    inputs: Inputs
    score: float
    decision: str
    explanation: Explanation
    reasons: list[Reason] = []
    subject_id: str | None = None
    manifest_sha256: Hex64 | None = None
    """SHA-256 of the stored manifest object ``models/manifests/<name>/<version>.json``
    (its bytes as stored). Optional: records written before it existed stay valid."""


def explain_bucket(body: DecisionBody, default: int | None = None) -> int | None:
    """The explain bucket a decision's explanation was computed at (spec §3, "Explain bucket").

    ``runtime.explain_bucket`` where the record has it; on records written before that
    field existed, the legacy ``explanation.budget["bucket"]``; otherwise ``default``
    (the caller passes the manifest's ``runtime.explain_bucket``: this module reads no
    manifests). Why one function: the gateway (lookups) and replay must read the same
    bucket off the same record, or a replay would explain at another shape than the
    decision it judges."""
    if body.runtime.explain_bucket is not None:
        return body.runtime.explain_bucket
    legacy = body.explanation.budget.get("bucket")
    if isinstance(legacy, int) and not isinstance(legacy, bool):
        return legacy
    return default


class KeyRotationBody(_Struct, frozen=True, tag_field="kind", tag="key_rotation"):
    """Announces the next signing key; signed by the key it replaces.

    Records after this one must be signed by ``new_key``; the old key is not
    valid for them.
    """

    new_key: KeyDocument
    reason: str | None = None


class AccessBody(_Struct, frozen=True, tag_field="kind", tag="access"):
    """Someone looked at, explained or replayed a logged decision."""

    action: str
    """"lookup", "explanation", "replay", ..."""
    actor_key_id: str
    """Id of the API key that made the call (never the secret)."""
    target_request_id: str
    accessed_at: Timestamp
    purpose: str | None = None


class EvidenceBody(_Struct, frozen=True, tag_field="kind", tag="evidence"):
    """A pointer to an evidence document stored content-addressed."""

    evidence_kind: str
    """e.g. "replay_report", "immutability_test"."""
    object_key: str
    """Store key of the document, ``evidence/sha256/<sha256>``."""
    sha256: Hex64
    summary: str


class ModelVersion(_Struct, frozen=True):
    name: str
    version: str


_ALIAS_KEY = re.compile(r"models/aliases/(?P<name>[^/]+)/(?P<alias>[^/]+)/[0-9]{8}\.json")
_STATUS_KEY = re.compile(r"models/status/(?P<name>[^/]+)/(?P<version>[^/]+)/[0-9]{8}\.json")
STATUS_RE = re.compile(r"[a-z][a-z_]{0,31}")
"""A status word (spec §3 "Status vocabulary")."""
_EVENT_FIELDS = {
    "registration": frozenset({"artifact_sha256", "background_sha256"}),
    "promotion": frozenset({"alias", "alias_key", "alias_sha256"}),
    "status": frozenset({"status"}),
}
"""Per event: the optional fields it must have; it may have no other of _EVENT_ONLY
except those _EVENT_MAY_HAVE allows it."""
_EVENT_MAY_HAVE = {
    "registration": frozenset({"validation_sha256"}),
    "promotion": frozenset(),
    "status": frozenset({"status_key", "status_sha256"}),
}
"""Per event: the optional fields it may have (added by later format revisions)."""
_EVENT_ONLY = frozenset().union(*_EVENT_FIELDS.values(), *_EVENT_MAY_HAVE.values())


class RegistryBody(_Struct, frozen=True, tag_field="kind", tag="registry"):
    """What the model registry did, naming every object it wrote by hash
    (spec §3 ``registry``). Appended to the registry chain only after those
    objects are durable, so the objects a record names exist when it does.

    Which optional fields are present depends on ``event`` (checked on decode):
    a registration names its artifact and background blobs, a promotion the
    alias object it wrote, a status change the new status.
    """

    event: Literal["registration", "promotion", "status"]
    model: ModelVersion
    manifest_sha256: Hex64
    """SHA-256 of ``models/manifests/<name>/<version>.json`` as stored."""
    by: str
    at: Timestamp
    """When the registry operation happened (the header's ``time``: when it was recorded)."""
    artifact_sha256: Hex64 | None = None
    background_sha256: Hex64 | None = None
    alias: str | None = None
    alias_key: str | None = None
    """``models/aliases/<name>/<alias>/<n:08d>.json``: the alias object the promotion wrote."""
    alias_sha256: Hex64 | None = None
    status: str | None = None
    reason: str | None = None
    validation_sha256: Hex64 | None = None
    """Registration: the validation report, evidence ``evidence/sha256/<hex>``."""
    status_key: str | None = None
    """Status: ``models/status/<name>/<version>/<n:08d>.json``, the status object written."""
    status_sha256: Hex64 | None = None

    def __post_init__(self) -> None:
        required = _EVENT_FIELDS[self.event]
        present = {name for name in _EVENT_ONLY if getattr(self, name) is not None}
        if missing := sorted(required - present):
            raise ValueError(f"a {self.event} record needs {', '.join(missing)}")
        if extra := sorted(present - required - _EVENT_MAY_HAVE[self.event]):
            raise ValueError(f"a {self.event} record cannot have {', '.join(extra)}")
        if (self.status_key is None) != (self.status_sha256 is None):
            raise ValueError("status_key and status_sha256 come together or not at all")
        if self.status_key is not None:
            found = _STATUS_KEY.fullmatch(self.status_key)
            if not found or found["name"] != self.model.name or found["version"] != self.model.version:
                raise ValueError(
                    f"status_key {self.status_key!r} is not "
                    f"models/status/{self.model.name}/{self.model.version}/<n:08d>.json"
                )
        if self.alias_key is not None:
            match = _ALIAS_KEY.fullmatch(self.alias_key)
            if not match or match["name"] != self.model.name or match["alias"] != self.alias:
                raise ValueError(
                    f"alias_key {self.alias_key!r} is not models/aliases/{self.model.name}/{self.alias}/<n:08d>.json"
                )


def _sorted_unique(values: list[str], name: str, *, non_empty: bool) -> None:
    if non_empty and not values:
        raise ValueError(f"{name} cannot be empty")
    if values != sorted(set(values)):
        raise ValueError(f"{name} must be sorted, without repeats")


class _SubjectEvent(_Struct, frozen=True):
    """What erasure and legal-hold records share (spec §3a): which data keys and decisions,
    on what basis, by whom, when; never the subject id or any personal field."""

    key_refs: list[DataKeyRef]
    request_ids: list[str]
    """The decisions the keys sealed, as the subject index knew them."""
    basis: str
    """The legal basis or case reference, as the operator gave it."""
    by: str
    at: Timestamp

    def __post_init__(self) -> None:
        _sorted_unique(self.key_refs, "key_refs", non_empty=True)
        _sorted_unique(self.request_ids, "request_ids", non_empty=False)


class ErasureBody(_SubjectEvent, frozen=True, tag_field="kind", tag="erasure"):
    """Data keys destroyed, so the personal data they sealed is gone (spec §3a ``erasure``).
    Appended before the keys are destroyed: no key is destroyed without this record."""

    cause: Literal["request", "retention"]


class LegalHoldBody(_SubjectEvent, frozen=True, tag_field="kind", tag="legal_hold"):
    """A legal hold set on, or released from, a subject's decisions (spec §3a ``legal_hold``)."""

    action: Literal["hold", "release"]


Body = (
    GenesisBody
    | DecisionBody
    | KeyRotationBody
    | AccessBody
    | EvidenceBody
    | RegistryBody
    | ErasureBody
    | LegalHoldBody
)


def is_sealed(body: object) -> bool:
    """Whether ``body`` is a decision whose personal data is sealed (spec §3a)."""
    return isinstance(body, DecisionBody) and isinstance(body.inputs, SealedInputs)


def format_for(body: object) -> str:
    """The format a record with ``body`` has (spec §3a "Which format a record has")."""
    return FORMAT_V2 if is_sealed(body) or isinstance(body, ErasureBody | LegalHoldBody) else FORMAT


def _check_format(fmt: str, body: Body) -> None:
    if format_for(body) != fmt:
        raise ValueError(f"a {type(body).__struct_config__.tag} body of this kind is not {fmt} (spec §3a)")
    if not isinstance(body, DecisionBody):
        return
    if fmt == FORMAT_V2:
        if body.subject_id is not None:
            raise ValueError("a sealed decision has no clear subject_id (spec §3a)")
        if any(r.value is not None or r.text is not None for r in body.reasons):
            raise ValueError("a sealed decision's reasons have no clear value or text (spec §3a)")
    elif any(r.value is None or r.text is None for r in body.reasons):
        raise ValueError("a reason of a verdict.audit/v1 decision needs value and text")


class Record(_Struct, frozen=True, tag_field="format", tag=FORMAT):
    """One audit record: common header plus one tagged body.

    The header field ``format`` ("verdict.audit/v1") is the Struct's tag, so
    it is always encoded and any other value is rejected on decode.
    """

    chain_id: ChainId
    seq: Seq
    prev_hash: Hex64
    time: Timestamp
    key_id: KeyId
    body: Body

    def __post_init__(self) -> None:
        _check_format(self.format, self.body)

    @property
    def format(self) -> str:
        """The record's format string (its tag)."""
        return str(type(self).__struct_config__.tag)


class RecordV2(Record, frozen=True, tag=FORMAT_V2):
    """A ``verdict.audit/v2`` record: the header and rules of v1, with a body v1 cannot
    express (a sealed decision, an erasure, a legal hold; spec §3a). A subclass, so every
    reader that takes a :class:`Record` takes it."""


def new_record(*, chain_id: str, seq: int, prev_hash: str, time: str, key_id: str, body: Body) -> Record:
    """A record of the format its body calls for (spec §3a)."""
    cls = RecordV2 if format_for(body) == FORMAT_V2 else Record
    return cls(chain_id=chain_id, seq=seq, prev_hash=prev_hash, time=time, key_id=key_id, body=body)


_record_decoder = msgspec.json.Decoder(Record | RecordV2)


def record_bytes(record: Record) -> bytes:
    """The canonical (RFC 8785) bytes of ``record``: what is hashed and stored."""
    return canonical_bytes(record)


def record_hash(record: Record) -> bytes:
    """SHA-256 of the record's canonical bytes (32 raw bytes)."""
    return hashlib.sha256(record_bytes(record)).digest()


def decode_record(data: bytes) -> Record:
    """Parse and schema-check one record's JSON bytes (not the canonical form)."""
    try:
        return _record_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise RecordError(f"record does not match {FORMAT}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"record is not valid JSON: {exc}") from None


# --- time ----------------------------------------------------------------------------


def format_time(moment: _dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and "Z", e.g. 2025-01-31T12:00:00.000000Z."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)


def utc_now() -> str:
    return format_time(_dt.datetime.now(_dt.UTC))


# --- segment lines -------------------------------------------------------------------------
#
# A segment holds one line per record: the canonical JSON of
# {"record": <record>, "signature": "<base64 of the 64-byte signature>"}, then "\n".
# Canonical JSON sorts "record" before "signature" and has no whitespace, so
# every well-formed line is exactly  LINE_PREFIX + record bytes + SIG_PREFIX +
# 88 base64 characters + LINE_SUFFIX, and the record's bytes can be sliced out
# without re-encoding.

LINE_PREFIX = b'{"record":'
SIG_PREFIX = b',"signature":"'
LINE_SUFFIX = b'"}'
SIGNATURE_B64_LEN = 88
_TRAILER_LEN = len(SIG_PREFIX) + SIGNATURE_B64_LEN + len(LINE_SUFFIX)


def encode_line(record_data: bytes, signature: bytes) -> bytes:
    """One segment line (with its trailing newline) for canonical record bytes."""
    if len(signature) != 64:
        raise RecordError(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    return LINE_PREFIX + record_data + SIG_PREFIX + base64.b64encode(signature) + LINE_SUFFIX + b"\n"


def split_line(line: bytes) -> tuple[bytes, bytes]:
    """(record bytes, signature) of one line without its newline; RecordError if the
    line is not in the exact canonical frame."""
    if (
        len(line) <= len(LINE_PREFIX) + _TRAILER_LEN
        or not line.startswith(LINE_PREFIX)
        or not line.endswith(LINE_SUFFIX)
        or line[-_TRAILER_LEN : -_TRAILER_LEN + len(SIG_PREFIX)] != SIG_PREFIX
    ):
        raise RecordError('line is not {"record":...,"signature":"<88 base64 characters>"}')
    sig_text = line[-_TRAILER_LEN + len(SIG_PREFIX) : -len(LINE_SUFFIX)]
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("signature is not standard base64") from None
    if len(signature) != 64 or base64.b64encode(signature) != sig_text:
        raise RecordError("signature is not canonical base64 of 64 bytes")
    return line[len(LINE_PREFIX) : -_TRAILER_LEN], signature


def iter_lines(segment: bytes) -> list[bytes]:
    """The lines of a segment (without newlines); RecordError if it does not end in one."""
    if not segment.endswith(b"\n"):
        raise RecordError("segment does not end with a newline (truncated?)")
    return segment[:-1].split(b"\n")


class RecordHeader(msgspec.Struct, frozen=True):
    """The header of a stored record with its body left unparsed (a fast scan for
    readers that only follow the chain; full checks decode the whole Record)."""

    chain_id: str
    seq: int
    prev_hash: str
    key_id: str
    body: msgspec.Raw


class _BodyKind(msgspec.Struct, frozen=True):
    kind: str


_header_decoder = msgspec.json.Decoder(RecordHeader)
_kind_decoder = msgspec.json.Decoder(_BodyKind)
_body_decoder = msgspec.json.Decoder(Body)


def decode_header(data: bytes) -> RecordHeader:
    try:
        return _header_decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise RecordError(f"record header does not match {FORMAT}: {exc}") from None


def body_kind(raw_body: bytes | msgspec.Raw) -> str:
    try:
        return _kind_decoder.decode(raw_body).kind
    except msgspec.MsgspecError as exc:
        raise RecordError(f"record body has no kind: {exc}") from None


def decode_body(raw_body: bytes | msgspec.Raw) -> Body:
    try:
        return _body_decoder.decode(raw_body)
    except msgspec.MsgspecError as exc:
        raise RecordError(f"record body does not match {FORMAT}: {exc}") from None

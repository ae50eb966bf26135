"""Trail health for the console: every chain and its latest signed checkpoint, the latest
immutability evidence and ``audit verify`` verdict on record, the keys and the trust policy.

Why a reader of its own: the verifier reads every record (minutes on a large trail) and a
page must answer in milliseconds. So this reads only what is small and signed: the root's
certificates, each chain's newest checkpoint (and cosigned checkpoint), the segments written
since it, and the newest evidence record; the whole-trail verdict shown is the one the last
immutability test filed, with its age. No listing of a chain's segments (O(records)):

* chains are those the root certified, those the latest evidence saw, and the well-known
  ones that exist (a chain nobody certified and no verification saw is found by the next
  ``audit verify``, which names it);
* a chain's length is its newest checkpoint's size plus the segments written since (a
  checkpoint is always written at a segment boundary, so they are found by name);
* keys are read the way the verifier anchors them (audit.trust): the root's certificates,
  never a key found in the store.

Fail closed: whatever cannot be read or verified is a red :class:`State` saying why, never
"ok"; only an unreachable store raises (:class:`StoreUnavailable`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
from collections.abc import Callable
from functools import partial
from typing import Literal, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout
from verdict.audit.checkpoint import CheckpointError, open_checkpoint
from verdict.audit.cosignature import CosignatureError, verify_cosignatures
from verdict.audit.immutability_report import ChainState, ImmutabilityReport
from verdict.audit.immutability_trail import EVIDENCE_KIND
from verdict.audit.records import (
    EvidenceBody,
    GenesisBody,
    RecordError,
    decode_record,
    format_time,
    iter_lines,
    parse_time,
    split_line,
)
from verdict.audit.signing import verify_record_signature
from verdict.audit.stores.base import ObjectMissing, StoreError, StoreUnavailable, WormStore
from verdict.audit.stores.probes import ENFORCED, FAILED, SKIPPED, ProbeResult
from verdict.audit.trust import Certificate, TrustError, TrustPolicy, decode_certificate

__all__ = [
    "ChainHealth",
    "CheckpointView",
    "Cosignature",
    "EvidenceView",
    "KeyWindow",
    "ProbeView",
    "State",
    "TrailHealth",
    "TrustView",
    "VerificationView",
    "WitnessView",
    "trail_health",
]

WELL_KNOWN_CHAINS = ("gateway-0", "registry", "subjects", "replay-0", "immutability-0")
"""Looked for even when no certificate names them (an unanchored trail)."""
TIP_SEGMENTS = 1024
"""At most this many segments past the newest checkpoint are read for the length; a
writer checkpoints every 1,000 records or 60 s, so more means a stalled checkpointer."""
BACK_PROBES = 256
"""How far back (in records) the segment holding a checkpoint's last record is looked
for by name (a batch is at most ``max_batch`` records, 64 by default)."""

_KIND_BY_CREATOR = {
    "verdict serve": "decisions",
    "verdict registry": "model registry",
    "verdict subjects": "data subjects",
    "verdict replay": "replay reports",
    "verdict audit immutability-test": "immutability evidence",
}
_KIND_BY_PREFIX = (
    ("gateway", "decisions"),
    ("registry", "model registry"),
    ("subjects", "data subjects"),
    ("replay", "replay reports"),
    ("immutability", "immutability evidence"),
)
_KIND_ORDER = [kind for _, kind in _KIND_BY_PREFIX]


class State(msgspec.Struct, frozen=True):
    """Green (``ok``) or red, with one sentence saying what was verified or why not."""

    ok: bool
    reason: str


def _red(reason: str) -> State:
    return State(False, reason)


def _judge(problems: list[str], fine: str) -> State:
    return State(True, fine) if not problems else _red("; ".join(problems))


class CheckpointView(msgspec.Struct, frozen=True):
    """A chain's newest signed checkpoint (C2SP tlog-checkpoint) and whether its signature
    verified with the key the root certified for that size and its origin is the chain's.
    That its root matches the records is the whole-trail verification's to say
    (:class:`VerificationView`): recomputing it reads every record."""

    key: str
    size: int
    root: str | None
    """Merkle root, hex (None: the note could not be read)."""
    signed_by: list[str]
    """Key ids whose signature verified (only root-certified keys are asked)."""
    expected_signer: str | None
    """The key the root certified for the chain at this size (None: none)."""
    covers_until: str | None
    """Time of the newest record it covers (None: not found cheaply)."""
    state: State


class Cosignature(msgspec.Struct, frozen=True):
    witness: str
    at: str
    """The time the witness put on its cosignature (RFC 3339 UTC)."""


class WitnessView(msgspec.Struct, frozen=True):
    """The newest cosigned checkpoint of a chain against the policy's witnesses."""

    key: str | None
    size: int
    cosignatures: list[Cosignature]
    """Only policy witnesses whose cosignature verified."""
    quorum: int
    witnessed: bool
    """A quorum of policy witnesses cosigned it."""
    state: State


class ChainHealth(msgspec.Struct, frozen=True):
    chain_id: str
    kind: str | None
    """"decisions", "model registry", "data subjects", "replay reports",
    "immutability evidence", or None (unknown)."""
    created_by: str | None
    created_at: str | None
    certified: bool
    """The trust root certified the chain's creation (spec §5a)."""
    length: int
    """Records: the newest checkpoint's size plus the records written since."""
    length_exact: bool
    """False: more than TIP_SEGMENTS segments follow the checkpoint; ``length`` is a lower bound."""
    ahead: int
    """Records not yet covered by a signed checkpoint."""
    newest_record_at: str | None
    checkpoints: int
    checkpoint: CheckpointView | None
    witnessed: WitnessView | None
    """None when the trust policy names no witness."""
    state: State


class KeyWindow(msgspec.Struct, frozen=True):
    """A chain signing key as the root certified it: from which record it signs, until when."""

    chain_id: str
    key_id: str
    valid_from_seq: int
    certified_at: str
    certified_by: str
    """The root key id that signed the certificate."""
    origin: str
    rotated_at_seq: int | None
    """The key_rotation record that retired it (the last record it signs); None: current."""
    rotated_at: str | None
    """When the root certified its successor."""
    current: bool


class ProbeView(msgspec.Struct, frozen=True):
    name: str
    target: str
    operation: str
    required: str
    status: str
    """"enforced", "evident", "FAILED" or "skipped", as the test reported it."""
    outcome: Literal["passed", "failed", "skipped"]
    detail: str


class EvidenceView(msgspec.Struct, frozen=True):
    """The newest immutability-test evidence of one evidence chain."""

    chain_id: str
    seq: int
    object_key: str
    run_id: str | None
    started: str | None
    finished: str | None
    age_s: float | None
    store: str | None
    backend: str | None
    host: str | None
    user: str | None
    software: str | None
    result: str | None
    """"passed" (no FAILED probe) or "failed"."""
    counts: dict[str, int]
    failed: list[str]
    probes: list[ProbeView]
    notes: list[str]
    authentic: State
    """The evidence record's signature (root-certified key) and the document's hash."""
    state: State
    """Authentic and passed."""


class VerificationView(msgspec.Struct, frozen=True):
    """The latest whole-trail verification on record: the ``trail_verification`` check
    of the newest immutability evidence (``verify_store`` over every record)."""

    evidence_key: str
    run_id: str | None
    at: str | None
    age_s: float | None
    anchored: bool | None
    records: int | None
    chains: int | None
    failure_count: int | None
    detail: str
    state: State


class WitnessEntryView(msgspec.Struct, frozen=True):
    name: str
    vkey: str
    url: str | None


class TrustView(msgspec.Struct, frozen=True):
    roots: list[str]
    witnesses: list[WitnessEntryView]
    quorum: int
    in_words: list[str]
    state: State


class TrailHealth(msgspec.Struct, frozen=True):
    store: str
    checked_at: str
    chains: list[ChainHealth]
    evidence: list[EvidenceView]
    """Newest first, one per evidence chain."""
    verification: VerificationView | None
    keys: list[KeyWindow]
    trust: TrustView
    problems: list[str]
    """What could not be read or used outside any one chain (bad certificates...)."""
    state: State
    """Green only when every chain, the newest evidence and its verification are."""


# --- reading -----------------------------------------------------------------------------------

_T = TypeVar("_T")


def _guard(problems: list[str], what: str, read: Callable[[], _T]) -> _T | None:
    """``read()``, or None with the reason in ``problems``; an unreachable store raises."""
    try:
        return read()
    except StoreUnavailable:
        raise
    except (StoreError, RecordError, CheckpointError, CosignatureError, TrustError, ValueError) as exc:
        problems.append(f"{what}: {exc}")
        return None


class _Stamp(msgspec.Struct, frozen=True):
    """Just the header fields of a record that locate it in time (a fast decode)."""

    chain_id: str
    seq: int
    time: str


def _stamp(line: bytes) -> _Stamp:
    raw, _ = split_line(line)
    try:
        return msgspec.json.decode(raw, type=_Stamp)
    except msgspec.MsgspecError as exc:
        raise RecordError(f"record header: {exc}") from None


def _certificate(store: WormStore, key: str, roots: dict[str, bytes]) -> Certificate:
    return decode_certificate(key, store.get(key), roots)


def _lines(store: WormStore, key: str) -> list[bytes]:
    return iter_lines(store.get(key))


def _public(cert: Certificate) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(cert.key.public_key))


def _age(at: str | None, now: _dt.datetime) -> float | None:
    try:
        return round((now - parse_time(at)).total_seconds(), 3) if at else None
    except ValueError:
        return None


class _Certificates:
    """Every certificate in the store, checked against the policy, by chain."""

    def __init__(self, store: WormStore, trust: TrustPolicy | None, problems: list[str]) -> None:
        self.by_chain: dict[str, list[Certificate]] = {}
        self.chain_ids: set[str] = set()
        roots = trust.root_keys() if trust is not None else {}
        for key in store.list_keys(layout.CERTIFICATES_PREFIX):
            named = layout.parse_certificate_key(key)
            if named is None:
                problems.append(f"{key}: not a certificate name")
                continue
            self.chain_ids.add(named[0])
            if trust is None:
                continue
            cert = _guard(problems, key, partial(_certificate, store, key, roots))
            if cert is not None:
                self.by_chain.setdefault(named[0], []).append(cert)
        for certs in self.by_chain.values():
            certs.sort(key=lambda c: (c.from_seq, c.key.key_id))

    def of(self, chain_id: str) -> list[Certificate]:
        return self.by_chain.get(chain_id, [])

    def at(self, chain_id: str, size: int) -> Certificate | None:
        """The certificate in effect for a checkpoint of ``size`` / record ``size``
        (audit.trust.ChainAnchors.latest_at: the key after ``size`` records)."""
        found = [c for c in self.of(chain_id) if c.from_seq <= size]
        return found[-1] if found else None

    def windows(self) -> list[KeyWindow]:
        out = []
        for chain_id, certs in sorted(self.by_chain.items()):
            for n, cert in enumerate(certs):
                successor = certs[n + 1] if n + 1 < len(certs) else None
                out.append(
                    KeyWindow(
                        chain_id=chain_id,
                        key_id=cert.key.key_id,
                        valid_from_seq=cert.from_seq,
                        certified_at=cert.issued_at,
                        certified_by=cert.root_key_id,
                        origin=cert.origin,
                        rotated_at_seq=successor.from_seq - 1 if successor else None,
                        rotated_at=successor.issued_at if successor else None,
                        current=successor is None,
                    )
                )
        return out


# --- one chain ----------------------------------------------------------------------------------


class _ChainReader:
    def __init__(
        self,
        store: WormStore,
        chain_id: str,
        certs: _Certificates,
        trust: TrustPolicy | None,
        recorded: ChainState | None,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.certs = certs
        self.trust = trust
        self.recorded = recorded
        self.problems: list[str] = []

    def read(self) -> ChainHealth:
        genesis = self._genesis()
        created_by = genesis[0].created_by if genesis else None
        first = self.certs.at(self.chain_id, 0)  # the chain's creation (origin, genesis key)
        certified = first is not None
        if self.trust is None:
            self.problems.append("no trust policy: nothing here can be verified")
        elif not certified:
            self.problems.append("the trust root has not certified this chain's creation")
        elif genesis is not None and first is not None and genesis[0].public_key.key_id != first.key.key_id:
            self.problems.append(f"the genesis key {genesis[0].public_key.key_id} is not the certified one")
        sizes = self._checkpoint_sizes()
        size = max(sizes, default=0)
        tip = self._tip(size)
        length, exact, newest = tip if tip is not None else (size, False, None)
        checkpoint = self._checkpoint(size, first) if size else None
        if checkpoint is None:
            self.problems.append("no signed checkpoint")
        elif not checkpoint.state.ok:
            self.problems.append(checkpoint.state.reason)
        if genesis is None and length == 0:
            self.problems.append("holds no records (deleted, or never started)")
        witnessed = self._witnessed(first)
        if witnessed is not None and not witnessed.state.ok:
            self.problems.append(witnessed.state.reason)
        self._since_evidence(length, exact)
        ahead = max(0, length - size)
        fine = (
            f"checkpoint of {size} records verifies with {', '.join(checkpoint.signed_by) if checkpoint else '-'}"
            + (f"; {ahead} newer records not yet checkpointed" if ahead else "")
        )
        return ChainHealth(
            chain_id=self.chain_id,
            kind=_KIND_BY_CREATOR.get(created_by or "") or _kind_by_name(self.chain_id),
            created_by=created_by,
            created_at=genesis[1] if genesis else None,
            certified=certified,
            length=length,
            length_exact=exact,
            ahead=ahead,
            newest_record_at=newest or (checkpoint.covers_until if checkpoint and not ahead else None),
            checkpoints=len(sizes),
            checkpoint=checkpoint,
            witnessed=witnessed,
            state=_judge(self.problems, fine),
        )

    def _genesis(self) -> tuple[GenesisBody, str] | None:
        key = layout.segment_key(self.chain_id, 0)

        def read() -> tuple[GenesisBody, str] | None:
            try:
                data = self.store.get(key)
            except ObjectMissing:
                return None
            record = decode_record(split_line(iter_lines(data)[0])[0])
            if not isinstance(record.body, GenesisBody) or record.seq != 0:
                raise RecordError("record 0 is not a genesis record")
            return record.body, record.time

        return _guard(self.problems, key, read)

    def _checkpoint_sizes(self) -> list[int]:
        sizes = []
        for key in self.store.list_keys(layout.checkpoints_prefix(self.chain_id)):
            size = layout.number_from_key(key)
            if size is None:
                self.problems.append(f"{key}: not a checkpoint name")
            else:
                sizes.append(size)
        return sizes

    def _tip(self, size: int) -> tuple[int, bool, str | None] | None:
        """(length, exact, newest record's time): the segments following ``size`` by name."""

        def walk() -> tuple[int, bool, str | None]:
            length, last, exact = size, b"", False
            for _ in range(TIP_SEGMENTS):
                try:
                    data = self.store.get(layout.segment_key(self.chain_id, length))
                except ObjectMissing:
                    exact = True
                    break
                length += len(iter_lines(data))  # lines only counted: one header is decoded below
                last = data
            if not last:
                return length, exact, None
            stamp = _stamp(iter_lines(last)[-1])
            if stamp.seq != length - 1 or stamp.chain_id != self.chain_id:
                raise RecordError(f"the newest segment ends with record {stamp.seq}, not {length - 1}")
            return length, exact, stamp.time

        return _guard(self.problems, f"the records after checkpoint {size}", walk)

    def _record_time(self, seq: int) -> str | None:
        """The time of record ``seq``, from the segment holding it (found by name, a few probes back)."""
        for first in range(seq, max(-1, seq - BACK_PROBES), -1):
            key = layout.segment_key(self.chain_id, first)
            if not self.store.exists(key):
                continue
            lines = iter_lines(self.store.get(key))
            if seq - first < len(lines):
                stamp = _stamp(lines[seq - first])
                if stamp.seq == seq:
                    return stamp.time
            return None
        return None

    def _checkpoint(self, size: int, first: Certificate | None) -> CheckpointView:
        key = layout.checkpoint_key(self.chain_id, size)
        problems: list[str] = []
        note = _guard(problems, key, lambda: self.store.get(key))
        cert = self.certs.at(self.chain_id, size)
        signed_by: list[str] = []
        root = None
        if note is not None and cert is not None and first is not None:
            opened = _guard(
                problems, key, lambda: open_checkpoint(note, {cert.key.key_id: _public(cert)}, origin=first.origin)
            )
            if opened is not None:
                signed_by = list(opened.signed_by)
                root = opened.checkpoint.root.hex()
                if opened.checkpoint.size != size:
                    problems.append(f"{key} states size {opened.checkpoint.size}")
        elif note is not None:
            problems.append(f"{key}: no root-certified key to verify it with")
        covers = _guard(problems, f"record {size - 1}", lambda: self._record_time(size - 1))
        return CheckpointView(
            key=key,
            size=size,
            root=root,
            signed_by=signed_by,
            expected_signer=cert.key.key_id if cert else None,
            covers_until=covers,
            state=_judge(problems, f"signed by {', '.join(signed_by)}, certified by the trust root"),
        )

    def _witnessed(self, first: Certificate | None) -> WitnessView | None:
        trust = self.trust
        if trust is None or not trust.witnesses:
            return None
        sizes = [
            (n, k)
            for k in self.store.list_keys(layout.cosigned_prefix(self.chain_id))
            if (n := layout.number_from_key(k))
        ]
        if not sizes:
            return WitnessView(None, 0, [], trust.witness_quorum, False, State(True, "no checkpoint cosigned yet"))
        size, key = max(sizes)
        problems: list[str] = []
        cosigned: dict[str, int] = {}
        note = _guard(problems, key, lambda: self.store.get(key))
        cert = self.certs.at(self.chain_id, size)
        if note is not None:
            if cert is None or first is None:
                problems.append(f"{key}: no root-certified key for size {size}")
            else:
                _guard(
                    problems, key, lambda: open_checkpoint(note, {cert.key.key_id: _public(cert)}, origin=first.origin)
                )
            found = _guard(problems, key, lambda: verify_cosignatures(note, [w.vkey for w in trust.witnesses]))
            cosigned = found or {}
        quorum = trust.witness_quorum
        witnessed = bool(quorum) and len(cosigned) >= quorum
        fine = f"checkpoint {size} cosigned by {len(cosigned)} of {len(trust.witnesses)} witnesses (quorum {quorum})"
        return WitnessView(
            key=key,
            size=size,
            cosignatures=[Cosignature(name, _posix(at)) for name, at in sorted(cosigned.items())],
            quorum=quorum,
            witnessed=witnessed,
            state=_judge(problems, fine),
        )

    def _since_evidence(self, length: int, exact: bool) -> None:
        """What the last immutability test recorded of this chain must still be there."""
        old = self.recorded
        if old is None:
            return
        if exact and length < old.records:
            self.problems.append(
                f"shrank from {old.records} records (recorded by the last immutability test) to {length}"
            )
        cp = old.last_checkpoint
        if cp is None:
            return
        data = _guard(self.problems, cp.key, lambda: self.store.get(cp.key, cp.version))
        if data is not None and hashlib.sha256(data).hexdigest() != cp.sha256:
            self.problems.append(f"{cp.key} changed since the last immutability test recorded it")


def _kind_by_name(chain_id: str) -> str | None:
    return next((kind for prefix, kind in _KIND_BY_PREFIX if chain_id.startswith(prefix)), None)


def _posix(seconds: int) -> str:
    try:
        return format_time(_dt.datetime.fromtimestamp(seconds, _dt.UTC))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


# --- evidence ------------------------------------------------------------------------------------


def _evidence(
    store: WormStore, chain_id: str, certs: _Certificates, trust: TrustPolicy | None, now: _dt.datetime
) -> tuple[EvidenceView, ImmutabilityReport | None] | None:
    """The newest immutability evidence record of ``chain_id`` (read from its last segment back)."""
    for key in reversed(list(store.list_keys(layout.segments_prefix(chain_id)))):
        problems: list[str] = []
        lines = _guard(problems, key, partial(_lines, store, key))
        for line in reversed(lines or []):
            found = _guard(problems, key, partial(_evidence_record, line, chain_id))
            if found is not None:
                return _evidence_view(store, chain_id, found, certs, trust, now)
        if problems:
            return _unreadable_evidence(chain_id, key, problems)
    return None


class _Found(msgspec.Struct, frozen=True):
    seq: int
    key_id: str
    body: EvidenceBody
    digest: bytes
    signature: bytes


def _evidence_record(line: bytes, chain_id: str) -> _Found | None:
    raw, signature = split_line(line)
    record = decode_record(raw)
    body = record.body
    if record.chain_id != chain_id or not isinstance(body, EvidenceBody) or body.evidence_kind != EVIDENCE_KIND:
        return None
    return _Found(record.seq, record.key_id, body, hashlib.sha256(raw).digest(), signature)


def _evidence_view(
    store: WormStore,
    chain_id: str,
    found: _Found,
    certs: _Certificates,
    trust: TrustPolicy | None,
    now: _dt.datetime,
) -> tuple[EvidenceView, ImmutabilityReport | None]:
    problems: list[str] = []
    where = f"{chain_id}/{found.seq}"
    cert = next(
        (c for c in reversed(certs.of(chain_id)) if c.key.key_id == found.key_id and c.from_seq <= found.seq), None
    )
    if trust is None:
        problems.append("no trust policy: the evidence record cannot be verified")
    elif cert is None:
        problems.append(f"record {where} is signed by {found.key_id}, which the trust root has not certified")
    elif not verify_record_signature(_public(cert), found.digest, found.signature):
        problems.append(f"record {where}: the signature does not verify")
    data = _guard(problems, found.body.object_key, lambda: store.get(found.body.object_key))
    report = None
    if data is not None and hashlib.sha256(data).hexdigest() != found.body.sha256:
        problems.append(f"{found.body.object_key} does not hash to the sha256 its record names")
    elif data is not None:
        try:
            report = msgspec.json.decode(data, type=ImmutabilityReport)
        except msgspec.MsgspecError as exc:
            problems.append(f"{found.body.object_key} is not an immutability report: {exc}")
    authentic = _judge(problems, f"record {where} signed by {found.key_id} (root-certified); the document matches it")
    if report is None:
        return _evidence_shell(chain_id, found.seq, found.body.object_key, authentic), None
    passed = report.result == "passed" and not report.failed
    state = (
        authentic
        if not authentic.ok
        else State(True, "passed: every probe as required")
        if passed
        else _red(f"FAILED: {', '.join(report.failed) or report.result}")
    )
    view = EvidenceView(
        chain_id=chain_id,
        seq=found.seq,
        object_key=found.body.object_key,
        run_id=report.run_id,
        started=report.started,
        finished=report.finished,
        age_s=_age(report.finished, now),
        store=report.store,
        backend=report.backend,
        host=report.host,
        user=report.user,
        software=report.software,
        result=report.result,
        counts=dict(report.counts),
        failed=list(report.failed),
        probes=[_probe(p) for p in report.probes],
        notes=list(report.notes),
        authentic=authentic,
        state=state,
    )
    return view, report if authentic.ok else None


def _evidence_shell(chain_id: str, seq: int, object_key: str, state: State) -> EvidenceView:
    return EvidenceView(
        chain_id,
        seq,
        object_key,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        {},
        [],
        [],
        [],
        state,
        state,
    )


def _unreadable_evidence(chain_id: str, key: str, problems: list[str]) -> tuple[EvidenceView, None]:
    return _evidence_shell(chain_id, -1, key, _red("; ".join(problems))), None


def _probe(p: ProbeResult) -> ProbeView:
    outcome: Literal["passed", "failed", "skipped"] = (
        "failed" if p.status == FAILED else "skipped" if p.status == SKIPPED else "passed"
    )
    return ProbeView(p.name, p.target, p.operation, p.required, p.status, outcome, p.detail)


def _verification(view: EvidenceView, report: ImmutabilityReport | None) -> VerificationView:
    probe = next((p for p in report.probes if p.name == "trail_verification"), None) if report else None
    if report is None or probe is None:
        reason = view.authentic.reason if not view.authentic.ok else "the evidence holds no trail_verification check"
        return VerificationView(
            view.object_key, view.run_id, view.finished, view.age_s, None, None, None, None, reason, _red(reason)
        )
    evidence = probe.evidence
    ok = probe.status == ENFORCED
    anchored = evidence.get("anchored")
    state = State(True, probe.detail) if ok and anchored else _red(probe.detail if not ok else "verified UNANCHORED")
    return VerificationView(
        evidence_key=view.object_key,
        run_id=report.run_id,
        at=report.finished,
        age_s=view.age_s,
        anchored=anchored if isinstance(anchored, bool) else None,
        records=_int(evidence.get("records")),
        chains=_int(evidence.get("chains")),
        failure_count=_int(evidence.get("failure_count")),
        detail=probe.detail,
        state=state,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- the trust policy ----------------------------------------------------------------------------


def _trust_view(trust: TrustPolicy | None) -> TrustView:
    if trust is None:
        reason = "no trust policy: any store writer could have produced this trail"
        return TrustView([], [], 0, [reason], _red(reason))
    roots = [r.key_id for r in trust.roots]
    words = [
        f"Trusts {'one root key' if len(roots) == 1 else f'{len(roots)} root keys'} ({', '.join(roots)}), kept "
        "outside the store: only chains and signing keys they certified are accepted."
    ]
    names = [w.name for w in trust.witnesses]
    if not names:
        words.append(
            "Names no witness: checkpoints are signed by the gateway alone, not cosigned by independent parties."
        )
    else:
        words.append(
            f"Names {len(names)} witness{'es' if len(names) != 1 else ''} ({', '.join(names)}); a checkpoint "
            f"counts as witnessed with {trust.witness_quorum} of their cosignatures."
            if trust.witness_quorum
            else f"Names {len(names)} witness(es) ({', '.join(names)}) but requires none of their cosignatures (quorum 0)."
        )
    return TrustView(
        roots=roots,
        witnesses=[WitnessEntryView(w.name, w.vkey, w.url) for w in trust.witnesses],
        quorum=trust.witness_quorum,
        in_words=words,
        state=State(True, words[0]),
    )


# --- the whole trail ------------------------------------------------------------------------------


def trail_health(store: WormStore, trust: TrustPolicy | None, *, now: _dt.datetime | None = None) -> TrailHealth:
    """The trail's health as the console's page shows it (see the module docs).

    ``trust``: the policy the console verifies with (None: nothing verifies, every
    state is red). ``now``: for the evidence's age (default: the clock). Raises
    :class:`StoreUnavailable` only; every other failure is a red state."""
    now = now or _dt.datetime.now(_dt.UTC)
    problems: list[str] = []
    certs = _Certificates(store, trust, problems)
    candidates = set(certs.chain_ids)
    candidates.update(c for c in WELL_KNOWN_CHAINS if store.exists(layout.segment_key(c, 0)))
    evidence: list[tuple[EvidenceView, ImmutabilityReport | None]] = []
    for chain_id in sorted(c for c in candidates if c.startswith("immutability")):
        found = _evidence(store, chain_id, certs, trust, now)
        if found is not None:
            evidence.append(found)
    evidence.sort(key=lambda e: e[0].finished or "", reverse=True)
    newest = evidence[0] if evidence else None
    recorded: dict[str, ChainState] = {}
    if newest is not None and newest[1] is not None and newest[1].trail is not None:
        recorded = {c.chain_id: c for c in newest[1].trail.chains}
        candidates.update(c for c in recorded if _valid_chain_id(c))
    chains = [
        _ChainReader(store, chain_id, certs, trust, recorded.get(chain_id)).read()
        for chain_id in sorted(candidates, key=_chain_order)
    ]
    verification = _verification(*newest) if newest is not None else None
    trust_view = _trust_view(trust)
    reds = [f"{c.chain_id}: {c.state.reason}" for c in chains if not c.state.ok]
    if not trust_view.state.ok:
        reds.insert(0, trust_view.state.reason)
    if newest is None:
        reds.append("no immutability-test evidence on record (run `verdict audit immutability-test`)")
    else:
        if not newest[0].state.ok:
            reds.append(f"immutability test: {newest[0].state.reason}")
        if verification is not None and not verification.state.ok:
            reds.append(f"latest verification: {verification.state.reason}")
    reds.extend(problems)
    return TrailHealth(
        store=store.url,
        checked_at=format_time(now),
        chains=chains,
        evidence=[view for view, _ in evidence],
        verification=verification,
        keys=certs.windows(),
        trust=trust_view,
        problems=problems,
        state=_judge(
            reds, f"{len(chains)} chains verified against the trust root; the latest immutability test passed"
        ),
    )


def _valid_chain_id(chain_id: str) -> bool:
    try:
        layout.check_chain_id(chain_id)
    except layout.LayoutError:
        return False
    return True


def _chain_order(chain_id: str) -> tuple[int, str]:
    kind = _kind_by_name(chain_id)
    return (_KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER), chain_id)

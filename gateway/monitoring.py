"""Monitoring a model in production, computed from the audit trail itself (issue 20).

What a model-risk team watches, per model and version:

* decisions per day (UTC, by ``decided_at``) and outcome rates (the record's
  ``decision`` label);
* the score distribution against the model's training reference
  (gateway.monitoring_reference), with a population stability index (PSI) on
  the score and one per attribute (numeric attributes binned by the deciles of
  their training values, categorical ones by category);
* how often each attribute is a principal reason, and how often a protected
  attribute is among them (gateway.monitoring_fold says which reasons and
  which attributes count, and why).

PSI is ``sum((a - e) * ln(a / e))`` over the bins, ``a`` and ``e`` the live and
reference shares of each bin, each floored at :data:`PSI_FLOOR` (1e-4) so an
empty bin does not make it infinite. The score has 10 bins at the deciles of
the reference scores. Reading it (the usual credit-scoring rule of thumb):
below :data:`PSI_STABLE` (0.1) stable; 0.1 to :data:`PSI_MAJOR` (0.25) a
moderate shift, worth a look; above 0.25 a major shift, the model is scoring
a population it was not built on.

Why incremental: a page view must not rescan a trail of 100,000 decisions.
:class:`TrailMonitor` keeps, per chain, a cursor (the segment it is in and how
many of its records were folded) and on :meth:`TrailMonitor.refresh` reads only
segments at or after it: one store read per chain when nothing is new. Counts
are integers in fixed bins (gateway.monitoring_fold), so folding record by
record gives exactly what a full scan gives. New chains are found from the
trust root's certificates (cheap, every refresh) and a listing of every chain
(first refresh, then every ``discover_every_s``). With a ``state_dir`` the
summary and cursors are kept on disk (``$VERDICT_HOME/monitor/``), keyed by the
store's URL; on load, each chain's last folded record must still hash as
recorded, else the file is ignored and the trail folded again.

Not verification: the monitor reads records as stored and checks neither
signatures nor checkpoints (``verdict audit verify`` does); a record that does
not parse or sits at the wrong position stops folding its chain and the
summary names the problem. A superseded duplicate (two replicas deciding one
request id at once, rare) is counted where it was recorded.

Three ways out, one set of figures: :meth:`TrailMonitor.summary` (the console),
``verdict monitor report`` (gateway.monitoring_report's HTML) and
:class:`MonitorCollector` (Prometheus gauges on ``/metrics``, read from the
current summary; a scrape starts at most one background refresh every
:data:`GAUGE_REFRESH_S` and never scans the trail itself).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Literal

import msgspec
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from verdict.audit import layout
from verdict.audit.personal_data import PersonalData
from verdict.audit.records import (
    DecisionBody,
    RecordError,
    body_kind,
    decode_body,
    decode_header,
    iter_lines,
    parse_time,
    split_line,
    utc_now,
)
from verdict.audit.stores import ObjectMissing, StoreError, WormStore
from verdict.gateway.engine import Engine
from verdict.gateway.monitoring_fold import DecisionFolder, VersionFold
from verdict.gateway.monitoring_reference import ReferenceCache, write_atomically
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.service_errors import AuditUnavailable

__all__ = [
    "GAUGE_REFRESH_S",
    "PSI_FLOOR",
    "PSI_MAJOR",
    "PSI_STABLE",
    "Bin",
    "DayOutcomes",
    "Distribution",
    "ModelSummary",
    "MonitorCollector",
    "MonitorSummary",
    "OutcomeRate",
    "ProtectedReasons",
    "ReasonRate",
    "ReferenceInfo",
    "RefreshResult",
    "TrailMonitor",
    "psi",
    "shift",
]

_log = logging.getLogger(__name__)

PSI_FLOOR = 1e-4
PSI_STABLE = 0.1
PSI_MAJOR = 0.25
GAUGE_REFRESH_S = 30.0
"""The gauges are at most this old (plus one refresh): a scrape refreshes in the background."""
DISCOVER_EVERY_S = 300.0
"""How often every chain is listed to find chains the trust root has not certified."""
STATE_FORMAT: Final = "verdict.monitor-state/v1"
_DECISION_MARK = b'"kind":"decision"'
"""Canonical JSON escapes every quote inside a string, so this occurs only as the real member
(as replay.trail and audit.walk rely on): other records are not decoded."""

Shift = Literal["stable", "moderate", "major"]


def psi(live: Sequence[int], reference: Sequence[int], floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of ``live`` against ``reference`` counts over the same
    bins (None when either side has no counts)."""
    n, m = sum(live), sum(reference)
    if n == 0 or m == 0 or len(live) != len(reference):
        return None
    total = 0.0
    for a, e in zip(live, reference, strict=True):
        pa, pe = max(a / n, floor), max(e / m, floor)
        total += (pa - pe) * math.log(pa / pe)
    return total


def shift(value: float | None) -> Shift | None:
    """``stable`` (< 0.1), ``moderate`` (0.1 to 0.25) or ``major`` (> 0.25) shift."""
    if value is None:
        return None
    if value < PSI_STABLE:
        return "stable"
    return "moderate" if value <= PSI_MAJOR else "major"


# -- what the console, the report and the gauges read ------------------------------------------


class OutcomeRate(msgspec.Struct, frozen=True):
    decision: str
    count: int
    rate: float
    adverse: bool
    """The manifest's decision at or above the threshold (an adverse action, e.g. ``decline``)."""


class DayOutcomes(msgspec.Struct, frozen=True):
    day: str
    """UTC date, YYYY-MM-DD."""
    decisions: int
    outcomes: dict[str, int]


class Bin(msgspec.Struct, frozen=True):
    label: str
    """In words: ``0.118 to 0.157``, ``below 9 months``, or a category's label."""
    live: int
    live_share: float | None
    reference: int | None = None
    reference_share: float | None = None
    code: str | None = None
    """A category bin's code (e.g. ``A11``)."""


class Distribution(msgspec.Struct, frozen=True):
    """Live against reference over fixed bins, for the score (``attribute="score"``) or one attribute."""

    attribute: str
    label: str
    kind: Literal["score", "numeric", "category"]
    bins: list[Bin]
    live_total: int
    reference_total: int | None = None
    psi: float | None = None
    shift: Shift | None = None
    protected: bool = False
    unbinned: int = 0


class ReasonRate(msgspec.Struct, frozen=True):
    attribute: str
    label: str
    protected: bool
    principal: int
    """Explained decisions with this attribute among their principal reasons."""
    first: int
    """Explained decisions whose first principal reason it is."""
    rate: float | None
    """principal / explained decisions."""
    adverse: int
    """Adverse explained decisions with it among their principal reasons (cited on notices)."""
    adverse_rate: float | None


class ProtectedReasons(msgspec.Struct, frozen=True):
    attributes: dict[str, str]
    """Protected inputs of this version -> why they count as protected."""
    explained: int
    with_protected: int
    rate: float | None
    adverse_explained: int
    adverse_with_protected: int
    adverse_rate: float | None


class ReferenceInfo(msgspec.Struct, frozen=True):
    dataset: str
    dataset_sha256: str
    rows: int
    source: str


class ModelSummary(msgspec.Struct, frozen=True):
    """Everything monitored about one model version."""

    model: str
    version: str
    artifact_sha256: str
    manifest_sha256: str | None
    output_space: str
    threshold: float | None
    adverse_decision: str | None
    decisions: int
    first_decided_at: str | None
    last_decided_at: str | None
    outcomes: list[OutcomeRate]
    days: list[DayOutcomes]
    score: Distribution | None
    """None for a free score (output space ``score``) without a reference: no fixed bins."""
    score_mean: float | None
    score_min: float | None
    score_max: float | None
    attributes: list[Distribution]
    """Per input, with the training reference (empty without one)."""
    attributes_read: int
    attributes_erased: int
    """Decisions whose subject was erased: attributes unavailable (still in every other figure)."""
    attributes_sealed: int
    """Sealed decisions this process holds no key for (no data keyring here)."""
    attributes_unreadable: int
    explained: int
    adverse: int
    reasons: list[ReasonRate]
    protected: ProtectedReasons
    reference: ReferenceInfo | None
    no_reference: str | None
    """Why there is no training reference (None when there is one)."""
    notes: list[str]

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"


class MonitorSummary(msgspec.Struct, frozen=True):
    store: str
    refreshed_at: str | None
    """When the trail was last read (None: not yet)."""
    decisions: int
    records_read: int
    """Records this monitor has read from the trail since it started (all kinds)."""
    chains: dict[str, int]
    """Chain id -> records folded (the cursor)."""
    problems: dict[str, str]
    """Chain id -> why folding stopped there (retried on each refresh)."""
    models: list[ModelSummary]
    psi_stable_below: float = PSI_STABLE
    psi_major_above: float = PSI_MAJOR

    def model(self, name: str, version: str | None = None) -> list[ModelSummary]:
        return [m for m in self.models if m.model == name and (version is None or m.version == version)]


class RefreshResult(msgspec.Struct, frozen=True):
    records_read: int
    """Records read by this refresh (all kinds)."""
    decisions_folded: int
    chains: int
    problems: dict[str, str]


# -- what is kept between refreshes (and on disk) ----------------------------------------------


class ChainCursor(msgspec.Struct, kw_only=True):
    segment: int = 0
    """First seq of the segment holding the next record to read."""
    offset: int = 0
    """Records of that segment already read."""
    last_key: str | None = None
    last_line: int = 0
    last_hash: str | None = None
    """SHA-256 of the last record read (checked when the state is loaded from disk)."""
    problem: str | None = None

    @property
    def next_seq(self) -> int:
        return self.segment + self.offset


class MonitorState(msgspec.Struct, kw_only=True):
    format: Literal["verdict.monitor-state/v1"] = STATE_FORMAT
    store: str
    chains: dict[str, ChainCursor] = {}
    versions: dict[str, VersionFold] = {}
    """``name:version`` -> its counts."""


class _Invalid(Exception):
    """A persisted state that does not match the store."""


# -- the monitor ------------------------------------------------------------------------------


class TrailMonitor:
    """The monitoring summary of one store, folded incrementally.

    ``engine``: manifests and the scoring path for training references (its registry
    is read for manifests, so it may be another store's). ``personal``: the data keyring
    that opens sealed decisions (None: their attributes count as sealed). ``state_dir``:
    where the summary, cursors and training references are kept between processes
    (None: memory only). Thread-safe: one refresh at a time; :meth:`summary` never waits
    for a refresh and never reads the store."""

    def __init__(
        self,
        store: WormStore,
        engine: Engine,
        personal: PersonalData | None = None,
        *,
        state_dir: Path | None = None,
        discover_every_s: float = DISCOVER_EVERY_S,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.discover_every_s = discover_every_s
        self.references = ReferenceCache(engine, state_dir / "references" if state_dir is not None else None)
        self._folder = DecisionFolder(engine, self.references, personal)
        self._lock = threading.Lock()
        self._state: MonitorState | None = None
        self._listed_at: float | None = None
        self._refreshed_at: str | None = None
        self._refreshed_mono: float | None = None
        self._summary: MonitorSummary | None = None
        self._background: threading.Thread | None = None
        self.records_read = 0
        """Records read from the trail by this monitor, all kinds (not counting a state file)."""
        self.decisions_folded = 0
        self.loaded_from_disk = False

    # -- reading the trail ------------------------------------------------------------------

    def refresh(self, *, wait: bool = True) -> RefreshResult | None:
        """Fold the records written since the last refresh. ``wait=False``: return None at
        once if another refresh is running. Store errors on one chain are reported in the
        result (and the summary's ``problems``) and retried next time, never raised."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            state = self._ensure_state()
            read_before, folded_before = self.records_read, self.decisions_folded
            try:
                chain_ids = self._chain_ids(state)
            except StoreError as exc:  # the chains known so far are still read
                _log.warning("monitoring: cannot list the store's chains: %s", exc)
                chain_ids = sorted(state.chains)
            for chain_id in chain_ids:
                cursor = state.chains.setdefault(chain_id, ChainCursor())
                try:
                    self._read_chain(state, chain_id, cursor)
                except StoreError as exc:
                    cursor.problem = f"the store could not be read: {exc}"
            folded = self.decisions_folded - folded_before
            if folded:
                self._persist(state)
            self._refreshed_at, self._refreshed_mono = utc_now(), time.monotonic()
            # Built here, under the lock, so that summary() never waits for a refresh.
            self._summary = self._build_summary(state)
            problems = {c: cur.problem for c, cur in state.chains.items() if cur.problem}
            return RefreshResult(
                records_read=self.records_read - read_before,
                decisions_folded=folded,
                chains=len(state.chains),
                problems=problems,
            )
        finally:
            self._lock.release()

    def refresh_in_background(self, min_interval_s: float = GAUGE_REFRESH_S) -> bool:
        """Start a refresh on a daemon thread unless one ran in the last ``min_interval_s``
        or one is running; True if one was started. For callers that must not wait (a scrape)."""
        last = self._refreshed_mono
        if last is not None and time.monotonic() - last < min_interval_s:
            return False
        if self._background is not None and self._background.is_alive():
            return False
        if self._lock.locked():
            return False
        self._background = threading.Thread(target=self._refresh_quietly, name="verdict-monitor", daemon=True)
        self._background.start()
        return True

    @property
    def refreshing(self) -> bool:
        """A fold is running (a page shows the figures of the last one meanwhile)."""
        return self._lock.locked()

    def wait_background(self, timeout: float | None = None) -> None:
        """Wait for a background refresh to finish (tests, shutdown)."""
        thread = self._background
        if thread is not None:
            thread.join(timeout)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(wait=False)
        except Exception:  # noqa: BLE001 - a background thread has no caller to tell: logged, the next scrape retries
            _log.exception("monitoring: refreshing the summary failed")

    def _chain_ids(self, state: MonitorState) -> list[str]:
        found = set(state.chains)
        for key in self.store.list_keys(layout.CERTIFICATES_PREFIX):
            parsed = layout.parse_certificate_key(key)
            if parsed is not None:
                found.add(parsed[0])
        now = time.monotonic()
        if self._listed_at is None or now - self._listed_at >= self.discover_every_s:
            for key in self.store.list_keys(layout.CHAINS_PREFIX):
                parts = key.split("/")
                if len(parts) == 4 and parts[2] == "segments":
                    found.add(parts[1])
            self._listed_at = now
        return sorted(found)

    def _read_chain(self, state: MonitorState, chain_id: str, cursor: ChainCursor) -> None:
        """Fold every record from the cursor on, segment by segment, until a segment is missing."""
        cursor.problem = None
        while True:
            key = layout.segment_key(chain_id, cursor.segment)
            try:
                data = self.store.get(key)
            except ObjectMissing:
                return
            try:
                lines = iter_lines(data)
            except RecordError as exc:
                cursor.problem = f"{key}: {exc} (run `verdict audit verify`)"
                return
            for position in range(cursor.offset, len(lines)):
                problem = self._read_record(state, chain_id, cursor, key, lines[position], position)
                if problem is not None:
                    cursor.problem = problem
                    break
            if cursor.last_key == key:  # hashed once per segment, not per record
                cursor.last_hash = hashlib.sha256(split_line(lines[cursor.last_line])[0]).hexdigest()
            if cursor.problem is not None:
                return
            cursor.segment += len(lines)
            cursor.offset = 0

    def _read_record(
        self, state: MonitorState, chain_id: str, cursor: ChainCursor, key: str, line: bytes, position: int
    ) -> str | None:
        """Fold one record; the problem that stops the chain here, or None."""
        seq = cursor.segment + position
        try:
            raw, _ = split_line(line)
            body = None
            if _DECISION_MARK in raw:
                header = decode_header(raw)
                if header.seq != seq or header.chain_id != chain_id:
                    return f"{key} line {position + 1} holds {header.chain_id}/{header.seq}, expected {chain_id}/{seq} (run `verdict audit verify`)"
                if body_kind(header.body) == "decision":
                    body = decode_body(header.body)
        except RecordError as exc:
            return f"{key} line {position + 1}: {exc} (run `verdict audit verify`)"
        if isinstance(body, DecisionBody):
            ref = f"{body.model.name}:{body.model.version}"
            fold = state.versions.get(ref)
            if fold is None:
                fold = state.versions[ref] = self._folder.new_fold(body)
            try:
                self._folder.fold(fold, body)
            except AuditUnavailable as exc:
                return f"{chain_id}/{seq}: {exc.detail} (retried on the next refresh)"
            self.decisions_folded += 1
        self.records_read += 1
        cursor.offset = position + 1
        cursor.last_key, cursor.last_line = key, position
        return None

    # -- the summary --------------------------------------------------------------------------

    def summary(self, model: str | None = None, version: str | None = None) -> MonitorSummary:
        """The figures as of the last refresh, for every model version or only ``model``
        (and ``version``). Never reads the store and never waits for a refresh running
        meanwhile: call :meth:`refresh` first for the newest."""
        full = self._summary or self._empty()
        if model is None:
            return full
        return msgspec.structs.replace(full, models=full.model(model, version))

    def _empty(self) -> MonitorSummary:
        return MonitorSummary(
            store=self.store.url, refreshed_at=None, decisions=0, records_read=0, chains={}, problems={}, models=[]
        )

    def _build_summary(self, state: MonitorState) -> MonitorSummary:
        models = [summarise(state.versions[ref]) for ref in sorted(state.versions)]
        return MonitorSummary(
            store=self.store.url,
            refreshed_at=self._refreshed_at,
            decisions=sum(m.decisions for m in models),
            records_read=self.records_read,
            chains={c: cur.next_seq for c, cur in sorted(state.chains.items())},
            problems={c: cur.problem for c, cur in sorted(state.chains.items()) if cur.problem},
            models=models,
        )

    def collector(self, refresh_every_s: float = GAUGE_REFRESH_S) -> MonitorCollector:
        return MonitorCollector(self, refresh_every_s)

    # -- keeping the state on disk -------------------------------------------------------------

    def _state_path(self) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / f"state-{hashlib.sha256(self.store.url.encode()).hexdigest()[:24]}.json"

    def _ensure_state(self) -> MonitorState:
        if self._state is None:
            self._state = self._load() or MonitorState(store=self.store.url)
        return self._state

    def _load(self) -> MonitorState | None:
        path = self._state_path()
        if path is None or not path.is_file():
            return None
        try:
            state = msgspec.json.decode(path.read_bytes(), type=MonitorState)
            if state.store != self.store.url:
                raise _Invalid(f"it is the state of {state.store}")
            for chain_id, cursor in state.chains.items():
                self._check_cursor(chain_id, cursor)
        except (OSError, msgspec.MsgspecError, RecordError, StoreError, IndexError, _Invalid) as exc:
            _log.warning("monitoring: not using %s (%s); folding the trail again", path, exc)
            return None
        self.loaded_from_disk = True
        return state

    def _check_cursor(self, chain_id: str, cursor: ChainCursor) -> None:
        if cursor.last_key is None:
            if cursor.next_seq:
                raise _Invalid(f"chain {chain_id}: a cursor at {cursor.next_seq} without a last record")
            return
        raw, _ = split_line(iter_lines(self.store.get(cursor.last_key))[cursor.last_line])
        if hashlib.sha256(raw).hexdigest() != cursor.last_hash:
            raise _Invalid(f"chain {chain_id}: the record at {cursor.last_key} line {cursor.last_line + 1} changed")

    def _persist(self, state: MonitorState) -> None:
        path = self._state_path()
        if path is None:
            return
        try:
            write_atomically(path, msgspec.json.encode(state))
        except OSError as exc:  # the summary is still right in memory; a restart folds again
            _log.warning("monitoring: cannot keep the summary in %s: %s", path, exc)


# -- one version's figures ----------------------------------------------------------------------


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _number(value: float, unit: str | None = None) -> str:
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def _range_bins(
    edges: Sequence[float], live: Sequence[int], reference: Sequence[int] | None, unit: str | None = None
) -> list[Bin]:
    n, m = sum(live), sum(reference) if reference is not None else 0
    out = []
    for k, count in enumerate(live):
        if not edges:
            label = "all values"
        elif k == 0:
            label = f"below {_number(edges[0], unit)}"
        elif k == len(edges):
            label = f"{_number(edges[-1], unit)} and above"
        else:
            label = f"{_number(edges[k - 1])} to {_number(edges[k], unit)}"
        ref = reference[k] if reference is not None else None
        out.append(
            Bin(
                label=label,
                live=count,
                live_share=_share(count, n),
                reference=ref,
                reference_share=_share(ref, m) if ref is not None else None,
            )
        )
    return out


def _attribute_distributions(fold: VersionFold) -> list[Distribution]:
    if fold.reference is None:
        return []
    specs: dict[str, AttributeSpec] = {s.name: s for s in fold.inputs}
    out = []
    for attr in fold.reference.attributes:
        spec = specs.get(attr.name)
        live = fold.attribute_counts.get(attr.name, [0] * len(attr.counts))
        if attr.kind == "category":
            n, m = sum(live), sum(attr.counts)
            labels = (spec.category_labels or {}) if spec is not None else {}
            bins = [
                Bin(
                    label=labels.get(code, code),
                    code=code,
                    live=count,
                    live_share=_share(count, n),
                    reference=ref,
                    reference_share=_share(ref, m),
                )
                for code, count, ref in zip(attr.categories, live, attr.counts, strict=True)
            ]
        else:
            bins = _range_bins(attr.edges, live, attr.counts, spec.unit if spec is not None else None)
        value = psi(live, attr.counts)
        out.append(
            Distribution(
                attribute=attr.name,
                label=spec.label if spec is not None else attr.name,
                kind=attr.kind,
                bins=bins,
                live_total=sum(live),
                reference_total=sum(attr.counts),
                psi=value,
                shift=shift(value),
                protected=attr.name in fold.protected,
                unbinned=fold.unbinned.get(attr.name, 0),
            )
        )
    return out


def _score_distribution(fold: VersionFold) -> Distribution | None:
    if not fold.score_counts:
        return None
    reference = fold.reference.score_counts if fold.reference is not None else None
    value = psi(fold.score_counts, reference) if reference is not None else None
    return Distribution(
        attribute="score",
        label="Score",
        kind="score",
        bins=_range_bins(fold.score_edges, fold.score_counts, reference),
        live_total=sum(fold.score_counts),
        reference_total=sum(reference) if reference is not None else None,
        psi=value,
        shift=shift(value),
    )


def summarise(fold: VersionFold) -> ModelSummary:
    """One version's figures from its counts."""
    labels = {s.name: s.label for s in fold.inputs}
    reasons = [
        ReasonRate(
            attribute=name,
            label=labels.get(name, name),
            protected=name in fold.protected,
            principal=count,
            first=fold.first.get(name, 0),
            rate=_share(count, fold.explained),
            adverse=fold.principal_adverse.get(name, 0),
            adverse_rate=_share(fold.principal_adverse.get(name, 0), fold.adverse_explained),
        )
        for name, count in fold.principal.items()
    ]
    reasons.sort(key=lambda r: (-r.principal, r.attribute))
    reference = fold.reference
    return ModelSummary(
        model=fold.model,
        version=fold.version,
        artifact_sha256=fold.artifact_sha256,
        manifest_sha256=fold.manifest_sha256,
        output_space=fold.output_space,
        threshold=fold.threshold,
        adverse_decision=fold.adverse_decision,
        decisions=fold.decisions,
        first_decided_at=fold.first_at,
        last_decided_at=fold.last_at,
        outcomes=[
            OutcomeRate(decision=d, count=c, rate=c / fold.decisions, adverse=d == fold.adverse_decision)
            for d, c in sorted(fold.outcomes.items(), key=lambda item: (-item[1], item[0]))
        ],
        days=[DayOutcomes(day=d, decisions=sum(o.values()), outcomes=dict(o)) for d, o in sorted(fold.days.items())],
        score=_score_distribution(fold),
        score_mean=fold.score_sum / fold.decisions if fold.decisions else None,
        score_min=fold.score_min,
        score_max=fold.score_max,
        attributes=_attribute_distributions(fold),
        attributes_read=fold.attributes_read,
        attributes_erased=fold.erased,
        attributes_sealed=fold.sealed,
        attributes_unreadable=fold.unreadable,
        explained=fold.explained,
        adverse=fold.adverse,
        reasons=reasons,
        protected=ProtectedReasons(
            attributes=dict(fold.protected),
            explained=fold.explained,
            with_protected=fold.with_protected,
            rate=_share(fold.with_protected, fold.explained),
            adverse_explained=fold.adverse_explained,
            adverse_with_protected=fold.adverse_with_protected,
            adverse_rate=_share(fold.adverse_with_protected, fold.adverse_explained),
        ),
        reference=None
        if reference is None
        else ReferenceInfo(
            dataset=reference.dataset,
            dataset_sha256=reference.dataset_sha256,
            rows=reference.rows,
            source=reference.source,
        ),
        no_reference=fold.no_reference,
        notes=list(fold.notes),
    )


# -- the gauges ---------------------------------------------------------------------------------


class MonitorCollector(Collector):
    """The monitor's figures as Prometheus metrics, read from its current summary.

    ``verdict_monitor_decisions_total{model,version,decision}``,
    ``verdict_monitor_psi{model,version,attribute}`` (``attribute="score"``: the score's),
    ``verdict_monitor_reason_rate{model,version,attribute}`` (share of explained decisions
    with the attribute among their principal reasons),
    ``verdict_monitor_protected_reason_rate{model,version}``,
    ``verdict_monitor_attributes_unavailable{model,version,why}`` (erased, sealed, unreadable),
    ``verdict_monitor_records_read_total`` and ``verdict_monitor_refreshed_timestamp_seconds``.
    A scrape starts a background refresh at most every ``refresh_every_s`` and never waits for it."""

    def __init__(self, monitor: TrailMonitor, refresh_every_s: float = GAUGE_REFRESH_S) -> None:
        self.monitor = monitor
        self.refresh_every_s = refresh_every_s

    def describe(self) -> Iterator[Metric]:
        """The names, without reading anything (registering must not start a refresh)."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        self.monitor.refresh_in_background(self.refresh_every_s)
        return self._families(self.monitor.summary())

    def _families(self, summary: MonitorSummary | None) -> Iterator[Metric]:
        labels = ["model", "version"]
        decisions = CounterMetricFamily(
            "verdict_monitor_decisions", "Decisions in the audit trail, by outcome", labels=[*labels, "decision"]
        )
        drift = GaugeMetricFamily(
            "verdict_monitor_psi",
            "Population stability index against the training reference (attribute=score: the score's)",
            labels=[*labels, "attribute"],
        )
        reasons = GaugeMetricFamily(
            "verdict_monitor_reason_rate",
            "Share of explained decisions with the attribute among their principal reasons",
            labels=[*labels, "attribute"],
        )
        protected = GaugeMetricFamily(
            "verdict_monitor_protected_reason_rate",
            "Share of explained decisions with a protected attribute among their principal reasons",
            labels=labels,
        )
        unavailable = GaugeMetricFamily(
            "verdict_monitor_attributes_unavailable",
            "Decisions whose attributes could not be read (erased, sealed without a key here, unreadable)",
            labels=[*labels, "why"],
        )
        read = CounterMetricFamily("verdict_monitor_records_read", "Audit records read by the monitor")
        refreshed = GaugeMetricFamily(
            "verdict_monitor_refreshed_timestamp_seconds", "When the monitor last read the trail (Unix time)"
        )
        if summary is not None:
            for m in summary.models:
                key = [m.model, m.version]
                for outcome in m.outcomes:
                    decisions.add_metric([*key, outcome.decision], outcome.count)
                for dist in [m.score, *m.attributes]:
                    if dist is not None and dist.psi is not None:
                        drift.add_metric([*key, dist.attribute], dist.psi)
                for reason in m.reasons:
                    if reason.rate is not None:
                        reasons.add_metric([*key, reason.attribute], reason.rate)
                if m.protected.rate is not None:
                    protected.add_metric(key, m.protected.rate)
                for why, count in (
                    ("erased", m.attributes_erased),
                    ("sealed", m.attributes_sealed),
                    ("unreadable", m.attributes_unreadable),
                ):
                    unavailable.add_metric([*key, why], count)
            read.add_metric([], summary.records_read)
            if summary.refreshed_at is not None:
                refreshed.add_metric([], _unix(summary.refreshed_at))
        yield from (decisions, drift, reasons, protected, unavailable, read, refreshed)


def _unix(timestamp: str) -> float:
    return parse_time(timestamp).timestamp()

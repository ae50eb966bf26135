"""Why a service could not answer: the domain errors of decisions, lookups and replays.

Why a family of our own: the services say what went wrong in their own terms
(which request id, which replay, how long until a retry may succeed) without
knowing they are served over HTTP; the CLI, the benchmarks and in-process
tests use them with no web framework. Only the HTTP layer
(``gateway.problems``) turns a class into a status, a problem type and
headers, in one table, so what a client sees is decided in one place.

Each error carries the facts and a ``detail`` sentence for the client; none
carries an HTTP status or header. This module imports nothing of the
project, so any service (``replay.service`` too) can raise these.
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "DecisionErased",
    "DecisionTimeout",
    "InferIdConflict",
    "InputsSealed",
    "ModelNotPromoted",
    "ModelOutputInvalid",
    "ModelUnavailable",
    "ModelVersionRevoked",
    "NoSubjectRecords",
    "NotExplained",
    "RecordInvalid",
    "ReplayNotFinished",
    "ReplaysUnavailable",
    "RequestIdConflict",
    "ServiceError",
    "SubjectAccessUnavailable",
    "SubjectRequestInvalid",
    "SubjectUnderHold",
    "UnknownDecision",
    "UnknownModelVersion",
]


class ServiceError(Exception):
    """A request a service refused or could not complete; ``detail`` tells the client why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# -- what the request names does not exist -------------------------------------------------------


class UnknownModelVersion(ServiceError):
    """The model, or the version of it, the request names is not registered (or, with no
    version named, has no production version); ``detail`` is the registry's own account."""

    def __init__(self, model: str, version: str | None, detail: str) -> None:
        super().__init__(detail)
        self.model, self.version = model, version


class ModelNotPromoted(ServiceError):
    """The request names no version and the model has no production version: routing is
    the production alias only (registering never changes it), so the client must pin a
    version or an operator must promote one."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(detail)
        self.model = model


class ModelVersionRevoked(ServiceError):
    """The version (named, or the one the production alias points at) was revoked by a
    signed status event: it never serves again, though its decisions stay replayable."""

    def __init__(self, model: str, version: str, by: str, at: str, note: str) -> None:
        super().__init__(
            f"model {model} version {version} was revoked by {by} at {at}"
            + (f": {note}" if note else "")
            + "; it no longer serves (its logged decisions stay replayable)"
        )
        self.model, self.version, self.by, self.at, self.note = model, version, by, at, note


class UnknownDecision(ServiceError):
    """No decision with this request id is on record."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no decision with request id {request_id!r} is on record")
        self.request_id = request_id


# -- the request contradicts what is on record ------------------------------------------------------


class RequestIdConflict(ServiceError):
    """The request id was already decided for a different body: answering would hide one of the two."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already decided for a different request body; use a new request_id"
        )
        self.request_id = request_id


class InferIdConflict(RequestIdConflict):
    """An Open Inference Protocol infer ``id`` already named an infer call with other rows
    (more, fewer, or different ones): its rows ``<id>.<i>`` would answer a different body."""

    def __init__(self, infer_id: str, detail: str) -> None:
        ServiceError.__init__(self, f"infer id {infer_id!r} was already used for {detail}; use a new id")
        self.request_id = infer_id


class NotExplained(ServiceError):
    """The logged decision has no contributions (made without explanation), so there is nothing to chart."""

    def __init__(self, request_id: str, method: str) -> None:
        super().__init__(f"decision {request_id!r} was made with explanation method {method!r}")
        self.request_id, self.method = request_id, method


class InputsSealed(ServiceError):
    """The logged inputs are encrypted and this process cannot open them (no keyring, or a
    keyring without the record's key), so reasons and charts that name them cannot be rebuilt here."""

    def __init__(self, request_id: str, why: str = "") -> None:
        super().__init__(f"this record's inputs are sealed{': ' + why if why else ''}")
        self.request_id = request_id


class DecisionErased(ServiceError):
    """The decision's personal data was erased (its subject's data key destroyed, GDPR
    Art. 17 or the end of retention): the record still verifies, but nothing personal in
    it can be read again. ``erasure``: where the signed erasure record is (chain_id, seq,
    record_hash, erased_at, cause)."""

    def __init__(self, request_id: str, erasure: dict[str, object]) -> None:
        super().__init__(
            f"the personal data of decision {request_id!r} was erased ({erasure['cause']}) on "
            f"{erasure['erased_at']}, recorded by erasure record {erasure['chain_id']}/{erasure['seq']} "
            f"(record hash {erasure['record_hash']}); the record itself still verifies"
        )
        self.request_id, self.erasure = request_id, erasure


class SubjectAccessUnavailable(ServiceError):
    """This gateway keeps no subject index (sealing is switched off), so it cannot find a
    subject's decisions without scanning the whole trail."""

    def __init__(self) -> None:
        super().__init__(
            "this gateway records personal data unsealed (seal = false), so it keeps no subject index; "
            "subject access needs sealing on"
        )


class SubjectUnderHold(ServiceError):
    """Erasure refused: a legal hold is set on the subject's decisions."""


class NoSubjectRecords(ServiceError):
    """Nothing is on file about this subject (never decided about, or already erased)."""

    def __init__(self) -> None:
        super().__init__("the subject index holds no decision about this subject (never decided about, or erased)")


class SubjectRequestInvalid(ServiceError):
    """An erasure or hold request is incomplete or contradicts the subject's state (no legal
    basis given, a release without a hold); ``field``: the input at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class ReplayNotFinished(ServiceError):
    """The replay is still running: its report does not exist yet."""

    def __init__(self, replay_id: str) -> None:
        super().__init__(f"replay {replay_id} is still running")
        self.replay_id = replay_id


# -- the model broke its contract ------------------------------------------------------------------


class ModelOutputInvalid(ServiceError):
    """The model answered a value outside the output space its manifest declares (a
    probability outside [0, 1]; NaN or infinity in any space): the decision fails closed,
    nothing is recorded. ``rows``: (row in the scored batch, value) of every such answer."""

    def __init__(self, model: str, version: str, space: str, rows: list[tuple[int, float]]) -> None:
        rule = "a probability in [0, 1]" if space == "probability" else "a finite number"
        shown = ", ".join(f"row {row}: {value!r}" for row, value in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        super().__init__(
            f"model {model} version {version} returned a value outside its declared output space "
            f"{space!r} (must be {rule}) for {shown}{more}; no decision was made"
        )
        self.model, self.version, self.space, self.rows = model, version, space, rows


# -- the trail says something is wrong ----------------------------------------------------------


class RecordInvalid(ServiceError):
    """A logged decision failed verification (hash, signature, chain position or trust):
    an integrity failure for operators, never shown as if it were the logged answer."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(
            f"the record of {request_id!r} failed verification ({reason}); operators: run `verdict audit verify`"
        )
        self.request_id, self.reason = request_id, reason


# -- not now: the same request may succeed later ---------------------------------------------------


class AuditUnavailable(ServiceError):
    """The audit trail (store or signer) cannot record or be read: nothing was decided or
    answered, fail closed. ``retry_after_s`` is how long a client should wait before retrying
    with the same request id."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class DecisionTimeout(ServiceError):
    """No durable record within the request's time limit; the decision may still be recorded,
    so the client retries with the same request id after ``retry_after_s``."""

    def __init__(self, timeout_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"no durable record within {timeout_s}s; retry with the same request_id to get the decision "
            f"if it was recorded"
        )
        self.timeout_s, self.retry_after_s = timeout_s, retry_after_s


class ModelUnavailable(ServiceError):
    """The model version cannot be loaded on this replica (a broken or altered artifact, a
    graph that breaks the model contract, a manifest that no longer decodes, a store that
    did not answer); other models still serve. Loading is retried at most every few
    seconds, ``retry_after_s`` from now at the latest."""

    def __init__(self, model: str, version: str, reason: str, retry_after_s: int) -> None:
        super().__init__(
            f"model {model} version {version} cannot be served by this replica: {reason}; "
            f"no decision was made (loading is retried, next in {retry_after_s}s)"
        )
        self.model, self.version, self.reason, self.retry_after_s = model, version, reason, retry_after_s


class ReplaysUnavailable(ServiceError):
    """This process runs without an audit trail, so it has no replay service at all."""

    def __init__(self) -> None:
        super().__init__("this process runs without an audit trail (unsafe benchmark mode)")

"""Audited decisions in-process: score, explain, append the signed record, then answer.

Why the HTTP service's own pieces: a decision made here must be exactly the
decision the gateway would make -- the same deterministic runtime, the same
explainer, the same record appended durably *before* the answer exists -- or
replay proves nothing about it. :class:`Gateway` assembles them as
gateway.service.build_services does (store, keys, trust root, chain writer,
decision service) without the HTTP layer, micro-batcher or timers, and with
the private material in an explicit ``home``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import msgspec

from verdict._errors import DecisionRefused, StoreUnavailable, VerdictError
from verdict._store import Store, open_store
from verdict._trust import PolicySource, keyring_home, resolve_home, signing_identity, verify_policy
from verdict._types import Decision, Reason, Receipt
from verdict.audit.chain import ChainError, ChainWriter
from verdict.audit.index import RequestIndex
from verdict.audit.personal_data import PersonalData, configured_keyring
from verdict.audit.stores import StoreError
from verdict.audit.trust import TrustError, TrustPolicy
from verdict.audit.witnessing import CheckpointWitnessing, held_notes
from verdict.gateway import environment
from verdict.gateway.api_models import DecisionRequest, DecisionResponse
from verdict.gateway.decisions import AuditLane, DecisionService
from verdict.gateway.engine import Engine
from verdict.gateway.metrics import GatewayMetrics
from verdict.gateway.registry import Registry
from verdict.gateway.schema import InputValidationError
from verdict.gateway.service import publish_environment
from verdict.gateway.service_errors import ServiceError

__all__ = ["Gateway"]


class Gateway:
    """Makes audited decisions on one chain of ``store``; close it (or use ``with``).

    ``store``: a :class:`Store` or a location for :func:`open_store`.
    ``home``: the signing key and trust root (created on first use, as
    ``verdict serve`` does; default: the CLI's data directory) and the
    checkpoints kept outside the store. ``chain_id``: this writer's chain --
    one writer per chain, enforced by a lease: a live writer in another
    process (a ``verdict serve`` on the same store) is refused; a second
    Gateway on the same chain in this process takes the chain over, and the
    first then refuses to decide (``audit-unavailable``). ``trust``: the policy the chain must be
    anchored under (default: ``home``'s root's own); a decision is answered
    from an earlier record only if that record's key is certified by it.

    Opening loads nothing but the chain; a model version is loaded (about a
    second) on its first decision. Thread-safe: decisions are made one at a
    time, each durably recorded before the next starts.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        home: str | os.PathLike[str] | None = None,
        chain_id: str = "gateway-0",
        trust: PolicySource | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        worm = self.store._worm
        home_dir = resolve_home(home)
        signer, keys, root = signing_identity(home_dir)
        policy = verify_policy(trust, False) if trust is not None else root.policy()
        if root.key_id not in {r.key_id for r in policy.roots}:
            raise VerdictError(f"the trust root {root.key_id} of {home_dir} is not in the given trust policy")
        self.trust_policy: TrustPolicy = policy
        """The policy this gateway's chain is anchored under (give it to verifiers)."""
        models = Engine(Registry(worm))
        metrics = GatewayMetrics()
        held_dir = home_dir / "trust" / "held"
        self._lock = threading.Lock()
        self._closed = False
        try:
            env_sha = publish_environment(worm, environment.capture(device=models.device(), seed=0))
            self._witnessing = CheckpointWitnessing(worm, chain_id, policy.witnesses, policy.witness_quorum, held_dir)
        except StoreError as exc:
            raise StoreUnavailable(f"cannot start: {exc}") from None
        try:
            self._writer = ChainWriter.open(
                worm,
                chain_id,
                signer,
                keyring=keys,
                created_by="verdict python api",
                root=root,
                policy=policy,
                held_checkpoints=held_notes(held_dir, chain_id),
                on_checkpoint=self._witnessing.checkpointed,
                on_leaves=self._witnessing.appended,
            )
        except BaseException as exc:
            self._witnessing.close()
            if isinstance(exc, StoreError):
                raise StoreUnavailable(f"cannot open chain {chain_id!r}: {exc}") from None
            if isinstance(exc, (ChainError, TrustError)):  # another live writer, a chain not anchored under trust
                raise VerdictError(f"cannot open chain {chain_id!r}: {exc}") from None
            raise
        try:  # personal data is sealed under keys in home's keyring (docs/audit-format.md §3a)
            personal = PersonalData(configured_keyring(str(keyring_home(home_dir))))
        except (OSError, ValueError) as exc:
            self._writer.close()
            self._witnessing.close()
            raise VerdictError(f"cannot open the data keyring of {home_dir}: {exc}") from None
        self._decisions = DecisionService(
            models,
            AuditLane(self._writer, metrics),
            RequestIndex(worm),
            env_sha,
            metrics,
            trust=policy,
            personal=personal,
            retention=personal.retention,
        )

    @property
    def chain_id(self) -> str:
        """The chain this gateway appends to."""
        return self._writer.chain_id

    def decide(
        self,
        model: str,
        attributes: Mapping[str, Any],
        *,
        version: str | None = None,
        request_id: str | None = None,
        subject_id: str | None = None,
    ) -> Decision:
        """Score, explain and durably record one decision, then return it.

        ``version``: default the production version. ``request_id``: the
        idempotency key (default a new ``req-<uuid>``): the same id with the
        same request returns the logged decision (``idempotent_replay``), with
        another request :class:`DecisionRefused` ``request-id-conflict``.
        Nothing is returned that was not recorded first: if the record cannot
        be made durable, :class:`DecisionRefused` ``audit-unavailable``."""
        fields = {"model": model, "attributes": dict(attributes), "version": version}
        fields |= {"request_id": request_id, "subject_id": subject_id}
        try:
            request = msgspec.convert({k: v for k, v in fields.items() if v is not None}, DecisionRequest)
        except msgspec.ValidationError as exc:
            raise DecisionRefused("invalid-request", str(exc)) from None
        with self._lock:
            if self._closed:
                raise VerdictError("this gateway is closed")
            try:
                pending = self._decisions.prepare(request)
            except (InputValidationError, ServiceError) as exc:  # the service refused the request
                raise _refused(exc) from None
            (outcome,) = self._decisions.decide_batch([pending])
        if not isinstance(outcome, DecisionResponse):
            raise _refused(outcome)
        return _decision(outcome)

    def checkpoint(self) -> str | None:
        """Write a signed checkpoint of the chain now (None if its head is already
        covered), so lookups include an inclusion proof and replay needs no
        ``allow_pending``. Closing writes one too."""
        try:
            return self._writer.checkpoint()
        except (StoreError, ChainError) as exc:
            raise StoreUnavailable(f"checkpoint not written: {exc}") from None

    def close(self) -> None:
        """Write the final checkpoint and release the chain's lease (the next writer may start at once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._writer.close()
        finally:
            self._witnessing.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CODES = {
    "UnknownModelVersion": "unknown-model",
    "RequestIdConflict": "request-id-conflict",
    "AuditUnavailable": "audit-unavailable",
    "DecisionTimeout": "audit-unavailable",
    "ModelNotPromoted": "no-production-version",
    "ModelVersionRevoked": "model-version-revoked",
    "ModelUnavailable": "model-unavailable",
    "ModelOutputInvalid": "model-output-invalid",
}
"""Domain error class -> the stable public code (the HTTP problem slugs, which they replace)."""


def _refused(problem: InputValidationError | ServiceError) -> DecisionRefused:
    """The public error for a refusal of the decision service."""
    if isinstance(problem, InputValidationError):
        return DecisionRefused("invalid-attributes", str(problem), {e.field: e.message for e in problem.errors})
    return DecisionRefused(_CODES.get(type(problem).__name__, "refused"), problem.detail or str(problem), {})


def _decision(response: DecisionResponse) -> Decision:
    r = response.receipt
    return Decision(
        request_id=response.request_id,
        model=response.model.name,
        model_version=response.model.version,
        model_sha256=response.model.sha256,
        score=response.score,
        decision=response.decision,
        reasons=tuple(
            Reason(
                attribute=x.attribute,
                label=x.label,
                value=x.value,
                direction=x.direction,
                contribution=x.contribution,
                text=x.text,
            )
            for x in response.reasons
        ),
        base_value=response.base_value,
        contributions=dict(response.contributions),
        receipt=Receipt(
            chain_id=r.chain_id, seq=r.seq, record_hash=r.record_hash, signature=r.signature, key_id=r.key_id
        ),
        decided_at=response.decided_at,
        idempotent_replay=response.idempotent_replay,
    )

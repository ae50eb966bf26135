"""A store, opened: verify it, read one decision from it, replay one decision.

Why methods on one small object: every one of these starts from the same
write-once store (filesystem or S3 Object Lock) and the same trust rule --
nothing is called verified without a trust policy unless the caller passes
``unanchored=True``, as ``verdict audit verify`` demands ``--unanchored``.
Verifying and reading import no torch (an examiner's process); replay does.
"""

from __future__ import annotations

import os
from pathlib import Path

from verdict._errors import DecisionErased, RecordNotVerified, StoreUnavailable, VerdictError
from verdict._trust import PolicySource, keyring_home, resolve_home, signing_identity, verify_policy
from verdict._types import Decision, Finding, LoggedDecision, Reason, Receipt, ReplayVerdict, Verification
from verdict.audit import records
from verdict.audit.chain import ChainError
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.stores import StoreError, WormStore
from verdict.audit.stores import open_store as _open_url
from verdict.audit.stores.registry import find_backend
from verdict.audit.verifier import verify_store

__all__ = ["Store", "open_store"]


def open_store(location: str | os.PathLike[str]) -> Store:
    """Open a store: a directory path (created on first write), or the URL of any registered
    backend: ``file:///path``, ``s3://bucket/prefix?endpoint_url=...&region=...`` (Object Lock,
    COMPLIANCE mode)."""
    text = os.fspath(location)
    url = text if find_backend(text) is not None else Path(text).absolute().as_uri()
    try:
        return Store(_open_url(url), url)
    except (StoreError, ValueError) as exc:
        raise StoreUnavailable(f"cannot open store {url}: {exc}") from None


class Store:
    """An opened write-once store. Get one from :func:`open_store`."""

    def __init__(self, worm: WormStore, url: str) -> None:
        self._worm = worm
        self.url = url
        """The store's URL (``file:///...`` or ``s3://...``)."""

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def verify(
        self, *, trust: PolicySource | None = None, unanchored: bool = False, workers: int | None = None
    ) -> Verification:
        """Verify everything in the store: every chain's hashes, links, signatures and
        checkpoints, the request index, content-addressed objects, and (with ``trust``)
        that every signing key is certified by a trusted root.

        ``trust``: a :class:`TrustPolicy` or a policy file; without one,
        :class:`TrustPolicyRequired` unless ``unanchored=True``. ``workers``:
        processes for signature checks (None: automatic). The result is
        returned, not raised: check ``ok``."""
        policy = verify_policy(trust, unanchored)
        try:
            report = verify_store(self._worm, trust=policy, workers=workers, ask_witnesses=policy is not None)
        except StoreError as exc:
            raise StoreUnavailable(f"store unreachable during verification: {exc}") from None

        def finding(f) -> Finding:  # noqa: ANN001 - audit.verifier.Finding
            return Finding(reason=f.reason, message=f.message, chain_id=f.chain_id, seq=f.seq, key=f.key)

        return Verification(
            ok=report.ok,
            anchored=report.anchored,
            store=report.store,
            records=report.records,
            chains=tuple(c.chain_id for c in report.chains),
            failures=tuple(finding(f) for f in report.failures),
            failure_count=report.failure_count,
            notes=tuple(finding(f) for f in report.notes),
            trust_roots=tuple(report.trust_roots),
        )

    def read_decision(
        self,
        request_id: str,
        *,
        trust: PolicySource | None = None,
        unanchored: bool = False,
        home: str | os.PathLike[str] | None = None,
    ) -> LoggedDecision:
        """The logged decision of ``request_id``, verified: record hash, signature, the
        key's certificate (with ``trust``), and inclusion in the latest signed checkpoint
        when one covers it. :class:`RecordNotVerified` (with the reason code) otherwise.
        Its personal data is opened with ``home``'s data keyring (docs/audit-format.md §3a);
        without the key, ``attributes`` is None and the reasons carry no values;
        :class:`DecisionErased` once the subject was erased.

        What a GDPR Art. 22 / adverse-action lookup shows, as ``verdict audit show``."""
        policy = verify_policy(trust, unanchored)
        try:
            verified = read_decision(self._worm, request_id, trust=policy)
        except ReadError as exc:
            raise RecordNotVerified(exc.reason, str(exc)) from None
        except StoreError as exc:
            raise StoreUnavailable(f"store unreachable: {exc}") from None
        body = _opened(verified.body, keyring_home(resolve_home(home)))
        receipt = Receipt(
            chain_id=verified.chain_id,
            seq=verified.seq,
            record_hash=verified.record_hash,
            signature=verified.signature,
            key_id=verified.key_id,
        )
        inputs = body.inputs
        return LoggedDecision(
            decision=decision_from_record(body, receipt),
            anchored=policy is not None,
            checkpoint_key=verified.inclusion.checkpoint_key if verified.inclusion is not None else None,
            attributes=dict(inputs.attributes) if isinstance(inputs, records.PlainInputs) else None,
        )

    def replay(
        self,
        request_id: str,
        *,
        trust: PolicySource | None = None,
        unanchored: bool = False,
        home: str | os.PathLike[str] | None = None,
        allow_pending: bool = False,
        purpose: str | None = None,
        replay_chain: str = "replay-0",
    ) -> ReplayVerdict:
        """Replay one logged decision, as ``verdict replay REQUEST_ID`` does: prove the
        record, reload the exact model and recorded runtime, re-score and re-explain
        through the gateway's own code, and judge the result against the tolerance fixed
        at registration. The signed report is stored in the trail as evidence, and the
        replay is recorded (access + evidence records) on ``replay_chain``, signed with
        ``home``'s key and certified by its root.

        ``allow_pending``: also replay a record no signed checkpoint covers yet
        (a gateway checkpoints on :meth:`Gateway.checkpoint` and on close).
        The replay's resumable progress files go to ``home``'s ``replays/``.
        """
        # lazy: the replay machinery loads for Store.replay, not for open_store or verify
        from verdict.audit.personal_data import existing_personal_data
        from verdict.replay.batch import ReplayError, ReplayJob, run_replay
        from verdict.replay.report import default_actor
        from verdict.replay.trail import Selection, SelectionError

        policy = verify_policy(trust, unanchored)
        resolved_home = resolve_home(home)
        signer, keys, root = signing_identity(resolved_home)
        try:
            job = ReplayJob(
                store_url=self.url,
                selection=Selection(request_ids=[request_id]).check(),
                require_checkpoint=not allow_pending,
                actor=default_actor().replace("cli", "python", 1),
                purpose=purpose,
                replay_chain=replay_chain,
                workers=0,  # one decision: in this process
                trust=policy,
            )
            outcome = run_replay(
                job,
                signer=signer,
                keyring=keys,
                root=root,
                work_dir=Path(resolved_home) / "replays",
                personal=existing_personal_data(str(keyring_home(Path(resolved_home)))),
            )
        except (ReplayError, SelectionError) as exc:
            raise VerdictError(str(exc)) from None
        except (StoreError, ChainError) as exc:
            raise StoreUnavailable(f"the replay could not be read or recorded: {exc}") from None
        result = outcome.results[0]
        return ReplayVerdict(
            request_id=result.request_id,
            verdict=result.verdict,
            passed=result.verdict in ("identical", "within_tolerance"),
            reason=result.reason,
            why=tuple(result.why),
            logged_score=result.score.logged if result.score is not None else None,
            replayed_score=result.score.replayed if result.score is not None else None,
            replay_id=outcome.replay_id,
            report_key=outcome.stored.object_key if outcome.stored is not None else None,
            anchored=policy is not None,
        )


def _opened(body: records.DecisionBody, keyring: Path) -> records.DecisionBody:
    """A sealed decision opened with the data keyring configured here (spec §3a); as stored
    (sealed: no attributes, no reason values) where there is none or it lacks the key;
    :class:`DecisionErased` once its subject was erased."""
    # lazy: the keyring (SQLite, the KEK) is opened only for a sealed record
    from verdict.audit.personal_data import DataKeyErased, DataKeyMissing, SealError, existing_personal_data

    if not records.is_sealed(body):
        return body
    personal = existing_personal_data(str(keyring))
    if personal is None:
        return body
    try:
        return personal.open(body)
    except DataKeyErased as exc:
        e = exc.erasure
        raise DecisionErased(
            f"the personal data of {body.request_id!r} was erased ({e.cause}) on {e.erased_at}: "
            f"erasure record {e.chain_id}/{e.seq}",
            e.as_dict(),
        ) from None
    except (DataKeyMissing, SealError):
        return body
    finally:
        personal.keyring.close()


def decision_from_record(body: records.DecisionBody, receipt: Receipt, *, idempotent: bool = False) -> Decision:
    """The public decision, from the logged record only (as gateway.decisions.response_from_record)."""
    contributions = dict(body.explanation.contributions)
    return Decision(
        request_id=body.request_id,
        model=body.model.name,
        model_version=body.model.version,
        model_sha256=body.model.sha256,
        score=body.score,
        decision=body.decision,
        reasons=tuple(
            Reason(
                attribute=r.attribute,
                label=r.label,
                value="" if r.value is None else str(r.value),
                direction=r.direction,
                contribution=contributions.get(r.attribute, 0.0),
                text=r.text or "",
            )
            for r in body.reasons
        ),
        base_value=body.explanation.base_value,
        contributions=contributions,
        receipt=receipt,
        decided_at=body.decided_at,
        idempotent_replay=idempotent,
    )

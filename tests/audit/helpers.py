"""Shared builders for the audit tests (real records, real keys)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from verdict.audit import layout
from verdict.audit.records import DecisionBody, Explanation, ModelRef, PlainInputs, Reason, Runtime, utc_now
from verdict.audit.signing import Ed25519Signer

CREATED = "2025-01-01T00:00:00.000000Z"


def signer(n: int = 1) -> Ed25519Signer:
    """A deterministic test key (seed = 32 bytes of ``n``)."""
    return Ed25519Signer.from_seed(bytes([n]) * 32, CREATED)


def decision(request_id: str, score: float = 0.42, payload: str | None = None) -> DecisionBody:
    now = utc_now()
    return DecisionBody(
        request_id=request_id,
        request_sha256=hashlib.sha256((payload or request_id).encode()).hexdigest(),
        received_at=now,
        decided_at=now,
        model=ModelRef(name="german-credit-mlp", version="1.0.0", sha256="a" * 64),
        environment_sha256="b" * 64,
        runtime=Runtime(device="cpu", dtype="float32", bucket=64, threads=1),
        inputs=PlainInputs(attributes={"duration": 24, "credit_amount": 1234.5, "purpose": "A43"}),
        score=score,
        decision="approve" if score < 0.5 else "decline",
        explanation=Explanation(
            method="shap.PermutationExplainer",
            output_space="probability",
            base_value=0.3,
            contributions={"duration": 0.07, "credit_amount": 0.05, "purpose": -0.0001},
            seed=7,
        ),
        reasons=[
            Reason(
                attribute="duration",
                label="Duration",
                value=24,
                direction="raises_risk",
                text="Duration raised the risk",
            )
        ],
    )


def decisions(prefix: str, n: int) -> list[DecisionBody]:
    return [decision(f"{prefix}-{i}", score=(i % 100) / 100) for i in range(n)]


def store_path(root: Path, key: str) -> Path:
    return root / key


def segment_keys(store, chain_id: str) -> list[str]:
    return list(store.list_keys(layout.segments_prefix(chain_id)))


def checkpoint_sizes(store, chain_id: str) -> list[int]:
    return [layout.number_from_key(k) for k in store.list_keys(layout.checkpoints_prefix(chain_id))]


def overwrite(path: Path, data: bytes) -> None:
    """Tamper with a read-only file of the filesystem store (as an intruder would)."""
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(0o444)


def staged_files(root: Path) -> list[str]:
    """What a filesystem store holds in staging, less its writers' liveness
    locks (``<owner>.lock``, audit.stores.staging): the data left behind."""
    return sorted(name for name in os.listdir(Path(root) / ".incoming") if not name.endswith(".lock"))


def wait_out_newest_lease(store, chain_id: str, skew: float) -> None:
    """Sleep until the chain's newest lease is free by the lease rule itself
    (its ``expires_at`` plus ``skew``, read from the lease document), so a test
    waits for the protocol's event instead of polling against a clock."""
    import time

    from verdict.audit.lease import newest_lease

    found = newest_lease(store, chain_id)
    if found is None or found[1] is None:
        return
    time.sleep(max(0.0, found[1].expires() + skew - time.time()) + 0.1)

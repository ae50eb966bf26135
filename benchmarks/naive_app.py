"""The naive pipeline the gateway is compared against (benchmarks only).

As commonly written: per request, validate, score, build a fresh
shap.PermutationExplainer and explain, sign one record, write it
synchronously with fsync; no batching, no group commit. Same model artifact,
same validation, same signature scheme, so the difference measured is the
architecture.

Run: python benchmarks/naive_app.py PORT STORE_DIR  (VERDICT_STORE names the registry store)
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import shap
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar, post

from verdict.audit.canonical import canonical_bytes
from verdict.audit.config import store_url
from verdict.audit.stores import open_store
from verdict.gateway.explanation import decode_background
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import load_model
from verdict.gateway.schema import encode_rows, validate_attributes

registry = Registry(open_store(store_url()))
model = load_model(registry, "german-credit")
background = decode_background(model.manifest, registry.background(model.manifest))
background_x = encode_rows(model.manifest.inputs, background.rows)
key = Ed25519PrivateKey.generate()
out_dir = Path(sys.argv[2])
out_dir.mkdir(parents=True, exist_ok=True)
counter = {"n": 0}


def _f(x: np.ndarray) -> np.ndarray:
    return model.score_matrix(np.asarray(x, dtype=np.float32))[0].astype(np.float64)


@post("/v1/decisions")
async def decide(data: dict) -> dict:
    attributes = validate_attributes(model.manifest.inputs, data["attributes"])
    x = encode_rows(model.manifest.inputs, [attributes])
    score = float(model.score_matrix(x)[0][0])
    explainer = shap.PermutationExplainer(
        _f, shap.maskers.Independent(background_x, max_samples=len(background_x)), seed=1
    )
    values = explainer(x, max_evals=2 * (x.shape[1] + 1) * 2, silent=True).values[0]  # no progress bar in a server
    record = {
        "request_id": data.get("request_id"),
        "attributes": attributes,
        "score": score,
        "contributions": {s.name: float(v) for s, v in zip(model.manifest.inputs, values, strict=True)},
    }
    body = canonical_bytes(record)
    signature = key.sign(b"verdict.audit.record.v1\x00" + hashlib.sha256(body).digest())
    counter["n"] += 1
    path = out_dir / f"{counter['n']:08d}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, body + b"\n" + signature.hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"score": score, "decision": model.decide(score), "contributions": record["contributions"]}


if __name__ == "__main__":
    uvicorn.run(Litestar([decide]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

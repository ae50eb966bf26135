"""Regenerate the vendored KServe CRD schemas from a KServe checkout.

    git clone https://github.com/kserve/kserve /tmp/kserve
    .venv/bin/python tests/deploy/schemas/kserve/vendor.py /tmp/kserve v0.20.0

(any clone or mirror with that tag: the files are read with ``git show TAG:PATH``).

Why vendored, and why pruned: tests/deploy/test_kserve.py validates the
manifests offline, against the schemas the KServe API server would apply
(the CRDs' ``openAPIV3Schema``), with no cluster and no network. Only the API
version the manifests use is kept, and of the InferenceService only the
predictor, without the per-framework shorthands and the multi-node worker
spec: they are listed in ``x-verdict-pruned``, and a manifest that used one
would fail validation (strictly: as an unknown field) rather than pass
unchecked. The schemas are KServe's (Apache-2.0, LICENSE beside them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {
    # output file: (CRD file under config/crd/full, API version)
    "servingruntime-v1alpha1.json": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "inferenceservice-v1beta1.json": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
}
PRUNED_SPEC = ["canary", "explainer", "transformer"]
PRUNED_PREDICTOR = [
    "huggingface",
    "lightgbm",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "workerSpec",
    "xgboost",
]


def schema_of(crd: dict, version: str) -> dict:
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return found["schema"]["openAPIV3Schema"]


def prune_inference_service(schema: dict) -> list[str]:
    """Keep ``spec.predictor`` (and the object's envelope); return what was dropped."""
    pruned = ["status"]
    del schema["properties"]["status"]
    spec = schema["properties"]["spec"]["properties"]
    for name in PRUNED_SPEC:
        del spec[name]
    predictor = spec["predictor"]["properties"]
    for name in PRUNED_PREDICTOR:
        del predictor[name]
    return pruned + [f"spec.{n}" for n in PRUNED_SPEC] + [f"spec.predictor.{n}" for n in PRUNED_PREDICTOR]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def main(repo: Path, tag: str) -> None:
    commit = git(repo, "rev-parse", f"{tag}^{{commit}}").strip()
    for out, (name, version) in CRDS.items():
        path = f"config/crd/full/{name}"
        schema = schema_of(yaml.safe_load(git(repo, "show", f"{commit}:{path}")), version)
        pruned = prune_inference_service(schema) if out.startswith("inferenceservice") else []
        document = {
            "$comment": f"openAPIV3Schema of {version} from kserve/kserve {tag} ({commit}) {path}; "
            "Apache-2.0 (LICENSE); regenerate with vendor.py",
            "x-verdict-pruned": pruned,
            **schema,
        }
        (HERE / out).write_text(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])

"""Cross-process determinism and the environment fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import numpy as np

from gateway import environment
from gateway.datasets import load_dataset
from gateway.schema import encode_rows
from tests.gateway.conftest import PROJECT, run_verdict


def test_two_fresh_processes_give_identical_bits(registry, german_model, tmp_path):
    rows = load_dataset("german-credit").rows[:300]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"VERDICT_STORE": registry.store.url}
    first = run_verdict("models", "predict", "german-credit", "--input", str(path), env=env)
    second = run_verdict("models", "predict", "german-credit", "--input", str(path), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    printed = np.array([json.loads(line)["score"] for line in first.stdout.splitlines()], dtype=np.float64)
    in_process, _ = german_model.score_matrix(encode_rows(german_model.manifest.inputs, rows))
    # The printed text round-trips to exactly the float32 value computed here.
    assert printed.astype(np.float32).tobytes() == in_process.tobytes()
    assert np.array_equal(printed, in_process.astype(np.float64))


def _fingerprint_in_subprocess() -> dict:
    code = (
        "from gateway import determinism, environment; import msgspec, sys;"
        "determinism.enable(1); f = environment.capture();"
        "sys.stdout.write(msgspec.json.encode({'sha': environment.fingerprint_sha256(f), 'fp': f}).decode())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True)
    return json.loads(out.stdout)


def test_fingerprint_is_stable_across_processes_and_complete():
    a, b = _fingerprint_in_subprocess(), _fingerprint_in_subprocess()
    assert a["sha"] == b["sha"]
    fp = msgspec.convert(a["fp"], environment.EnvironmentFingerprint)
    assert fp.torch.version.startswith("2.13.0")
    assert fp.determinism.use_deterministic_algorithms and not fp.determinism.cudnn_benchmark
    assert fp.determinism.cublas_workspace_config == ":4096:8"
    assert fp.determinism.intra_op_threads == 1
    assert fp.packages["torch"].startswith("2.13.0") and "numpy" in fp.key_packages
    assert len(fp.project_source_sha256) == 64
    assert environment.fingerprint_sha256(fp) == a["sha"]


def test_fingerprint_diff_names_changed_paths():
    from gateway import determinism

    determinism.enable(1)
    fp = environment.capture()
    changed = msgspec.structs.replace(fp, determinism=msgspec.structs.replace(fp.determinism, intra_op_threads=4))
    assert environment.diff(fp, changed) == [("determinism.intra_op_threads", 1, 4)]
    assert environment.fingerprint_sha256(fp) != environment.fingerprint_sha256(changed)

"""Cross-process determinism and the environment fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import msgspec
import numpy as np
import pytest
import torch

from tests.gateway.conftest import PROJECT, run_verdict
from verdict.gateway import determinism, environment
from verdict.gateway.datasets import load_dataset
from verdict.gateway.schema import encode_rows


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
    # the instruction-set paths the libraries run, not only what the CPU could do
    assert fp.torch.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert fp.numpy_simd and fp.numpy_blas is not None and fp.torch.mkldnn is not None
    if torch.backends.mkl.is_available():
        assert fp.torch.mkl_dispatch and fp.determinism.mkl_cbwr == determinism.MKL_CNR_DEFAULT


def test_manifests_without_the_instruction_set_paths_still_load_and_diff_by_path():
    """Manifests published before the ISA paths were recorded: they decode (the new
    fields default to None) and replay's diff names each new path on its own."""
    from verdict.replay.environment import diff, summarize

    determinism.enable(1)
    current = json.loads(environment.encode(environment.capture()))  # as replay reads a published manifest
    old = json.loads(json.dumps(current))
    new_paths = {
        "numpy_simd",
        "numpy_blas",
        "torch.cpu_capability",
        "torch.mkl_dispatch",
        "torch.mkldnn",
        "determinism.mkl_cbwr",
    }
    recorded_now = set()  # the new fields with a value here (mkl_dispatch is None without MKL)
    for path in new_paths:
        *parents, leaf = path.split(".")
        section = old
        for key in parents:
            section = section[key]
        if section.pop(leaf) is not None:
            recorded_now.add(path)
    assert msgspec.convert(old, environment.EnvironmentFingerprint).torch.cpu_capability is None
    differences = diff(old, current)
    assert {d.path for d in differences} == recorded_now
    assert any(line.startswith("torch.cpu_capability: recorded None") for line in summarize(differences))


_MULTIPLY_FIRST = (
    "import torch; torch.ones(64, 64) @ torch.ones(64, 64);from gateway import determinism; determinism.enable(1)"
)


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch build has no MKL")
def test_enable_refuses_when_mkl_ran_before_its_cnr_mode_was_set():
    """MKL fixes its CNR mode at its first call: a process that multiplied before
    gateway.determinism was imported runs MKL without CNR, and must not score."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    result = subprocess.run(
        [sys.executable, "-c", _MULTIPLY_FIRST], cwd=PROJECT, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode != 0
    assert "DeterminismError: MKL runs CNR mode OFF, the gateway's default asks for COMPATIBLE" in result.stderr


_SCORE_EVERYWHERE = """
import json, sys
import numpy as np
from verdict.audit.stores import FilesystemStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import load_model
from verdict.gateway.schema import encode_rows
model = load_model(Registry(FilesystemStore(sys.argv[1])), "german-credit")
x = encode_rows(model.manifest.inputs, load_dataset("german-credit").rows)
positions = set()
for row in x[:40]:  # each row over a whole explain bucket: every position must give it the same bits
    out = model.evaluate_for_explanation(np.repeat(row[None, :], model.explain_bucket, axis=0)).view(np.uint32)
    positions |= set(np.flatnonzero(out != out[0]).tolist())
print(json.dumps({"score": model.score_matrix(x)[0].tobytes().hex(), "explain": model.evaluate_for_explanation(x).tobytes().hex(),
                  "positions": sorted(positions)}))
"""


def _scored_in_subprocess(registry, overrides: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _SCORE_EVERYWHERE, str(registry.store.root)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env={**os.environ, **overrides},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_scores_are_bit_identical_on_an_avx2_only_cpu(registry):
    """The root cause of issue 14, item 8, and what the pinned MKL CNR mode buys:
    on the code paths of an AVX2-only CPU a row's bits do not depend on its
    position in the explain bucket, and the scores at both buckets are this
    machine's default bits (measured: MKL without CNR differs in 4 of 4096
    positions and in the last bit of some scores)."""
    default = _scored_in_subprocess(registry, {})
    avx2_only = _scored_in_subprocess(registry, environment.avx2_only_overrides())
    assert default["positions"] == avx2_only["positions"] == []
    assert avx2_only == default


def test_fingerprint_diff_names_changed_paths():
    from verdict.gateway import determinism

    determinism.enable(1)
    fp = environment.capture()
    changed = msgspec.structs.replace(fp, determinism=msgspec.structs.replace(fp.determinism, intra_op_threads=4))
    assert environment.diff(fp, changed) == [("determinism.intra_op_threads", 1, 4)]
    assert environment.fingerprint_sha256(fp) != environment.fingerprint_sha256(changed)

"""Scoring throughput: deterministic bucketed execution vs plain batched execution.

Deterministic = LoadedModel.score_matrix: every forward pass at the
manifest's fixed score bucket, deterministic algorithms on. Two baselines,
deterministic algorithms switched off while they run, each batch as it comes
(no padding to the bucket, no chunking):
  plain      - the exported program's module called the usual way,
               ``ExportedProgram.module()(x)``, as plain code would;
  plain-fwd  - the same graph's forward called directly, like the runtime
               does (isolates the cost of padding + deterministic mode).
Target: at full buckets (batch = bucket) the deterministic path costs at most
10% against plain-fwd.

``--isa``: the same registered model in one worker process per instruction-set
variant (MKL's CNR mode, MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA, NumPy's dispatch): scoring at batch 1 and 64, raw
forward passes at the 4096-row explain bucket and whole explanations at
batch 64, timed interleaved round by round, with the ratio to the gateway's
default (rates per CPU second of the worker, so that other work on a shared
machine weighs less; the order of the variants rotates every round); then
which score bits each variant changes against the default (score bucket and
explain bucket), which variants compute the same bits, and which positions
of the 4096-row explain bucket give a row other bits than the rest (position
dependence is what broke batch invariance on AVX2-only CPUs, issue 14.8).
MKL fixes its settings once per process, hence a process per variant.

Run: .venv/bin/python benchmarks/scoring.py [--isa]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks._common import interleaved, reference_model
from verdict.gateway.datasets import load_dataset
from verdict.gateway.environment import avx2_only_overrides
from verdict.gateway.schema import encode_rows

ROWS_PER_ROUND = 12_288
SINGLE_ROWS = 2_048  # --isa, batch 1: rows scored one at a time per round
EXPLAIN_ROWS = 65_536  # --isa: sixteen explain buckets per round
EXPLANATIONS = 256  # --isa: German applicants explained per round, 64 per call
POSITION_PROBES = 40  # rows each replicated over a whole explain bucket
ISA_ROUNDS = 11


def _rows(model) -> np.ndarray:
    """The German credit applicants, encoded, repeated to ROWS_PER_ROUND rows."""
    x = encode_rows(model.manifest.inputs, load_dataset("german-credit").rows)
    return np.resize(x, (ROWS_PER_ROUND, x.shape[1])).astype(np.float32)


def _deterministic(model, batches: list[np.ndarray]) -> Callable[[], int]:
    """One round through the gateway's scoring path; the rows scored."""
    n_rows = sum(len(b) for b in batches)

    def run() -> int:
        for b in batches:
            model.score_matrix(b)
        return n_rows

    return run


def _baseline(call, tensors: list[torch.Tensor]) -> Callable[[], int]:
    """One round of ``call`` as plain torch code would run it (not deterministic); the rows scored."""
    n_rows = sum(len(t) for t in tensors)

    def run() -> int:
        torch.use_deterministic_algorithms(False)
        try:
            with torch.inference_mode():
                for t in tensors:
                    call(t).numpy()
        finally:
            torch.use_deterministic_algorithms(True)
        return n_rows

    return run


def main() -> None:
    _, model = reference_model()
    data = _rows(model)
    module = model._module  # called the usual way (with torch.export's input checks), as plain code would
    print(
        f"model {model.manifest.ref}, score bucket {model.score_bucket}, threads {torch.get_num_threads()}, device {model.device}"
    )
    print(
        f"{'batch':>6} {'deterministic':>14} {'plain':>10} {'plain-fwd':>10} {'det/plain':>10} {'det/plain-fwd':>14}  (rows/s)"
    )
    for batch in (1, 8, 64):
        batches = [data[i : i + batch] for i in range(0, ROWS_PER_ROUND, batch)]
        tensors = [torch.from_numpy(b) for b in batches]
        rates = interleaved(
            {
                "deterministic": _deterministic(model, batches),
                "plain": _baseline(module, tensors),
                "plain-fwd": _baseline(module.forward, tensors),
            },
            rounds=5,
        )
        det = rates["deterministic"]
        note = "  <- full bucket (target det/plain-fwd >= 0.90)" if batch == model.score_bucket else ""
        print(
            f"{batch:>6} {det:>14,.0f} {rates['plain']:>10,.0f} {rates['plain-fwd']:>10,.0f} "
            f"{det / rates['plain']:>10.3f} {det / rates['plain-fwd']:>14.3f}{note}"
        )


# -- instruction-set variants, side by side --------------------------------------------


def isa_variants() -> dict[str, dict[str, str]]:
    """Name -> environment overrides. The first is the gateway's default."""
    avx2 = avx2_only_overrides()
    return {
        "default (MKL CNR COMPATIBLE)": {},
        "MKL CNR off (before 14.8)": {"MKL_CBWR": ""},
        "MKL CNR AUTO,STRICT": {"MKL_CBWR": "AUTO,STRICT"},
        "ATen pinned to avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
        "oneDNN max ISA AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
        "AVX2-only CPU, default": avx2,
        "AVX2-only CPU, CNR off": avx2 | {"MKL_CBWR": ""},
        "AVX2-only CPU, AUTO,STRICT": avx2 | {"MKL_CBWR": "AUTO,STRICT"},
    }


class _Worker:
    """One process per variant, loading the same registered artifact and answering
    one command per line, so that variants are timed interleaved like in-process
    candidates (the machine's drift hits them alike)."""

    def __init__(self, store: Path, overrides: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(store)],
            env={**os.environ, **overrides},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.about = self.ask("about")

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait()} on {command!r}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def _worker(store: str) -> None:
    """Answer one command per stdin line (the keys below) with one JSON line."""
    from verdict.audit.stores import FilesystemStore
    from verdict.gateway import determinism
    from verdict.gateway.explanation import Explainer, seed_for
    from verdict.gateway.registry import Registry
    from verdict.gateway.runtime import load_model

    registry = Registry(FilesystemStore(Path(store)))
    model = load_model(registry, "german-credit")
    explainer = Explainer(model, registry.background(model.manifest))
    data = _rows(model)
    explain_rows = np.resize(data, (EXPLAIN_ROWS, data.shape[1]))
    applicants = data[:EXPLANATIONS]
    scores, seeds = model.score_matrix(applicants)[0], [seed_for(f"bench-{i}") for i in range(EXPLANATIONS)]

    def score(batch: int, rows: int) -> None:
        for i in range(0, rows, batch):
            model.score_matrix(data[i : i + batch])

    def explain() -> None:
        for i in range(0, EXPLANATIONS, 64):
            explainer.explain(applicants[i : i + 64], scores[i : i + 64], seeds[i : i + 64])

    commands = {
        "about": lambda: {
            "aten": torch.backends.cpu.get_cpu_capability(),
            "mkl_dispatch": determinism.mkl_dispatch_branch(),
            "mkl_cbwr": determinism.mkl_cnr(),
        },
        "time 1": lambda: _timed(lambda: score(1, SINGLE_ROWS), SINGLE_ROWS),
        "time 64": lambda: _timed(lambda: score(64, ROWS_PER_ROUND), ROWS_PER_ROUND),
        "time 4096": lambda: _timed(lambda: model.evaluate_for_explanation(explain_rows), EXPLAIN_ROWS),
        "time explanations": lambda: _timed(explain, EXPLANATIONS),
        "bits": lambda: _bits(model, data),
    }
    for command in sys.stdin:
        print(json.dumps(commands[command.strip()]()), flush=True)


def _timed(work, rows: int) -> dict:
    start = time.process_time()
    work()
    return {"rate": rows / (time.process_time() - start)}


def _bits(model, data: np.ndarray) -> dict:
    """Score bits at both buckets, and the explain-bucket positions where a row
    replicated over the whole bucket gets other bits than at position 0."""
    applicants = data[:1000]
    positions: set[int] = set()
    for row in applicants[:POSITION_PROBES]:
        out = model.evaluate_for_explanation(np.repeat(row[None, :], model.explain_bucket, axis=0)).view(np.uint32)
        positions |= set(np.flatnonzero(out != out[0]).tolist())
    return {
        "score": model.score_matrix(applicants)[0].tobytes().hex(),
        "explain": model.evaluate_for_explanation(applicants).tobytes().hex(),
        "positions": sorted(positions),
    }


def _compare(bits: dict, reference: dict, key: str) -> str:
    """'rows changed / rows, max |difference|, max ulps' of one variant's scores against the default's."""
    mine, theirs = (np.frombuffer(bytes.fromhex(b[key]), dtype=np.float32) for b in (bits, reference))
    changed = mine.view(np.int32) != theirs.view(np.int32)
    if not changed.any():
        return f"0/{len(mine)}"
    delta = np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max()
    ulps = np.abs(mine.view(np.int32).astype(np.int64) - theirs.view(np.int32).astype(np.int64)).max()
    return f"{int(changed.sum())}/{len(mine)}, max {delta:.1e} ({ulps} ulp)"


def compare_isa() -> None:
    registry, model = reference_model()
    variants = isa_variants()
    print(
        f"model {model.manifest.ref}, threads {torch.get_num_threads()}, one worker process per variant, "
        f"median of {ISA_ROUNDS} interleaved rounds, rows per CPU second; AVX2-only CPU = {avx2_only_overrides()}"
    )
    workers = {name: _Worker(registry.store.root, overrides) for name, overrides in variants.items()}
    try:
        _print_rates(workers)
        _print_bits(workers)
    finally:
        for worker in workers.values():
            worker.close()


_RATES = {  # column: worker command
    "score b=1 rows/s": "time 1",
    "score b=64 rows/s": "time 64",
    "explain bucket rows/s": "time 4096",
    "explanations/s (b=64)": "time explanations",
}


def _print_rates(workers: dict[str, _Worker]) -> None:
    """Median rate per variant and column, round-robin with a rotating order; then the ratios to the default."""
    rates: dict[str, dict[str, list[float]]] = {name: {c: [] for c in _RATES} for name in workers}
    for worker in workers.values():
        for command in _RATES.values():
            worker.ask(command)  # warm-up
    names = list(workers)
    for round_ in range(ISA_ROUNDS):
        for column, command in _RATES.items():
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                rates[name][column].append(workers[name].ask(command)["rate"])
    median = {name: {c: statistics.median(v) for c, v in columns.items()} for name, columns in rates.items()}
    default = median[names[0]]
    print(f"\n{'variant':<28} {'ATen':>7} {'MKL branch':>10} {'MKL CNR':>12} " + " ".join(f"{c:>22}" for c in _RATES))
    for name, worker in workers.items():
        about = worker.about
        print(
            f"{name:<28} {about['aten']:>7} {about['mkl_dispatch']!s:>10} {about['mkl_cbwr']!s:>12} "
            + " ".join(f"{median[name][c]:>22,.0f}" for c in _RATES)
        )
    print(f"\n{'ratio to the default':<28} " + " ".join(f"{c.split(' rows')[0].split('/')[0]:>16}" for c in _RATES))
    for name in names:
        print(f"{name:<28} " + " ".join(f"{median[name][c] / default[c]:>16.3f}" for c in _RATES))


def _print_bits(workers: dict[str, _Worker]) -> None:
    """Per variant: scores changed against the default at both buckets, a letter
    shared by the variants whose scores are the same bits, and position dependence."""
    bits = {name: worker.ask("bits") for name, worker in workers.items()}
    reference = bits[next(iter(workers))]
    groups: dict[tuple[str, str], str] = {}
    print(
        f"\n{'variant':<28} {'score bucket: changed vs default':>36} {'explain bucket: changed vs default':>36} {'same bits':>9}"
        f"  position-dependent rows in 4096"
    )
    for name, b in bits.items():
        group = groups.setdefault((b["score"], b["explain"]), "ABCDEFGHIJ"[len(groups)])
        print(
            f"{name:<28} {_compare(b, reference, 'score'):>36} {_compare(b, reference, 'explain'):>36} {group:>9}"
            f"  {b['positions'] or 'none'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isa", action="store_true", help="instruction-set and MKL CNR variants side by side")
    parser.add_argument("--worker", metavar="STORE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
    elif args.isa:
        compare_isa()
    else:
        main()

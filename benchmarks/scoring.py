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

Run: .venv/bin/python benchmarks/scoring.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import interleaved, reference_model  # noqa: E402
from gateway.datasets import load_dataset  # noqa: E402
from gateway.schema import encode_rows  # noqa: E402

ROWS_PER_ROUND = 12_288


def main() -> None:
    _, model = reference_model()
    x = encode_rows(model.manifest.inputs, load_dataset("german-credit").rows)
    data = np.resize(x, (ROWS_PER_ROUND, x.shape[1])).astype(np.float32)
    module = model._module  # called the usual way (with torch.export's input checks), as plain code would
    print(f"model {model.manifest.ref}, score bucket {model.score_bucket}, threads {torch.get_num_threads()}, device {model.device}")
    print(f"{'batch':>6} {'deterministic':>14} {'plain':>10} {'plain-fwd':>10} {'det/plain':>10} {'det/plain-fwd':>14}  (rows/s)")
    for batch in (1, 8, 64):
        batches = [data[i : i + batch] for i in range(0, ROWS_PER_ROUND, batch)]
        n_rows = sum(len(b) for b in batches)

        def deterministic() -> int:
            for b in batches:
                model.score_matrix(b)
            return n_rows

        tensors = [torch.from_numpy(b) for b in batches]

        def baseline(call):  # noqa: ANN001, ANN202
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

        rates = interleaved({"deterministic": deterministic, "plain": baseline(module),
                             "plain-fwd": baseline(module.forward)}, rounds=5)
        det = rates["deterministic"]
        note = "  <- full bucket (target det/plain-fwd >= 0.90)" if batch == model.score_bucket else ""
        print(f"{batch:>6} {det:>14,.0f} {rates['plain']:>10,.0f} {rates['plain-fwd']:>10,.0f} "
              f"{det / rates['plain']:>10.3f} {det / rates['plain-fwd']:>14.3f}{note}")


if __name__ == "__main__":
    main()

"""Scoring throughput: deterministic bucketed execution vs plain batched execution.

Plain = the same loaded module called directly on each batch as it comes
(no padding to the bucket, no chunking, deterministic algorithms switched off
while it runs). Deterministic = LoadedModel.score_matrix: every forward pass at
the manifest's fixed score bucket. Target: at full buckets (batch = bucket)
the deterministic path costs at most 10%.

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
    module = model._module
    print(f"model {model.manifest.ref}, score bucket {model.score_bucket}, threads {torch.get_num_threads()}, device {model.device}")
    print(f"{'batch':>6} {'deterministic rows/s':>22} {'plain rows/s':>14} {'ratio det/plain':>16}")
    for batch in (1, 8, 64):
        batches = [data[i : i + batch] for i in range(0, ROWS_PER_ROUND, batch)]
        n_rows = sum(len(b) for b in batches)

        def deterministic() -> int:
            for b in batches:
                model.score_matrix(b)
            return n_rows

        tensors = [torch.from_numpy(b) for b in batches]

        def plain() -> int:
            torch.use_deterministic_algorithms(False)
            try:
                with torch.inference_mode():
                    for t in tensors:
                        module(t).numpy()
            finally:
                torch.use_deterministic_algorithms(True)
            return n_rows

        rates = interleaved({"deterministic": deterministic, "plain": plain}, rounds=5)
        ratio = rates["deterministic"] / rates["plain"]
        note = "  <- full bucket (target >= 0.90)" if batch == model.score_bucket else ""
        print(f"{batch:>6} {rates['deterministic']:>22,.0f} {rates['plain']:>14,.0f} {ratio:>16.3f}{note}")


if __name__ == "__main__":
    main()

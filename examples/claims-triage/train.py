"""Train the claims-triage model on claims.csv and write weights.pt.

Deterministic (one thread, deterministic algorithms, a seeded generator for
the minibatch order), and trained only on the rows the packager will not hold
out (``heldout_mask``), so the held-out metrics in the manifest are honest.

    python train.py
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import torch
from model import build

from verdict.preprocessing import encode_frame, heldout_mask, infer_schema

HERE = Path(__file__).resolve().parent


def main() -> None:
    spec = tomllib.loads((HERE / "spec.toml").read_text())
    data, training = spec["data"], spec["training"]
    hyper = training["hyperparameters"]
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(training["seed"])

    frame = pd.read_csv(HERE / data["path"])
    inputs = infer_schema(frame, target=data["target"], exclude=[data["id"]], overrides=spec.get("attributes"))
    train = frame[~heldout_mask(frame, id_column=data["id"])]
    x = torch.from_numpy(encode_frame(train, inputs))
    y = torch.from_numpy(train[data["target"]].to_numpy(dtype="float32"))

    model = build(inputs)
    model.encoder.fit_to(x)
    optimiser = torch.optim.Adam(model.parameters(), lr=hyper["learning_rate"], weight_decay=hyper["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(training["seed"])
    model.train()
    for _ in range(hyper["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), hyper["batch_size"]):
            idx = order[start : start + hyper["batch_size"]]
            optimiser.zero_grad()
            loss_fn(model.logit(x[idx]), y[idx]).backward()
            optimiser.step()
    model.eval()
    torch.save(model.state_dict(), HERE / "weights.pt")
    with torch.no_grad():
        loss = float(loss_fn(model.logit(x), y))
    print(f"trained on {len(x)} claims ({len(inputs)} inputs), training log loss {loss:.4f} -> weights.pt")


if __name__ == "__main__":
    main()

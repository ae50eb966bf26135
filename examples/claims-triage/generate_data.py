"""Write claims.csv: synthetic motor insurance claims, some of them fraudulent.

Seeded, so every run writes the same bytes (the packaged model's dataset sha256
depends on them). No real person is in it: every value is drawn from the
distributions below, and fraud follows a known logistic rule, so a model that
learns it can be checked against the truth.

    python generate_data.py [--rows 4000] [--out claims.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261130
CLAIM_TYPES = ["collision", "fire", "glass", "liability", "theft"]
REGIONS = ["capital", "east", "north", "south", "west"]


def generate(rows: int, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.Generator(np.random.PCG64(seed))
    claim_type = rng.choice(CLAIM_TYPES, size=rows, p=[0.45, 0.05, 0.2, 0.2, 0.1])
    region = rng.choice(REGIONS, size=rows, p=[0.3, 0.15, 0.2, 0.2, 0.15])
    age = rng.integers(18, 86, size=rows)
    tenure = np.minimum(rng.geometric(0.15, size=rows) - 1, np.maximum(age - 18, 0))
    vehicle_age = rng.integers(0, 21, size=rows)
    base = {"collision": 3000, "fire": 12000, "glass": 600, "liability": 5000, "theft": 9000}
    amount = np.array([base[t] for t in claim_type]) * rng.lognormal(0.0, 0.6, size=rows)
    amount = np.clip(np.round(amount, 2), 50.0, 150000.0)
    prior_claims = np.minimum(rng.poisson(0.4, size=rows), 6)
    days_to_report = np.minimum(rng.geometric(0.12, size=rows) - 1, 365)
    police_report = np.where(rng.random(rows) < np.where(claim_type == "theft", 0.85, 0.35), "yes", "no")
    witness = np.where(rng.random(rows) < 0.3, "yes", "no")
    night = (rng.random(rows) < 0.25).astype(int)

    # The ground truth: fraud is likelier for large, late-reported claims without a police
    # report, for new policies, repeat claimants and thefts at night. Age plays no part.
    logit = (
        -4.0
        + 1.3 * np.log(amount / 3000.0)
        + 0.08 * days_to_report
        - 0.18 * tenure
        + 0.7 * prior_claims
        + 1.5 * (police_report == "no")
        - 0.9 * (witness == "yes")
        + 1.2 * night * (claim_type == "theft")
        + 0.4 * (region == "capital")
    )
    fraud = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "claim_id": [f"C{i:06d}" for i in range(1, rows + 1)],
            "claim_amount": amount,
            "claim_type": claim_type,
            "region": region,
            "policy_tenure_years": tenure,
            "vehicle_age_years": vehicle_age,
            "prior_claims": prior_claims,
            "days_to_report": days_to_report,
            "police_report": police_report,
            "witness_present": witness,
            "night_incident": night,
            "age": age,
            "fraud": fraud,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "claims.csv")
    args = parser.parse_args()
    frame = generate(args.rows)
    frame.to_csv(args.out, index=False, lineterminator="\n")
    print(f"wrote {len(frame)} claims ({frame['fraud'].mean():.1%} fraudulent) to {args.out}")


if __name__ == "__main__":
    main()

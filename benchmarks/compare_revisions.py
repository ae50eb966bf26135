"""Before/after: the same benchmarks run from two revisions of the code, interleaved.

Why: a refactoring must not cost speed, and absolute figures on a shared
machine drift from minute to minute. So the base revision (exported from git
into a temporary folder, run with its own code on ``PYTHONPATH``) and the
working tree run each benchmark alternately, round after round, the order
flipping every round; each figure is reported per round for both, with the
ratio head/base of neighbours in time and the range of that ratio over the
rounds (the noise). Both sides use this virtualenv's packages, so only the
project's code differs.

Figures are the lines each benchmark prints; ``FIGURES`` names, per
benchmark, a regular expression whose first group is the number to compare
(commas allowed). Full outputs are kept in ``benchmarks/results/compare/``.

Run: .venv/bin/python benchmarks/compare_revisions.py --base f904123 [--rounds 3] [--only scoring,explain]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compare"

# benchmark -> (its arguments, {figure: regex whose group 1 is the number})
BENCHMARKS: dict[str, tuple[list[str], dict[str, str]]] = {
    "scoring": ([], {"deterministic scoring rows/s, batch 64": r"^\s*64\s+([\d,]+)\s"}),
    "explain": (["--applicants", "8"], {"explanations/s, batch 64": r"^batched, batch 64\s+([\d,]+)"}),
    "audit_append": (
        ["--records", "3200"],
        {
            "audit append records/s (fs, group 64)": r"^filesystem group commit target >= 5,000 records/s: ([\d,]+)",
            "verify records/s (1 worker)": r"^verify filesystem store, 1 worker\(s\): [\d,]+ records, ([\d,]+) records/s",
        },
    ),
    "gateway_load": (
        ["--seconds", "3", "--rounds", "3", "--concurrency", "16,64"],
        {
            "gateway full req/s, c=16": r"^\s+16\s+full\s+([\d.]+)",
            "gateway full req/s, c=64": r"^\s+64\s+full\s+([\d.]+)",
        },
    ),
    "replay": (
        ["--decisions", "2000"],
        {
            "replay score-only decisions/s": r"^replay score_only\s+([\d,]+)",
            "replay full decisions/s": r"^replay full\s+([\d,]+)",
        },
    ),
}


def export(revision: str, dest: Path) -> None:
    """The revision's tree, without its git history (``git archive``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def run_one(tree: Path, name: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / f"{name}.py"), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"FAILED (exit {done.returncode})\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def figures(output: str, patterns: dict[str, str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for figure, pattern in patterns.items():
        match = re.search(pattern, output, re.M)
        if match:
            found[figure] = float(match.group(1).replace(",", ""))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", required=True, help="git revision to compare against (e.g. the commit before a change)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmark names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="verdict-base-") as tmp:
        base = Path(tmp)
        export(args.base, base)
        trees = {"base": base, "head": ROOT}
        table: dict[str, dict[str, list[tuple[float | None, float | None]]]] = {}
        for round_no in range(args.rounds):
            order = ("base", "head") if round_no % 2 == 0 else ("head", "base")
            for name in names:
                bench_args, patterns = BENCHMARKS[name]
                got: dict[str, dict[str, float]] = {}
                for side in order:
                    output = run_one(trees[side], name, bench_args)
                    (RESULTS / f"{name}-{side}-{round_no}.txt").write_text(output)
                    got[side] = figures(output, patterns)
                    print(f"round {round_no + 1} {name} {side}: {got[side] or 'no figures (see results)'}", flush=True)
                for figure in patterns:
                    pair = (got["base"].get(figure), got["head"].get(figure))
                    table.setdefault(name, {}).setdefault(figure, []).append(pair)
    print(f"\nbase {args.base} vs head (working tree), {args.rounds} interleaved rounds")
    print(f"{'figure':<40} {'base (median)':>14} {'head (median)':>14} {'head/base':>10} {'per-round range':>18}")
    for rows in table.values():
        for figure, pairs in rows.items():
            complete = [(b, h) for b, h in pairs if b and h]
            if not complete:
                print(f"{figure:<40} {'n/a':>14}")
                continue
            ratios = [h / b for b, h in complete]
            print(
                f"{figure:<40} {statistics.median(b for b, _ in complete):>14,.0f} "
                f"{statistics.median(h for _, h in complete):>14,.0f} {statistics.median(ratios):>10.3f} "
                f"{min(ratios):>8.3f}-{max(ratios):<8.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

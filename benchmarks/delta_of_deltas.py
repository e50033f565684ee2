"""Whether a condition changes a variant's difference to its baseline: per seed,
Δ = variant − baseline (test mAP %) under two conditions, and Δ(second) − Δ(first) paired over
the seeds both ran, with 95 % t-intervals and the smallest effect detectable at 80 % power.

Each condition is an ablation budget folder (``ablation.json``, written by
``benchmarks/ablation.py``) and, optionally, the two variants compared there::

    python benchmarks/delta_of_deltas.py runs/ablation/1000ids-128x64-12ep runs/ablation/1000ids-128x64-30ep
    python benchmarks/delta_of_deltas.py runs/ablation/1000ids-128x64-12ep \\
        runs/ablation/1000ids-128x64-12ep:san-pretrained:baseline-pretrained

Reads the scores the ablation recorded; scores nothing itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seed_stats import SeedPaired, paired_over_seeds

DEFAULT_PAIR = ("san", "baseline")


def condition(text: str) -> tuple[Path, str, str]:
    """``FOLDER[:VARIANT:BASELINE]`` -> (folder, variant, baseline)."""
    folder, _, pair = text.partition(":")
    variant, baseline = pair.split(":", 1) if ":" in pair else (pair, "") if pair else DEFAULT_PAIR
    if not variant or not baseline:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FOLDER or FOLDER:VARIANT:BASELINE")
    return Path(folder), variant, baseline


def deltas(folder: Path, variant: str, baseline: str) -> list[float]:
    """Per seed, the variant's test mAP minus the baseline's (%), over the seeds both ran."""
    path = folder / "ablation.json"
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"delta_of_deltas.py: error: {path}: cannot be read ({exc})") from exc
    for name in (variant, baseline):
        if name not in runs:
            raise SystemExit(f"delta_of_deltas.py: error: {path}: no runs of {name!r} (it has {sorted(runs)})")
    pairs = min(len(runs[variant]), len(runs[baseline]))
    return [100 * (runs[variant][s]["mAP"] - runs[baseline][s]["mAP"]) for s in range(pairs)]


def cell(d: SeedPaired) -> str:
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (SD {d.sd:.2f}, detects {d.detectable:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=condition, help="FOLDER[:VARIANT:BASELINE] (default pair: san, baseline)")
    parser.add_argument("second", type=condition, help="FOLDER[:VARIANT:BASELINE]")
    args = parser.parse_args(argv)
    first, second = deltas(*args.first), deltas(*args.second)
    seeds = min(len(first), len(second))
    if seeds < 2:
        parser.error(f"the two conditions share {seeds} seed(s); a paired interval needs two or more")
    first, second = first[:seeds], second[:seeds]
    print("| seed | Δ first | Δ second | Δ second − Δ first |\n|---|---|---|---|")
    for seed, (a, b) in enumerate(zip(first, second)):
        print(f"| {seed} | {a:+.2f} | {b:+.2f} | {b - a:+.2f} |")
    zeros = [0.0] * seeds
    print(f"\nΔ first ({args.first[1]} − {args.first[2]}, {args.first[0]}): {cell(paired_over_seeds(zeros, first))}")
    print(f"Δ second ({args.second[1]} − {args.second[2]}, {args.second[0]}): {cell(paired_over_seeds(zeros, second))}")
    print(f"Δ second − Δ first, paired over {seeds} seeds: {cell(paired_over_seeds(first, second))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

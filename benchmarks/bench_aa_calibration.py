"""A/A calibration of the A/B statistics (issue #13.10): false-positive rate of synthetic A/A tests.

Prints two markdown tables. The first: the delta method (with CUPED, the default) at three sizes,
the tiny world (600 users, 300 per arm), 2,000 users per arm and the demo world (20,000 users,
10,000 per arm), for RoAS and for all six metrics. The second: both methods on small arms, with
the rate of the comparisons that simulator.stats.is_underpowered leaves unlabelled; it is the
measurement behind MIN_ARM_USERS and MIN_NONZERO_USERS (below them some metric passes 7%).
Run: `python benchmarks/bench_aa_calibration.py [--tests 500] [--seed 0]` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

SIZES = (("tiny world", 300), ("2,000 per arm", 2000), ("demo world", 10000))
SMALL_SIZES = (40, 80, 150, 200, 300)


def _rate(row: dict) -> str:
    return f"{row['rate']:.1%} [{row['rate_ci_low']:.1%}, {row['rate_ci_high']:.1%}]"


def _worst(per_metric: dict) -> str:
    name = max(per_metric, key=lambda metric: per_metric[metric]["rate"])
    return f"{name} {per_metric[name]['rate']:.1%}"


def size_table(tests: int, seed: int, alpha: float) -> list[str]:
    """Markdown rows: per size, RoAS and all-metric false-positive rates with 95% Clopper-Pearson intervals."""
    from simulator.calibration import aa_p_values, false_positive_rate

    lines = [("| size | users per arm | RoAS converters per arm (median) | RoAS rate [95% CI] | all six metrics "
              "rate [95% CI] | highest metric |"), "|---|---|---|---|---|---|"]
    for label, users in SIZES:
        p_values = aa_p_values(users, tests, np.random.default_rng([seed, users]), alpha=alpha)
        per_metric = false_positive_rate(p_values, alpha).rows_by_key("metric", named=True, unique=True)
        pooled = false_positive_rate(p_values.with_columns(pl.lit("all").alias("metric")), alpha).row(0, named=True)
        lines.append(f"| {label} | {users:,} | {per_metric['roas']['median_nonzero_users']:.0f} | "
                     f"{_rate(per_metric['roas'])} | {_rate(pooled)} | {_worst(per_metric)} |")
    return lines


def small_arm_table(tests: dict[str, int], seed: int, alpha: float) -> list[str]:
    """Markdown rows: per small size and method, the highest metric's rate, the share labelled
    underpowered and the rate of the unlabelled comparisons (all metrics pooled)."""
    from simulator.calibration import aa_p_values, false_positive_rate

    lines = [("| users per arm | method | tests | RoAS converters (median) | RoAS rate | highest metric | labelled "
              "underpowered | rate of the rest [95% CI] |"), "|---|---|---|---|---|---|---|---|"]
    for users in SMALL_SIZES:
        for method, count in tests.items():
            p_values = aa_p_values(users, count, np.random.default_rng([seed, users]), method=method, alpha=alpha)
            per_metric = false_positive_rate(p_values, alpha).rows_by_key("metric", named=True, unique=True)
            rest = p_values.filter(~pl.col("is_underpowered")).with_columns(pl.lit("rest").alias("metric"))
            rest_rate = _rate(false_positive_rate(rest, alpha).row(0, named=True)) if rest.height else "none left"
            lines.append(f"| {users} | {method} | {count} | {per_metric['roas']['median_nonzero_users']:.0f} | "
                         f"{per_metric['roas']['rate']:.1%} | {_worst(per_metric)} | "
                         f"{p_values['is_underpowered'].mean():.0%} | {rest_rate} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500, help="A/A tests per size of the first table")
    parser.add_argument("--small-tests", type=int, default=2000, help="delta-method A/A tests per small size")
    parser.add_argument("--bootstrap-tests", type=int, default=500,
                        help="bootstrap A/A tests per small size (1,000 resamples each, as the config's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    from simulator.stats import MIN_ARM_USERS, MIN_NONZERO_USERS

    started = time.perf_counter()
    print(f"A/A false-positive rate at alpha = {args.alpha}, delta method with CUPED, {args.tests} tests per size "
          "(synthetic market shaped like the tiny world's one-day simulation):\n")
    print("\n".join(size_table(args.tests, args.seed, args.alpha)))
    print(f"\nSmall arms: the rate of every metric, and of the comparisons not labelled underpowered "
          f"(smaller arm >= {MIN_ARM_USERS} users and >= {MIN_NONZERO_USERS} with a nonzero numerator):\n")
    print("\n".join(small_arm_table({"delta": args.small_tests, "bootstrap": args.bootstrap_tests}, args.seed,
                                     args.alpha)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

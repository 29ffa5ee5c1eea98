"""How much do a source's held-out lists tell the ranker about test conversions beyond its other features?

Issue #15's positive control: Table 5's ctcvr ΔPR-AUC with the oracle's lists can be too small to detect
on a world's held-out users. This script measures why, on the rows Table 5 uses (`ranking.users =
"predicted"`: the impressions of the users the lists cover, split by time): for each PREDICTIONS file,
the list's own signal (the share of test conversions and non-conversions whose advertiser is listed, and
the AUC / PR-AUC of the reciprocal-rank feature alone) and its incremental signal (a logistic regression,
`ranking.linear`, trained with and without the LLM features on the same rows, scored on the test split).
No DCN is trained, so it runs in about a minute per file on 2 cores.

Run: `python benchmarks/list_information.py --run R R/oracle_q1_heldout_all/predictions.parquet
R/sensitivity/random_control/heldout.parquet` (interests are read from `interests.parquet` beside each
file when present).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table
from sklearn.metrics import average_precision_score, roc_auc_score

TASK = "ctcvr"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with world/ and impressions/")
    parser.add_argument("predictions", type=Path, nargs="+", help="PREDICTIONS parquet files (held-out lists)")
    args = parser.parse_args()

    from ranking.config import RankingConfig
    from ranking.features import split_by_time
    from ranking.lift import arm_tables
    from ranking.linear import fit_logistic
    from ranking.pipeline import fit_builder
    from synthetic_data import schema

    world = schema.load_world(args.run / "world")
    config = RankingConfig()
    builder = fit_builder(world, config)
    impressions = pl.read_parquet(args.run / "impressions" / "impressions.parquet")
    table = Table(title=f"{TASK}: the lists' own and incremental signal on Table 5's test rows")
    for column in ("lists", "test rows / positives", "listed: positives / negatives", "AUC (rank alone)",
                   "PR-AUC (rank alone)", "LR AUC without / with", "LR PR-AUC without / with"):
        table.add_column(column)
    for path in args.predictions:
        lists = schema.validate(pl.read_parquet(path), schema.PREDICTIONS, str(path))
        interests_path = path.parent / "interests.parquet"
        interests = pl.read_parquet(interests_path) if interests_path.exists() else None
        logged = impressions.join(lists.select("user_id").unique(), on="user_id", how="semi")
        splits = split_by_time(logged, config.features)
        tables = {arm: arm_tables(builder, splits, lists, interests, (TASK,), arm, seed=0)
                  for arm in ("without_llm", "with_llm")}
        test = tables["with_llm"]["test"]
        labels = test.labels[TASK]
        listed = test.dense[:, test.dense_names.index("is_predicted_advertiser")]
        rank = test.dense[:, test.dense_names.index("predicted_reciprocal_rank")]
        scores = {arm: fit_logistic(tables[arm]["train"], builder.vocab_sizes_, (TASK,)).probabilities(
            tables[arm]["test"])[TASK] for arm in tables}
        auc = {arm: roc_auc_score(labels, score) for arm, score in scores.items()}
        pr_auc = {arm: average_precision_score(labels, score) for arm, score in scores.items()}
        table.add_row(f"{path.parent.name}/{path.name}", f"{len(test):,} / {int(labels.sum()):,}",
                      f"{listed[labels == 1].mean():.1%} / {listed[labels == 0].mean():.1%}",
                      f"{roc_auc_score(labels, rank):.3f}", f"{average_precision_score(labels, rank):.4f}",
                      f"{auc['without_llm']:.4f} / {auc['with_llm']:.4f}",
                      f"{pr_auc['without_llm']:.4f} / {pr_auc['with_llm']:.4f} "
                      f"({pr_auc['with_llm'] / pr_auc['without_llm'] - 1:+.1%})")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

"""The Table 5 experiment (paper 4.4.1): ranking metrics with vs without LLM-derived features.

Three arms share rows, seeds and every other feature: without the LLM features, with them, and a
control whose predicted lists are replaced by random advertisers (and random interests) of the same
length, which separates information from the mere presence of a new input. Each model is trained
once per seed and arm; relative changes are averaged over seeds with a 95% t-interval and a paired
t-test (the seed is the pairing unit).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats
from tqdm.auto import tqdm

from ranking.config import RankingConfig
from ranking.features import FeatureBuilder, FeatureTable
from ranking.gbdt import fit_lightgbm
from ranking.llm_features import INTEREST_FEATURE, LLM_FEATURES, random_interest_lists, random_prediction_lists
from ranking.metrics import evaluate
from ranking.pipeline import task_groups
from ranking.train import fit_dcn

ARMS = ("without_llm", "with_llm", "random_control")
COMPARISONS = (("with_llm", "without_llm"), ("random_control", "without_llm"), ("with_llm", "random_control"))
METRICS = ("log_loss", "auc", "pr_auc")


def arm_tables(builder: FeatureBuilder, splits: dict[str, pl.DataFrame], predictions: pl.DataFrame,
               interests: pl.DataFrame | None, tasks: tuple[str, ...], arm: str, seed: int
               ) -> dict[str, FeatureTable]:
    """Feature tables of every split for one arm (the random control draws its lists from `seed`)."""
    if arm == "random_control":
        advertiser_ids = builder.advertisers_["advertiser_id"].to_numpy()
        predictions = random_prediction_lists(predictions, advertiser_ids, seed)
        if interests is not None:
            interests = random_interest_lists(interests, builder.categories_["name"].to_list(), seed)
    tables = {name: builder.transform(rows, predictions, interests, tasks) for name, rows in splits.items()}
    if arm == "without_llm":
        tables = {name: table.without(LLM_FEATURES + (INTEREST_FEATURE,)) for name, table in tables.items()}
    return tables


def run_lift(builder: FeatureBuilder, splits: dict[str, pl.DataFrame], predictions: pl.DataFrame,
             interests: pl.DataFrame | None, config: RankingConfig, progress: bool = False) -> pl.DataFrame:
    """Train every (seed, arm, model, task) and score it on the test split; one row per result."""
    records = []
    shared = {arm: arm_tables(builder, splits, predictions, interests, config.tasks, arm, seed=0)
              for arm in ("without_llm", "with_llm")}
    runs = [(seed, arm) for seed in config.seeds for arm in ARMS]
    for seed, arm in tqdm(runs, desc="lift runs", disable=not progress):
        tables = shared.get(arm) or arm_tables(builder, splits, predictions, interests, config.tasks, arm, seed)
        test = tables["test"]
        for group in task_groups(config):
            dcn = fit_dcn(tables["train"], tables["validation"], builder.vocab_sizes_, group, config.dcn,
                          config.train, seed)
            for task, probabilities in dcn.probabilities(test).items():
                records.append({"seed": seed, "arm": arm, "model": "dcn", "task": task,
                                "epochs": len(dcn.history), **evaluate(test.labels[task], probabilities)})
        if config.include_lightgbm:
            booster = fit_lightgbm(tables["train"], tables["validation"], tuple(config.tasks), config.lightgbm, seed)
            for task, probabilities in booster.probabilities(test).items():
                records.append({"seed": seed, "arm": arm, "model": "lightgbm", "task": task,
                                "epochs": None, **evaluate(test.labels[task], probabilities)})
    return pl.DataFrame(records)


def paired_change(treatment: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """Mean relative change (%) over paired seeds, its 95% t-interval and the paired t-test p-value."""
    change = (np.asarray(treatment) - np.asarray(baseline)) / np.asarray(baseline) * 100
    n = len(change)
    mean = float(change.mean())
    half = float(stats.t.ppf(0.975, n - 1) * change.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    p_value = float(stats.ttest_rel(treatment, baseline).pvalue) if n > 1 else float("nan")
    return {"change_pct": mean, "ci_low": mean - half, "ci_high": mean + half,
            "p_value": p_value, "seeds": n}


def summarize_lift(results: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, task, comparison, metric) with the paired relative change."""
    rows = []
    for (model, task), group in results.group_by("model", "task", maintain_order=True):
        by_arm = {arm: frame.sort("seed") for (arm,), frame in group.group_by("arm")}
        for treatment, baseline in COMPARISONS:
            if treatment not in by_arm or baseline not in by_arm:
                continue
            if by_arm[treatment]["seed"].to_list() != by_arm[baseline]["seed"].to_list():
                raise ValueError(f"{model}/{task}: arms {treatment} and {baseline} ran different seeds")
            for metric in METRICS:
                rows.append({"model": model, "task": task, "comparison": f"{treatment} vs {baseline}",
                             "metric": metric, **paired_change(by_arm[treatment][metric].to_numpy(),
                                                               by_arm[baseline][metric].to_numpy())})
    return pl.DataFrame(rows)


def lift_markdown(summary: pl.DataFrame, source: str, users: int | None = None, restricted: str = "all") -> str:
    """The Table 5 analogue: relative ΔLoss / ΔAUC / ΔPR-AUC with 95% intervals and p-values."""
    header = {"log_loss": "Δ Loss", "auc": "Δ AUC", "pr_auc": "Δ PR-AUC"}
    scope = ("" if users is None else
             f" Impressions of {users:,} users" + (" (those the lists cover)." if restricted == "predicted" else "."))
    lines = [f"Predicted lists: source `{source}`.{scope} Relative change (%), mean over seeds "
             f"[95% t-interval], paired t-test p.", "",
             "| Model | Task | Comparison | " + " | ".join(header.values()) + " |",
             "|---|---|---|" + "---|" * len(header)]
    for (model, task, comparison), group in summary.group_by("model", "task", "comparison", maintain_order=True):
        cells = []
        for metric in header:
            row = group.filter(pl.col("metric") == metric).row(0, named=True)
            cells.append(f"{row['change_pct']:+.2f}% [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] "
                         f"p={row['p_value']:.3g}")
        lines.append(f"| {model} | {task} | {comparison} | " + " | ".join(cells) + " |")
    seeds = int(summary["seeds"].min()) if summary.height else 0
    lines += ["", f"{seeds} seeds per cell; Δ Loss < 0 and Δ AUC, Δ PR-AUC > 0 mean the treatment is better."]
    return "\n".join(lines)

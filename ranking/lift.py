"""The Table 5 experiment (paper 4.4.1): ranking metrics with vs without LLM-derived features.

Three arms share rows, seeds and every other feature: without the LLM features, with them, and a
control whose predicted lists are replaced by random advertisers (and random interests) of the same
length, which separates information from the mere presence of a new input. Each model is trained
once per seed and arm and scores the test impressions.

Each comparison reports one estimand: the relative change of the metric's mean over seeds,
mean_s M_treatment,s / mean_s M_baseline,s - 1. Its interval and p-value come from one paired
bootstrap that crosses the two sources of noise (Owen 2007, "The pigeonhole bootstrap"): each
replicate resamples the test users with replacement (a user's impressions stay together) and,
independently, the seeds, then recomputes every arm's metric on that same resample. A replicate
whose metric is undefined (a resample without a positive) is kept and counted against both bounds
and the p-value (`synthetic_data.intervals.bootstrap_interval`); the table's p-values are also
Holm-adjusted over all its cells, since it tests three metrics x comparisons x tasks x models.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from ranking.config import RankingConfig
from ranking.features import FeatureBuilder, FeatureTable
from ranking.gbdt import fit_lightgbm
from ranking.linear import fit_logistic
from ranking.llm_features import INTEREST_FEATURE, LLM_FEATURES, random_interest_lists, random_prediction_lists
from ranking.metrics import evaluate, user_weighted_metrics
from ranking.pipeline import task_groups
from ranking.train import fit_dcn
from synthetic_data.intervals import bootstrap_interval, holm_adjust

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
             interests: pl.DataFrame | None, config: RankingConfig, progress: bool = False,
             arms: tuple[str, ...] = ARMS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train every (seed, arm, model, task) and score it on the test split.

    Returns (results, scores): results has one row of test metrics per (seed, arm, model, task);
    scores one row per (seed, arm, model, task, test row) with the row's user_id, label and
    probability, which `summarize_lift` resamples. `arms` (a subset of ARMS) lets a caller that
    compares several lists on the same rows train the list-independent `without_llm` arm once.
    Raises ValueError for an arm not in ARMS.
    """
    unknown = set(arms) - set(ARMS)
    if unknown or not arms:
        raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {arms}")
    records, scores = [], []
    test_rows = splits["test"].select(pl.int_range(pl.len(), dtype=pl.Int32).alias("row"), "user_id")
    shared = {arm: arm_tables(builder, splits, predictions, interests, config.tasks, arm, seed=0)
              for arm in ("without_llm", "with_llm") if arm in arms}
    runs = [(seed, arm) for seed in config.seeds for arm in arms]
    logistic: dict[str, dict[str, np.ndarray]] = {}  # arm -> probabilities per task
    for seed, arm in tqdm(runs, desc="lift runs", disable=not progress):
        tables = shared.get(arm) or arm_tables(builder, splits, predictions, interests, config.tasks, arm, seed)
        test = tables["test"]
        outputs = []  # (model, epochs, probabilities per task)
        for group in task_groups(config):
            dcn = fit_dcn(tables["train"], tables["validation"], builder.vocab_sizes_, group, config.dcn,
                          config.train, seed)
            outputs.append(("dcn", len(dcn.history), dcn.probabilities(test)))
        if "lightgbm" in config.reference_models:
            booster = fit_lightgbm(tables["train"], tables["validation"], tuple(config.tasks), config.lightgbm, seed)
            outputs.append(("lightgbm", None, booster.probabilities(test)))
        if "logistic" in config.reference_models:  # no training seed: fitted once per shared arm's tables
            probabilities = logistic.get(arm) or fit_logistic(tables["train"], builder.vocab_sizes_,
                                                              tuple(config.tasks)).probabilities(test)
            if arm in shared:  # the random control's lists, hence its tables, are drawn per seed
                logistic[arm] = probabilities
            outputs.append(("logistic", None, probabilities))
        for model, epochs, probabilities_by_task in outputs:
            for task, probabilities in probabilities_by_task.items():
                records.append({"seed": seed, "arm": arm, "model": model, "task": task, "epochs": epochs,
                                **evaluate(test.labels[task], probabilities)})
                scores.append(test_rows.with_columns(
                    seed=pl.lit(seed), arm=pl.lit(arm), model=pl.lit(model), task=pl.lit(task),
                    label=pl.Series(test.labels[task], dtype=pl.Int8),
                    probability=pl.Series(probabilities, dtype=pl.Float64)))
    return pl.DataFrame(records), pl.concat(scores).select("seed", "arm", "model", "task", "row", "user_id", "label",
                                                           "probability")


def resample_counts(units: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of `units` is drawn when `units` are drawn with replacement: [replicates, units]."""
    return rng.multinomial(units, np.full(units, 1 / units), size=replicates).astype(np.float64)


def relative_change(treatment: np.ndarray, baseline: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """mean_s treatment / mean_s baseline - 1 per replicate, the seed means weighted by `seed_weights`.

    All three: [replicates, seeds]; returns [replicates]. The ratio of means, not the mean of per-seed
    ratios, so that one noisy seed with a tiny baseline cannot dominate.
    """
    return (treatment * seed_weights).sum(axis=1) / (baseline * seed_weights).sum(axis=1) - 1


def _seed_metrics(scores: pl.DataFrame, seeds: list[int], user_index: np.ndarray, user_weights: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """{metric: [replicates, seeds]} of one (model, task, arm) under every user weighting."""
    by_seed = [user_weighted_metrics(frame["label"].to_numpy(), frame["probability"].to_numpy(), user_index,
                                     user_weights)
               for frame in (scores.filter(pl.col("seed") == seed).sort("row") for seed in seeds)]
    return {metric: np.column_stack([values[metric] for values in by_seed]) for metric in METRICS}


def summarize_lift(scores: pl.DataFrame, replicates: int = 1000, seed: int = 0) -> pl.DataFrame:
    """One row per (model, task, comparison, metric): the relative change (%) of the seed-mean metric,
    its 95% percentile interval and two-sided p-value from `replicates` paired, crossed bootstrap
    replicates (test users x seeds, see the module docstring), and the test positives, rows and users.

    `scores` is `run_lift`'s second table. Raises ValueError where the arms ran different seeds or
    scored different test rows.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for (model, task), group in scores.group_by("model", "task", maintain_order=True):
        seeds = sorted(group["seed"].unique().to_list())
        seeds_of = {arm: sorted(frame["seed"].unique().to_list()) for (arm,), frame in group.group_by("arm")}
        if any(arm_seeds != seeds for arm_seeds in seeds_of.values()):
            raise ValueError(f"{model}/{task}: the arms ran different seeds: {seeds_of}")
        test = group.filter((pl.col("arm") == group["arm"][0]) & (pl.col("seed") == seeds[0])).sort("row")
        if group.height != test.height * len(seeds_of) * len(seeds):
            raise ValueError(f"{model}/{task}: the arms and seeds scored different test rows")
        users, user_index = np.unique(test["user_id"].to_numpy(), return_inverse=True)
        # row 0 weighs every user and seed once: the estimate on the observed test set and seeds
        user_weights = np.vstack([np.ones(len(users)), resample_counts(len(users), replicates, rng)])
        seed_weights = np.vstack([np.ones(len(seeds)), resample_counts(len(seeds), replicates, rng)])
        metrics = {arm: _seed_metrics(group.filter(pl.col("arm") == arm), seeds, user_index, user_weights)
                   for arm in seeds_of}
        for treatment, baseline in COMPARISONS:
            if treatment not in metrics or baseline not in metrics:
                continue
            for metric in METRICS:
                change = relative_change(metrics[treatment][metric], metrics[baseline][metric], seed_weights) * 100
                interval = bootstrap_interval(change[1:], alpha=0.05)
                rows.append({"model": model, "task": task, "comparison": f"{treatment} vs {baseline}",
                             "metric": metric, "change_pct": float(change[0]), "ci_low": interval.ci_low,
                             "ci_high": interval.ci_high, "p_value": interval.p_value,
                             "undefined_replicates": interval.undefined_resamples, "seeds": len(seeds),
                             "replicates": replicates, "test_positives": int(test["label"].sum()),
                             "test_rows": test.height, "test_users": len(users)})
    summary = pl.DataFrame(rows)
    return summary.with_columns(p_value_holm=pl.Series(holm_adjust(summary["p_value"].to_numpy()))
                                if summary.height else pl.lit(None, dtype=pl.Float64))


def _bound(value: float) -> str:
    return f"{value:+.2f}" if np.isfinite(value) else "unbounded"


def lift_markdown(summary: pl.DataFrame, source: str, users: int | None = None, restricted: str = "all") -> str:
    """The Table 5 analogue: relative ΔLoss / ΔAUC / ΔPR-AUC with 95% intervals, p-values and test positives."""
    header = {"log_loss": "Δ Loss", "auc": "Δ AUC", "pr_auc": "Δ PR-AUC"}
    scope = ("" if users is None else
             f" Impressions of {users:,} users" + (" (those the lists cover)." if restricted == "predicted" else "."))
    seeds = int(summary["seeds"].min()) if summary.height else 0
    replicates = int(summary["replicates"].min()) if summary.height else 0
    lines = [f"Predicted lists: source `{source}`.{scope} Each cell: relative change (%) of the metric's mean "
             f"over {seeds} seeds, mean_s(treatment) / mean_s(baseline) - 1, [95% percentile interval] and "
             f"two-sided p, both from one paired bootstrap of {replicates:,} replicates that resamples the test "
             "users (all of a user's impressions together) and, independently, the seeds (Owen's pigeonhole "
             "bootstrap), every arm scored on the same resample; p = 2 (1 + replicates on the far side of 0) "
             f"/ (B + 1), and Holm-adjusted over the table's {summary.height} cells (p_Holm). A replicate whose "
             "metric is undefined (no positive in the resample) counts against both bounds and p; an interval "
             "bound it leaves open prints as unbounded.", "",
             "| Model | Task | Comparison | Test positives / impressions / users | "
             + " | ".join(header.values()) + " |",
             "|---|---|---|---|" + "---|" * len(header)]
    for (model, task, comparison), group in summary.group_by("model", "task", "comparison", maintain_order=True):
        first = group.row(0, named=True)
        cells = [f"{first['test_positives']:,} / {first['test_rows']:,} / {first['test_users']:,}"]
        for metric in header:
            row = group.filter(pl.col("metric") == metric).row(0, named=True)
            undefined = f", {row['undefined_replicates']} undefined" if row["undefined_replicates"] else ""
            cells.append(f"{row['change_pct']:+.2f}% [{_bound(row['ci_low'])}, {_bound(row['ci_high'])}] "
                         f"p={row['p_value']:.3g} (p_Holm={row['p_value_holm']:.3g}{undefined})")
        lines.append(f"| {model} | {task} | {comparison} | " + " | ".join(cells) + " |")
    lines += ["", "Δ Loss < 0 and Δ AUC, Δ PR-AUC > 0 mean the treatment is better."]
    return "\n".join(lines)

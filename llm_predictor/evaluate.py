"""Offline evaluation of advertiser predictors: the paper's Tables 2-4 analogues (paper 4.1-4.3).

Every method (LLM variants from their generations, and the non-LLM baselines) is scored on the
same eval users of V0 and V1 at the evaluation anchor date: Recall@1/5/20 with Wilson score 95%
intervals, plus the parse and unmapped rates of generated outputs; the ablation's differences in
Recall@K have Tango score intervals (paired: every method is scored on the same labels). Tables are written to the run
folder as Parquet and Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data.config_io import require
from synthetic_data.intervals import clustered_paired_difference_interval, paired_difference_interval
from synthetic_data.schema import PREDICTIONS, conform

from llm_predictor.baselines import BaselineConfig, PairRanker, most_recent_predictions, popularity_predictions
from llm_predictor.convert import ConversionCounts, NameConverter, convert_predictions
from llm_predictor.metrics import hits_at_k, recall_with_intervals

EVAL_SETS = ("v0", "v1")
ROLE_OF_SPLIT = {"train": "train", "eval": "test", "validation": "validation"}
CLUSTERED = "bootstrap over users"  # paired_effects_table's interval when users have several labels


@dataclass(frozen=True)
class EvalConfig:
    """Cut-offs, interval confidence, the evaluation anchor and the name-matching threshold."""

    ks: tuple[int, ...] = (1, 5, 20)
    confidence: float = 0.95
    anchor_date: str | None = None  # ISO date; default: the latest anchor date of the labels
    name_match_threshold: float = 0.75

    def __post_init__(self):
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "eval.ks", "list cut-offs >= 1")
        require(0 < self.confidence < 1, "eval.confidence", "must be in (0, 1)")
        require(0 < self.name_match_threshold <= 1, "eval.name_match_threshold", "must be in (0, 1]")
        if self.anchor_date is not None:
            try:
                date.fromisoformat(self.anchor_date)
            except ValueError:
                require(False, "eval.anchor_date", f"{self.anchor_date!r} is not an ISO date like 2026-03-22")


def evaluation_anchor(world_tables, config: EvalConfig) -> date:
    """The configured anchor date, else the latest anchor of the labels (the world's eval anchor)."""
    if config.anchor_date is not None:
        return date.fromisoformat(config.anchor_date)
    return world_tables.labels["anchor_date"].max()


def labelled_users(world_tables, split: str) -> pl.DataFrame:
    """Labels (user_id, anchor_date, advertiser_id, in_v0, in_v1) of the users in one split.

    On a leave-one-out world (labels with a `role` column, synthetic_data.real) every user is
    evaluated, so the role picks the labels instead: train -> "train", eval -> "test",
    validation -> "validation" (model selection).
    """
    labels = world_tables.labels
    if "role" in labels.columns and split in ROLE_OF_SPLIT:
        return labels.filter(pl.col("role") == ROLE_OF_SPLIT[split])
    if split not in ("train", "eval"):
        raise ValueError(f"unknown split {split!r}: use train or eval (validation needs labels with a role column)")
    users = world_tables.splits.filter(pl.col("split") == split).select("user_id")
    return labels.join(users, on="user_id", how="semi")


def evaluation_labels(world_tables, config: EvalConfig) -> dict[str, pl.DataFrame]:
    """{"v0": labels, "v1": labels}: eval-split users at the evaluation anchor in each set."""
    anchor = evaluation_anchor(world_tables, config)
    labels = labelled_users(world_tables, "eval").filter(pl.col("anchor_date") == anchor)
    if labels.is_empty():
        raise ValueError(f"no eval-split labels at anchor date {anchor}; set eval.anchor_date to a label anchor")
    return {name: labels.filter(pl.col(f"in_{name}")).select("user_id", "anchor_date", "advertiser_id")
            for name in EVAL_SETS}


def evaluation_requests(world_tables, config: EvalConfig) -> pl.DataFrame:
    """The (user_id, anchor_date) rows every method must predict: the union of V0 and V1."""
    return pl.concat([t.select("user_id", "anchor_date") for t in evaluation_labels(world_tables, config).values()]
                     ).unique().sort("user_id")


def baseline_predictions(world_tables, requests: pl.DataFrame, config: BaselineConfig | None = None
                         ) -> dict[str, pl.DataFrame]:
    """Popularity, most recent and the LightGBM pair ranker (fit on train-split labels only) on every input and
    on the prompt's inputs only (`lightgbm_pairs_prompt`: the fair learner beside the LLM)."""
    config = config or BaselineConfig()
    train = labelled_users(world_tables, "train")
    prompt_only = replace(config, inputs="prompt")
    return {
        "popularity": popularity_predictions(world_tables, requests, config),
        "most_recent": most_recent_predictions(world_tables, requests, config),
        "lightgbm_pairs": PairRanker(config).fit(world_tables, train).predict(world_tables, requests),
        "lightgbm_pairs_prompt": PairRanker(prompt_only).fit(world_tables, train).predict(world_tables, requests),
    }


def allowed_pairs(prompts: pl.DataFrame) -> pl.DataFrame:
    """One row per (user_id, anchor_date, advertiser_name) of each prompt's allowed names."""
    return prompts.select("user_id", "anchor_date", pl.col("allowed_names").alias("advertiser_name")
                          ).explode("advertiser_name")


def allowed_names_ceiling(world_tables, prompts: pl.DataFrame, labels: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """PREDICTIONS of an oracle that names each label (of every eval set in `labels`) at rank 1 when
    the label's advertiser is among the prompt's allowed names (the active advertisers and the preset
    pool, from which appendix A requirement 2 tells the model to choose), and names nothing otherwise.
    Its Recall@K is the most that any method choosing among those names can reach (source
    "allowed_names_ceiling")."""
    keys = ["user_id", "anchor_date"]
    labels = pl.concat([table.select(*keys, "advertiser_id") for table in labels.values()]).unique(keys)
    allowed = (allowed_pairs(prompts)
               .join(world_tables.advertisers.select("advertiser_id", pl.col("name").alias("advertiser_name")),
                     on="advertiser_name"))
    table = labels.join(allowed, on=[*keys, "advertiser_id"]).select(
        *keys, pl.lit(1).alias("rank"), "advertiser_id", "advertiser_name",
        pl.lit("allowed_names_ceiling").alias("source")).unique(keys, keep="first", maintain_order=True)
    return conform(table, PREDICTIONS, "allowed_names_ceiling")


def next_conversion_ceiling(world_tables, world_config, keys: pl.DataFrame,
                            source: str = "next_conversion_ceiling") -> pl.DataFrame:
    """PREDICTIONS: each (user_id, anchor_date) of `keys`' 20 eligible advertisers most likely to take the user's
    next conversion under the world's own behaviour model (`synthetic_data.next_conversion`, re-simulated from the
    world's `WorldConfig`). It reads hidden state: Table 3's ceiling on a generated world, never a method."""
    from llm_predictor.baselines import eligible_advertiser_ids, predictions_table
    from llm_predictor.prompts import N_ADVERTISERS
    from synthetic_data.next_conversion import next_conversion_probabilities

    keys = keys.select("user_id", "anchor_date").unique().sort("user_id", "anchor_date")
    advertiser_ids = eligible_advertiser_ids(world_tables)
    scores = next_conversion_probabilities(world_config, keys, progress=False)[:, advertiser_ids]
    lists = np.argsort(-scores, axis=1, kind="stable")[:, :min(N_ADVERTISERS, len(advertiser_ids))]
    return predictions_table(keys, lists, world_tables.advertisers, advertiser_ids, source)


def restricted_to_allowed(predictions: pl.DataFrame, prompts: pl.DataFrame, source: str) -> pl.DataFrame:
    """`predictions` (PREDICTIONS) keeping, per (user_id, anchor_date), only the advertisers among that prompt's
    allowed names, re-ranked 1.. in their order: a baseline held to the paper's allowed-names rule
    (appendix A requirement 2), so that a method under that rule is compared with it on equal terms."""
    keys = ["user_id", "anchor_date"]
    kept = predictions.join(allowed_pairs(prompts), on=[*keys, "advertiser_name"], how="semi").sort(*keys, "rank")
    return conform(kept.with_columns(rank=pl.col("rank").rank("ordinal").over(keys).cast(pl.Int32),
                                     source=pl.lit(source)), PREDICTIONS, source)


def generation_predictions(world_tables, generations: Mapping[str, pl.DataFrame], config: EvalConfig
                           ) -> tuple[dict[str, pl.DataFrame], dict[str, ConversionCounts]]:
    """Convert each LLM method's generations (user_id, anchor_date, text[, rank]) to PREDICTIONS."""
    converter = NameConverter(world_tables.advertisers, config.name_match_threshold)
    predictions, counts = {}, {}
    for method, table in generations.items():
        predictions[method], counts[method] = convert_predictions(table, converter, source=method,
                                                                  max_names=max(config.ks))
    return predictions, counts


def results_table(predictions: Mapping[str, pl.DataFrame], labels: Mapping[str, pl.DataFrame],
                  config: EvalConfig, counts: Mapping[str, ConversionCounts] | None = None,
                  sampled_methods: Sequence[str] = (), sample: pl.DataFrame | None = None) -> pl.DataFrame:
    """Rows = (method, eval set); Recall@K with Wilson intervals, parse, exact-20 and unmapped rates.

    `sampled_methods` predicted only the (user_id, anchor_date) pairs of `sample` and are scored on those
    pairs' labels, so users they never saw do not count as misses; `n_labels` is each row's own. Rates are
    null for methods that output IDs directly (the baselines).
    """
    counts = counts or {}
    keys = ["user_id", "anchor_date"]
    rows = []
    for eval_set, all_labels in labels.items():
        sampled_labels = all_labels.join(sample.select(keys), on=keys, how="semi") if sampled_methods else None
        for method, table in predictions.items():
            eval_labels = sampled_labels if method in sampled_methods else all_labels
            recall = recall_with_intervals(table, eval_labels, config.ks, config.confidence)
            conversion = counts.get(method)
            rows.append({
                "method": method, "eval_set": eval_set, "n_labels": eval_labels.height, **recall,
                "parse_rate": conversion.parse_rate if conversion else None,
                "exact_count_rate": conversion.exact_count_rate if conversion else None,
                "unmapped_rate": conversion.unmapped_rate if conversion else None,
            })
    return pl.DataFrame(rows, schema_overrides={"parse_rate": pl.Float64, "exact_count_rate": pl.Float64,
                                                "unmapped_rate": pl.Float64})


def ablation_table(reference: str, predictions: Mapping[str, pl.DataFrame], labels: pl.DataFrame,
                   config: EvalConfig, k: int = 5) -> pl.DataFrame:
    """Table 4 analogue: Recall@k of each variant minus the reference's on the same labels, with Tango
    score intervals; `discordant` counts the labels only one of the two hits."""
    if reference not in predictions:
        raise ValueError(f"reference method {reference!r} is not among {sorted(predictions)}")
    base = hits_at_k(predictions[reference], labels, (k,))[f"hit_at_{k}"].to_numpy()
    rows = []
    for method, table in predictions.items():
        if method == reference:
            continue
        hits = hits_at_k(table, labels, (k,))[f"hit_at_{k}"].to_numpy()
        low, high = paired_difference_interval(hits, base, config.confidence)
        rows.append({"ablation": method, "n_labels": labels.height, "discordant": int((hits != base).sum()),
                     f"recall_at_{k}": float(hits.mean()), f"delta_recall_at_{k}": float(hits.mean() - base.mean()),
                     f"delta_recall_at_{k}_low": low, f"delta_recall_at_{k}_high": high})
    return pl.DataFrame(rows)


def paired_effects_table(pairs: Sequence[tuple[str, str]], predictions: Mapping[str, pl.DataFrame],
                         labels: pl.DataFrame, config: EvalConfig) -> pl.DataFrame:
    """Each (method, reference) pair's Recall@K difference on the same labels, for every K of `config.ks`
    (e.g. a GRPO model beside its SFT initialisation: paper Table 3's +GRPO row). The interval is Tango's
    score interval when every label is a different user's; when a user has labels at several anchors, whose
    hits are not independent, it is a bootstrap that resamples users (column `interval` names which).
    Raises ValueError for a method without predictions."""
    missing = sorted({name for pair in pairs for name in pair} - set(predictions))
    if missing:
        raise ValueError(f"paired_effects_table: no predictions of {missing}")
    users = labels["user_id"].to_numpy()
    n_users = int(labels["user_id"].n_unique())
    is_clustered = n_users < labels.height
    rows = []
    for method, reference in pairs:
        hits = hits_at_k(predictions[method], labels, config.ks)
        base = hits_at_k(predictions[reference], labels, config.ks)
        row = {"method": method, "reference": reference, "n_labels": labels.height, "n_users": n_users,
               "interval": CLUSTERED if is_clustered else "Tango"}
        for k in config.ks:
            ours, theirs = hits[f"hit_at_{k}"].to_numpy(), base[f"hit_at_{k}"].to_numpy()
            low, high = (clustered_paired_difference_interval(ours, theirs, users, config.confidence) if is_clustered
                         else paired_difference_interval(ours, theirs, config.confidence))
            row |= {f"delta_recall_at_{k}": float(ours.mean() - theirs.mean()), f"delta_recall_at_{k}_low": low,
                    f"delta_recall_at_{k}_high": high}
        rows.append(row)
    return pl.DataFrame(rows)


def _cell(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


INTERVAL_NOTES = {  # column prefix -> how its [low, high] interval is computed
    "recall_at_": "Recall@K [low, high]: Wilson score interval of the share of labels hit (eval.confidence, "
                  "default 95%).",
    "delta_recall_at_": "Δ Recall@K [low, high]: Tango score interval of the paired difference on the same "
                        "labels, which depends on the discordant labels (hit by one method only); with none it "
                        "still spans ±z²/(n + z²) (eval.confidence, default 95%).",
}


def to_markdown(table: pl.DataFrame, title: str) -> str:
    """A results or ablation table as Markdown; `x [low, high]` for every column with an interval, and
    a note naming each interval's method."""
    interval_columns = [c for c in table.columns if f"{c}_low" in table.columns]
    shown = [c for c in table.columns if not c.endswith(("_low", "_high"))]
    lines = [f"### {title}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in table.iter_rows(named=True):
        cells = []
        for column in shown:
            value = row[column]
            if column in interval_columns:
                cells.append(f"{_cell(value)} [{_cell(row[f'{column}_low'])}, {_cell(row[f'{column}_high'])}]")
            elif isinstance(value, float) or value is None:
                cells.append(_cell(value))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    is_clustered = table["interval"] == CLUSTERED if "interval" in table.columns else pl.Series([False])
    notes = [note for prefix, note in INTERVAL_NOTES.items() if any(c.startswith(prefix) for c in interval_columns)
             and not (prefix == "delta_recall_at_" and is_clustered.all())]  # Tango's note when a row uses it
    if is_clustered.any():
        notes.append(f"Rows whose `interval` is `{CLUSTERED}` (a user with labels at several anchors, which are not "
                     "independent): a percentile bootstrap of the difference that resamples whole users.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_table(table: pl.DataFrame, directory: Path, name: str, title: str) -> list[Path]:
    """Write `<name>.parquet` and `<name>.md` into `directory`; returns the two paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parquet, markdown = directory / f"{name}.parquet", directory / f"{name}.md"
    table.write_parquet(parquet)
    markdown.write_text(to_markdown(table, title))
    return [parquet, markdown]


def evaluate_methods(world_tables, generations: Mapping[str, pl.DataFrame], directory: Path,
                     config: EvalConfig | None = None, baseline_config: BaselineConfig | None = None,
                     methods_order: Sequence[str] | None = None) -> pl.DataFrame:
    """Score LLM generations and the baselines on V0 and V1 and write `results.{parquet,md}`."""
    config = config or EvalConfig()
    labels = evaluation_labels(world_tables, config)
    predictions, counts = generation_predictions(world_tables, generations, config)
    predictions |= baseline_predictions(world_tables, evaluation_requests(world_tables, config), baseline_config)
    order = list(methods_order or predictions)
    table = results_table({m: predictions[m] for m in order}, labels, config, counts)
    anchor = evaluation_anchor(world_tables, config)
    write_table(table, directory, "results", f"Advertiser prediction on eval users at {anchor} (V0: Table 2, "
                                            f"V1: Table 3 analogues)")
    return table

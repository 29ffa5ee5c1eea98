"""Next-brand results table on an adapted world: Recall@1/5/20 with 95% intervals (issue 4).

Scores every method's PREDICTIONS file found in the run folder (`<run>/<stage>/predictions*.parquet`)
against the held-out test labels, with Wilson score intervals for Recall@K and Tango score intervals
for each method's paired difference from each reference method present (popularity, and SASRec, the
sequential recommender an LLM has to beat; synthetic_data.intervals; both keep their width at 0 and at all
hits), the number of distinct first-ranked brands (a list collapsed to one popular brand shows as 1), the
share of users that got a list and, for generated outputs, the parse and unmapped rates recorded by the
stage that wrote them. A stage that predicted
only a sample of users (it writes `requests.parquet`) gets its own table on that sample, beside
every full-coverage method on the same users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.config_io import require, to_dict
from synthetic_data.intervals import paired_difference_interval, proportion_interval
from synthetic_data.real.amazon_baselines import most_recent_predictions, popularity_predictions
from synthetic_data.run_folder import RunFolder

BASELINES_STAGE = "baselines"
ROLE_NOTES = {
    "test": "\nTest = each user's last purchase, predicted from all earlier purchases. 'with list' "
            "= share of users given any prediction (a parse failure leaves none); 'parsed' = share of "
            "generated outputs whose advertiser list parsed, over all the users the stage predicted "
            "(— for methods that output IDs); 'unmapped' = share of generated names that matched "
            "no advertiser (0 for methods that output IDs).\n",
    "validation": "\nValidation = each user's second-to-last purchase. Trained methods select "
                  "epochs or settings on these labels, so this table is a model-selection "
                  "figure, not an evaluation.\n",
}
INTERVAL_NOTE = ("\nIntervals (95%): Recall@K, Wilson score interval over users; Δ Recall@K, Tango score "
                 "interval of the paired difference on the same users (it depends on the users only one of "
                 "the two methods hits). Neither collapses to a point at 0 or at all hits.\n")
RESULTS_STAGE = "results"
KEYS = ["user_id", "anchor_date"]
SAMPLE_NOTE = ("\nEvery method scored on the same sampled users (a stage's requests.parquet); intervals "
               "are wide at this size.\n")


@dataclass(frozen=True)
class ResultsConfig:
    """Cut-offs, label roles and reference methods of the results table."""

    ks: tuple[int, ...] = (1, 5, 20)
    roles: tuple[str, ...] = ("test", "validation")  # held-out labels to score, one table each
    references: tuple[str, ...] = ("popularity", "sasrec")  # paired differences: method minus each one present

    def __post_init__(self) -> None:
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "ks", "list cut-offs >= 1")
        require(len(self.roles) > 0 and set(self.roles) <= {"test", "validation"}, "roles",
                "list 'test' and/or 'validation'")


def held_out_labels(labels: pl.DataFrame, role: str) -> pl.DataFrame:
    """The labels of one held-out role; fails clearly on a world without leave-one-out roles."""
    if "role" not in labels.columns:
        raise ValueError(
            "labels have no 'role' column: this table needs a leave-one-out world written by "
            "synthetic_data.real (e.g. write_amazon_world)"
        )
    return labels.filter(pl.col("role") == role).select("user_id", "anchor_date", "advertiser_id")


def label_ranks(predictions: pl.DataFrame, labels: pl.DataFrame) -> np.ndarray:
    """Per label row, the best rank at which its advertiser was predicted (0 where absent)."""
    ranks = (
        labels.with_row_index("row")
        .join(predictions.select("user_id", "anchor_date", "advertiser_id", "rank"),
              on=["user_id", "anchor_date", "advertiser_id"], how="left")
        .group_by("row").agg(pl.col("rank").min())
        .sort("row")
    )
    return ranks["rank"].fill_null(0).to_numpy()


def score_method(predictions: pl.DataFrame, labels: pl.DataFrame, ks: tuple[int, ...],
                 ranks: np.ndarray | None = None) -> dict:
    """Recall@k with 95% Wilson intervals, list coverage and unmapped share for one method;
    `ranks`: its `label_ranks`, when already computed."""
    ranks = label_ranks(predictions, labels) if ranks is None else ranks
    row: dict = {"users": labels.height}
    for k in ks:
        hits = hits_at(ranks, k)
        low, high = proportion_interval(int(hits.sum()), len(hits))
        row |= {f"recall_at_{k}": hits.mean(), f"recall_at_{k}_low": low, f"recall_at_{k}_high": high}
    listed = labels.join(predictions.select("user_id", "anchor_date").unique(),
                         on=["user_id", "anchor_date"], how="semi")
    row["with_list_rate"] = listed.height / max(labels.height, 1)
    firsts = predictions.filter(pl.col("rank") == 1).join(listed.select(KEYS), on=KEYS, how="semi")
    row["distinct_first"] = firsts["advertiser_id"].drop_nulls().n_unique()
    row["unmapped_rate"] = (
        predictions["advertiser_id"].null_count() / predictions.height if predictions.height else 0.0
    )
    return row


def hits_at(ranks: np.ndarray, k: int) -> np.ndarray:
    return ((ranks >= 1) & (ranks <= k)).astype(np.float64)


def delta_column(reference: str, k: int) -> str:
    """The column of Recall@k minus `reference`'s (with `_low` and `_high` beside it)."""
    return f"delta_vs_{reference}_at_{k}"


def paired_delta(ranks: np.ndarray, reference_ranks: np.ndarray, ks: tuple[int, ...], reference: str) -> dict:
    """Recall@k of one method minus `reference`'s on the same users, with a 95% Tango score interval."""
    row = {}
    for k in ks:
        hits, reference_hits = hits_at(ranks, k), hits_at(reference_ranks, k)
        low, high = paired_difference_interval(hits, reference_hits)
        column = delta_column(reference, k)
        row |= {column: (hits - reference_hits).mean(), f"{column}_low": low, f"{column}_high": high}
    return row


def results_table(predictions: pl.DataFrame, labels: pl.DataFrame, config: ResultsConfig,
                  conversion_rates: dict[str, dict] | None = None) -> pl.DataFrame:
    """One row per `source` with predictions for these labels, with Wilson intervals for Recall@K;
    `delta_vs_<reference>_at_k` columns compare each method with each of `config.references` present
    (Tango intervals); `distinct_first`: distinct advertisers ranked first;
    for generated methods, `conversion_rates[source]` gives the parse rate and the unmapped share of
    generated names (names that map to no advertiser never reach PREDICTIONS); parse_rate is null
    for methods that output IDs."""
    conversion_rates = conversion_rates or {}
    scored_sources = predictions.join(labels.select("user_id", "anchor_date"),
                                      on=["user_id", "anchor_date"], how="semi")
    by_source = {  # a method that predicted none of these labels' anchors is not in this table
        source: scored_sources.filter(pl.col("source") == source)
        for source in sorted(scored_sources["source"].unique().to_list())
    }
    ranks = {source: label_ranks(scored, labels) for source, scored in by_source.items()}
    references = [reference for reference in config.references if reference in ranks]
    rows = []
    for source, scored in by_source.items():
        row = {"method": source} | score_method(scored, labels, config.ks, ranks[source])
        row["parse_rate"] = conversion_rates.get(source, {}).get("parse_rate")
        row["unmapped_rate"] = conversion_rates.get(source, {}).get("unmapped_rate", row["unmapped_rate"])
        for reference in references:
            row |= paired_delta(ranks[source], ranks[reference], config.ks, reference)
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"parse_rate": pl.Float64}).sort(
        f"recall_at_{config.ks[-1]}", descending=True)


def to_markdown(table: pl.DataFrame, ks: tuple[int, ...], title: str, references: tuple[str, ...]) -> str:
    """The table as Markdown: recall with [low, high] intervals, distinct first-ranked advertisers, list and
    unmapped rates, the paired differences with each reference method present, and a note naming the
    interval methods."""
    header = (["method", "users"] + [f"Recall@{k} [95% CI]" for k in ks]
              + ["distinct first", "with list", "parsed", "unmapped"])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.iter_rows(named=True):
        cells = [row["method"], str(row["users"])]
        cells += [_interval(row, f"recall_at_{k}") for k in ks]
        parsed = "—" if row.get("parse_rate") is None else f"{row['parse_rate']:.4f}"
        cells += [str(row["distinct_first"]), f"{row['with_list_rate']:.4f}", parsed, f"{row['unmapped_rate']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for reference in references:
        if delta_column(reference, ks[0]) not in table.columns:  # absent from these predictions
            continue
        header = ["method"] + [f"Δ Recall@{k} vs {reference} [95% CI]" for k in ks]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table.filter(pl.col("method") != reference).iter_rows(named=True):
            lines.append("| " + " | ".join([row["method"]] + [_interval(row, delta_column(reference, k), signed=True)
                                                             for k in ks]) + " |")
    return "\n".join(lines) + "\n" + INTERVAL_NOTE


def _interval(row: dict, column: str, signed: bool = False) -> str:
    form = "{:+.4f}" if signed else "{:.4f}"
    return (f"{form.format(row[column])} [{form.format(row[column + '_low'])}, "
            f"{form.format(row[column + '_high'])}]")


def write_baselines(run_dir: Path, k: int = 20) -> pl.DataFrame:
    """Popularity and most-recent predictions for every held-out label (stage "baselines")."""
    run = RunFolder(run_dir)
    world = run.root / "world"
    labels = schema.load_table(world, "labels")
    requests = labels.filter(pl.col("role").is_in(["validation", "test"]))
    events, advertisers = schema.load_table(world, "events"), schema.load_table(world, "advertisers")
    predictions = pl.concat([
        popularity_predictions(events, requests, advertisers, k),
        most_recent_predictions(events, requests, advertisers, k),
    ])
    predictions.write_parquet(run.stage_dir(BASELINES_STAGE) / "predictions.parquet")
    world_hash = (run.stage_record("world") or {}).get("config_hash")
    run.complete(BASELINES_STAGE, {"k": k, "world_config_hash": world_hash},
                 ["predictions.parquet"],
                 {"rows": predictions.height, "sources": ["popularity", "most_recent_no_fill"]})
    return predictions


def _distinct_samples(samples: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """One entry per distinct set of sampled requests, named by the first stage (sorted) that holds it."""
    distinct: dict[str, pl.DataFrame] = {}
    for stage in sorted(samples):
        requests = samples[stage].sort(KEYS)
        if not any(requests.equals(other) for other in distinct.values()):
            distinct[stage] = requests
    return distinct


def write_results(run_dir: Path, config: ResultsConfig | None = None) -> pl.DataFrame:
    """Score every `<run>/*/predictions*.parquet` and write `<run>/results/next_brand.{md,parquet}`."""
    config = config or ResultsConfig()
    run = RunFolder(run_dir)
    labels = schema.load_table(run.root / "world", "labels")
    files = sorted(p for p in run.root.glob("*/predictions*.parquet") if p.parent.name != RESULTS_STAGE)
    if not files:
        raise FileNotFoundError(f"{run.root}: no <stage>/predictions*.parquet to score; run the "
                                f"baselines or a predictor first")
    predictions = pl.concat([
        schema.validate(pl.read_parquet(p), schema.PREDICTIONS, str(p)).select(list(schema.PREDICTIONS))
        .with_columns(pl.lit(p.parent.name).alias("stage"))
        for p in files
    ])
    # A source name written by two stages (e.g. two "popularity" baselines) is told apart by stage.
    stages_per_source = pl.col("stage").n_unique().over("source")
    predictions = predictions.with_columns(
        pl.when(stages_per_source > 1).then(pl.format("{} ({})", "source", "stage"))
        .otherwise(pl.col("source")).alias("source")
    )
    # Generated outputs: the parse and unmapped rates their stage recorded (convert.ConversionCounts).
    summaries = {source: (run.stage_record(stage) or {}).get("summary", {})
                 for source, stage in predictions.select("source", "stage").unique().iter_rows()}
    conversion_rates = {source: {k: summary[k] for k in ("parse_rate", "unmapped_rate") if k in summary}
                        for source, summary in summaries.items() if "parse_rate" in summary}
    # A stage that predicted a sample of users (its `requests.parquet`) is scored on that sample only,
    # beside every full-coverage method on the same users; unsampled users are not its misses.
    samples = {p.parent.name: pl.read_parquet(p.parent / "requests.parquet").select("user_id", "anchor_date")
               for p in files if (p.parent / "requests.parquet").exists()}
    full = predictions.filter(~pl.col("stage").is_in(list(samples)))
    tables, sections = [], []
    for role in config.roles:
        held_out = held_out_labels(labels, role)
        table = results_table(full.drop("stage"), held_out, config, conversion_rates)
        tables.append(table.select(pl.lit(role).alias("role"), pl.lit(None, pl.String).alias("sample"), pl.all()))
        title = f"Next-brand prediction, {role} labels ({held_out.height} users)"
        sections.append(to_markdown(table, config.ks, title, config.references) + ROLE_NOTES[role])
    for name, requests in _distinct_samples(samples).items():
        same_users = [stage for stage, other in samples.items() if other.sort(KEYS).equals(requests.sort(KEYS))]
        held_out = held_out_labels(labels, "test").join(requests, on=KEYS, how="semi")
        scored = pl.concat([full, predictions.filter(pl.col("stage").is_in(same_users))]).drop("stage")
        table = results_table(scored, held_out, config, conversion_rates)
        tables.append(table.select(pl.lit("test").alias("role"), pl.lit(name).alias("sample"), pl.all()))
        title = (f"Next-brand prediction, test labels of the users sampled by {', '.join(same_users)} "
                 f"({held_out.height} users)")
        sections.append(to_markdown(table, config.ks, title, config.references) + SAMPLE_NOTE)
    table = pl.concat(tables, how="diagonal_relaxed")
    out = run.stage_dir(RESULTS_STAGE)
    table.write_parquet(out / "next_brand.parquet")
    (out / "next_brand.md").write_text("\n".join(sections))
    run.complete(RESULTS_STAGE, to_dict(config) | {"scored": [str(p.relative_to(run.root)) for p in files]},
                 ["next_brand.parquet", "next_brand.md"], {"methods": table["method"].to_list()})
    return table

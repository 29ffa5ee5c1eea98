"""Non-LLM next-advertiser baselines on the same inputs as the prompts (what the LLM adds, paper 4.2).

Popularity (recent conversions per label-eligible advertiser), most recent past advertiser (the
user's converted advertisers by recency, then popularity) and a LightGBM lambdarank model over
(user, candidate advertiser) pairs with hand features from the observable events. Each returns a
PREDICTIONS table; none reads a `*_truth` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl

from synthetic_data.config_io import require
from synthetic_data.schema import EVENT_KINDS, PREDICTIONS, conform

KEYS = ["user_id", "anchor_date"]
INPUTS = ("all", "prompt")
# the event kinds the prompt's behaviour lines show (llm_predictor.features.SEQUENCE_KINDS)
PROMPT_EVENT_KINDS = ("attributed_conversion", "matched_conversion", "onsite_search", "offsite_search", "offsite_url")
_NEVER_DAYS = 999.0  # "days since" for an advertiser the user never touched in the window


@dataclass(frozen=True)
class BaselineConfig:
    """Windows, list length and the LightGBM pair ranker's settings."""

    n_predictions: int = 20
    popularity_window_days: int = 28  # conversions counted for popularity, ending at the anchor
    history_window_days: int = 90  # user events the most-recent and pair-ranker baselines read
    n_popular_candidates: int = 50  # the pair ranker also scores the top popular advertisers
    n_preset_candidates: int = 50  # ... and the preset pool's top advertisers
    n_estimators: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_child_samples: int = 20
    n_threads: int = 1
    seed: int = 0
    # the pair ranker's inputs: every observable event and advertiser field (`all`), or only what the LLM's
    # prompt shows (`prompt`: conversions, searches, 14 days of URLs; no engagement events, bids or campaign
    # types), so that the LLM is compared with a learner on the same inputs (issue 14)
    inputs: str = "all"

    def __post_init__(self):
        require(self.inputs in INPUTS, "baselines.inputs", f"must be one of {INPUTS}")
        require(self.n_predictions >= 1, "baselines.n_predictions", "must be >= 1")
        for name in ("popularity_window_days", "history_window_days", "n_estimators", "num_leaves",
                     "min_child_samples", "n_threads"):
            require(getattr(self, name) >= 1, f"baselines.{name}", "must be >= 1")
        for name in ("n_popular_candidates", "n_preset_candidates"):
            require(getattr(self, name) >= 0, f"baselines.{name}", "must be >= 0")
        require(self.learning_rate > 0, "baselines.learning_rate", "must be > 0")


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)


def _check_requests(requests: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in KEYS if c not in requests.columns]
    if missing:
        raise ValueError(f"requests lack column(s) {missing}: pass one row per (user_id, anchor_date)")
    return requests.select(pl.col("user_id").cast(pl.Int64), pl.col("anchor_date").cast(pl.Date)).unique(
        maintain_order=True)


def eligible_advertisers(world_tables) -> pl.DataFrame:
    """Advertisers a label can name (active with active spend, paper 3.2.1): advertiser_id, name."""
    return world_tables.advertisers.filter(pl.col("is_active") & pl.col("has_active_spend")).select(
        "advertiser_id", "name")


def eligible_advertiser_ids(world_tables) -> np.ndarray:
    """The ids of `eligible_advertisers`, sorted (int64): the columns of a score matrix over them."""
    return np.sort(eligible_advertisers(world_tables)["advertiser_id"].to_numpy().astype(np.int64))


def predictions_table(keys: pl.DataFrame, lists: np.ndarray, advertisers: pl.DataFrame,
                      advertiser_ids: np.ndarray, source: str) -> pl.DataFrame:
    """PREDICTIONS rows of (n_keys, list_length) column indices into `advertiser_ids` (one list per row of
    `keys`: user_id, anchor_date), with the names of the world's `advertisers`."""
    n_lists, list_length = lists.shape
    index = np.repeat(np.arange(n_lists), list_length)
    table = pl.DataFrame({
        "user_id": keys["user_id"].gather(index), "anchor_date": keys["anchor_date"].gather(index),
        "rank": np.tile(np.arange(1, list_length + 1), n_lists),
        "advertiser_id": advertiser_ids[lists.ravel()].astype(np.int32), "source": source,
    }).join(advertisers.select("advertiser_id", pl.col("name").alias("advertiser_name")),
            on="advertiser_id", how="left", maintain_order="left")
    return conform(table.select(*PREDICTIONS), PREDICTIONS, source)


def popularity(world_tables, anchor_dates, config: BaselineConfig) -> pl.DataFrame:
    """Per anchor date: eligible advertisers ranked by conversions in the window ending at the anchor."""
    eligible = eligible_advertisers(world_tables)
    conversions = world_tables.events.filter(
        pl.col("kind").is_in(["attributed_conversion", "matched_conversion"])).select("ts", "advertiser_id")
    frames = []
    for anchor in sorted(set(anchor_dates)):  # a handful of anchor dates, not a loop over users
        start = _day_end(anchor) - timedelta(days=config.popularity_window_days)
        counts = (
            conversions.filter(pl.col("ts") >= start, pl.col("ts") < _day_end(anchor))
            .group_by("advertiser_id").agg(pl.len().alias("popularity_count"))
        )
        frames.append(
            eligible.join(counts, on="advertiser_id", how="left")
            .with_columns(pl.col("popularity_count").fill_null(0), pl.lit(anchor).alias("anchor_date"))
            .sort(["popularity_count", "advertiser_id"], descending=[True, False])
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("popularity_rank"))
        )
    return pl.concat(frames)


def _as_predictions(ranked: pl.DataFrame, source: str, n: int) -> pl.DataFrame:
    """`ranked` (user_id, anchor_date, advertiser_id, name, in list order) -> PREDICTIONS, top n."""
    table = (
        ranked.unique([*KEYS, "advertiser_id"], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over(KEYS).alias("rank"))
        .filter(pl.col("rank") <= n)
        .select(*KEYS, "rank", "advertiser_id", pl.col("name").alias("advertiser_name"),
                pl.lit(source).alias("source"))
    )
    return conform(table, PREDICTIONS, source)


def popularity_predictions(world_tables, requests: pl.DataFrame, config: BaselineConfig | None = None
                           ) -> pl.DataFrame:
    """The same popular list for every user of an anchor date (source "popularity")."""
    config = config or BaselineConfig()
    requests = _check_requests(requests)
    popular = popularity(world_tables, requests["anchor_date"].to_list(), config).filter(
        pl.col("popularity_rank") <= config.n_predictions)
    ranked = requests.join(popular, on="anchor_date", how="inner").sort([*KEYS, "popularity_rank"])
    return _as_predictions(ranked, "popularity", config.n_predictions)


def _window_events(world_tables, requests: pl.DataFrame, config: BaselineConfig) -> pl.DataFrame:
    """Each request's observable events in the history window ending with its anchor date."""
    anchor_start = pl.col("anchor_date").cast(pl.Datetime("us", "UTC"))
    return world_tables.events.join(requests, on="user_id", how="inner").filter(
        pl.col("ts") < anchor_start + pl.duration(days=1),
        pl.col("ts") >= anchor_start - pl.duration(days=config.history_window_days - 1),
    ).select(*KEYS, "ts", "kind", "text", "advertiser_id", "brand_id", "category_id")


def advertiser_events(world_tables, events: pl.DataFrame) -> pl.DataFrame:
    """Events with the advertiser they concern: their own, their brand's owner, or for searches the
    advertiser whose brand or name the query mentions."""
    brand_owner = world_tables.brands.select("brand_id", pl.col("advertiser_id").alias("brand_advertiser_id"))
    names = pl.concat([
        world_tables.brands.select("name", "advertiser_id"),
        world_tables.advertisers.select("name", "advertiser_id"),
    ]).with_columns(pl.col("name").str.to_lowercase()).unique("name", keep="first")
    mentioned = (
        events.filter(pl.col("advertiser_id").is_null() & pl.col("brand_id").is_null() & pl.col("text").is_not_null())
        .with_row_index("mention_row")
        .with_columns(pl.col("text").str.to_lowercase().str.extract_many(names["name"].to_list()).alias("name"))
        .explode("name").drop_nulls("name")
        .join(names.rename({"advertiser_id": "mentioned_advertiser_id"}), on="name", how="inner")
        .unique(["mention_row", "mentioned_advertiser_id"])
        .with_columns(pl.col("mentioned_advertiser_id").alias("advertiser_id"))
    )
    known = (
        events.join(brand_owner, on="brand_id", how="left")
        .with_columns(pl.coalesce("advertiser_id", "brand_advertiser_id").alias("advertiser_id"))
        .filter(pl.col("advertiser_id").is_not_null())
    )
    columns = [*KEYS, "ts", "kind", "advertiser_id"]
    return pl.concat([known.select(columns), mentioned.select(columns)])


def most_recent_predictions(world_tables, requests: pl.DataFrame, config: BaselineConfig | None = None
                            ) -> pl.DataFrame:
    """The user's converted eligible advertisers, most recent first, then popularity (source "most_recent")."""
    config = config or BaselineConfig()
    requests = _check_requests(requests)
    eligible = eligible_advertisers(world_tables)
    past = (
        _window_events(world_tables, requests, config)
        .filter(pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]),
                pl.col("advertiser_id").is_not_null())
        .group_by([*KEYS, "advertiser_id"]).agg(pl.col("ts").max())
        .join(eligible, on="advertiser_id", how="inner")
        .sort([*KEYS, "ts", "advertiser_id"], descending=[False, False, True, False])
        .with_columns(pl.lit(0, dtype=pl.Int32).alias("tier"), pl.int_range(pl.len()).over(KEYS).alias("order"))
    )
    popular = (
        requests.join(popularity(world_tables, requests["anchor_date"].to_list(), config), on="anchor_date")
        .with_columns(pl.lit(1, dtype=pl.Int32).alias("tier"), pl.col("popularity_rank").cast(pl.Int64).alias("order"))
    )
    columns = [*KEYS, "advertiser_id", "name", "tier", "order"]
    ranked = pl.concat([past.select(columns), popular.select(columns)]).sort([*KEYS, "tier", "order"])
    return _as_predictions(ranked, "most_recent", config.n_predictions)


def pair_features(world_tables, requests: pl.DataFrame, config: BaselineConfig) -> pl.DataFrame:
    """Candidate (user, anchor, advertiser) rows with hand features; the candidates are the user's
    advertisers in the history window, the top popular ones and the preset pool's top ones."""
    requests = _check_requests(requests)
    eligible = eligible_advertisers(world_tables)
    events = _window_events(world_tables, requests, config)
    if config.inputs == "prompt":
        events = _prompt_events(events)
    history = advertiser_events(world_tables, events).with_columns(
        ((pl.col("anchor_date").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1) - pl.col("ts"))
         .dt.total_seconds() / 86400.0).alias("age_days"))
    per_kind = (
        history.group_by([*KEYS, "advertiser_id", "kind"])
        .agg(pl.len().alias("count"), pl.col("age_days").min().alias("days_since"))
        .pivot(on="kind", index=[*KEYS, "advertiser_id"], values=["count", "days_since"],
               on_columns=list(EVENT_KINDS))
    )
    per_kind = per_kind.with_columns(
        [pl.col(f"count_{k}").fill_null(0) for k in EVENT_KINDS]
        + [pl.col(f"days_since_{k}").fill_null(_NEVER_DAYS) for k in EVENT_KINDS])
    user_categories = (
        events.filter(pl.col("category_id").is_not_null())
        .group_by([*KEYS, "category_id"]).agg(pl.len().alias("category_events"))
        .with_columns((pl.col("category_events") / pl.col("category_events").sum().over(KEYS)).alias("category_share"))
    )
    user_totals = events.group_by(KEYS).agg(
        pl.len().alias("user_events"),
        pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]).sum().alias("user_conversions"),
        pl.col("advertiser_id").n_unique().alias("user_advertisers"))
    popular = popularity(world_tables, requests["anchor_date"].to_list(), config)
    preset = _preset_ranks(world_tables, requests["anchor_date"].unique().to_list())
    candidates = pl.concat([
        per_kind.select(*KEYS, "advertiser_id"),
        requests.join(popular.filter(pl.col("popularity_rank") <= config.n_popular_candidates)
                      .select("anchor_date", "advertiser_id"), on="anchor_date"),
        requests.join(preset.filter(pl.col("preset_rank") <= config.n_preset_candidates)
                      .select("anchor_date", "advertiser_id"), on="anchor_date"),
    ]).unique().join(eligible.select("advertiser_id"), on="advertiser_id", how="semi")
    advertiser_info = world_tables.advertisers.select(
        "advertiser_id", "category_id", (pl.col("campaign_type") == "ROAS").alias("is_roas"), "bid")
    return (
        candidates.join(per_kind, on=[*KEYS, "advertiser_id"], how="left")
        .join(advertiser_info, on="advertiser_id", how="left")
        .join(user_categories.select(*KEYS, "category_id", "category_share"), on=[*KEYS, "category_id"], how="left")
        .join(user_totals, on=KEYS, how="left")
        .join(popular.select("anchor_date", "advertiser_id", "popularity_count", "popularity_rank"),
              on=["anchor_date", "advertiser_id"], how="left")
        .join(preset.select("anchor_date", "advertiser_id", "preset_rank"), on=["anchor_date", "advertiser_id"],
              how="left")
        .with_columns(
            [pl.col(f"count_{k}").fill_null(0) for k in EVENT_KINDS]
            + [pl.col(f"days_since_{k}").fill_null(_NEVER_DAYS) for k in EVENT_KINDS]
            + [pl.col(c).fill_null(0) for c in ("category_share", "user_events", "user_conversions",
                                                "user_advertisers")]
            + [pl.col("preset_rank").fill_null(10_000)])
        .drop("category_id")
        .sort([*KEYS, "advertiser_id"])
    )


def _preset_ranks(world_tables, anchor_dates: list[date]) -> pl.DataFrame:
    """Preset-pool rank of each advertiser on the latest pool day on or before each anchor."""
    pool = world_tables.preset_pool
    frames = []
    for anchor in sorted(anchor_dates):
        days = pool.filter(pl.col("day") <= anchor)["day"]
        if days.len():
            frames.append(pool.filter(pl.col("day") == days.max()).select(
                pl.lit(anchor).alias("anchor_date"), "advertiser_id", pl.col("rank").alias("preset_rank")))
    if not frames:
        return pl.DataFrame(schema={"anchor_date": pl.Date, "advertiser_id": pl.Int32, "preset_rank": pl.Int32})
    return pl.concat(frames)


FEATURE_COLUMNS = (
    [f"count_{k}" for k in EVENT_KINDS] + [f"days_since_{k}" for k in EVENT_KINDS]
    + ["is_roas", "bid", "category_share", "user_events", "user_conversions", "user_advertisers",
       "popularity_count", "popularity_rank", "preset_rank"]
)


def feature_columns(config: BaselineConfig) -> list[str]:
    """The pair ranker's feature columns for `config.inputs` (`prompt` drops what the prompt does not show)."""
    if config.inputs == "all":
        return list(FEATURE_COLUMNS)
    hidden = {f"{stat}_{kind}" for kind in EVENT_KINDS if kind not in PROMPT_EVENT_KINDS
              for stat in ("count", "days_since")} | {"is_roas", "bid"}
    return [column for column in FEATURE_COLUMNS if column not in hidden]


def _prompt_events(events: pl.DataFrame) -> pl.DataFrame:
    """The events the prompt shows: its behaviour kinds, with URLs from the features' URL window only."""
    from llm_predictor.features import FeatureConfig

    url_days = FeatureConfig().offsite_urls_window_days
    anchor_end = pl.col("anchor_date").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1)
    return events.filter(pl.col("kind").is_in(PROMPT_EVENT_KINDS),
                         (pl.col("kind") != "offsite_url") | (pl.col("ts") >= anchor_end - pl.duration(days=url_days)))


class PairRanker:
    """LightGBM lambdarank over (user, candidate advertiser) pairs; `fit` on train labels."""

    def __init__(self, config: BaselineConfig | None = None):
        self.config = config or BaselineConfig()

    def fit(self, world_tables, train_labels: pl.DataFrame) -> PairRanker:
        """Learn from labelled (user_id, anchor_date, advertiser_id) rows; anchors without the label
        among the candidates teach nothing to a ranker and are left out (their share is kept)."""
        from lightgbm import LGBMRanker

        features = pair_features(world_tables, train_labels, self.config)
        labelled = features.join(
            train_labels.select(*KEYS, pl.col("advertiser_id").alias("label_id")), on=KEYS, how="inner"
        ).with_columns((pl.col("advertiser_id") == pl.col("label_id")).cast(pl.Int8).alias("is_label"))
        labelled = labelled.filter(pl.col("is_label").max().over(KEYS) == 1).sort(KEYS)
        n_groups = train_labels.select(KEYS).n_unique()
        self.candidate_recall_ = labelled.select(KEYS).n_unique() / n_groups if n_groups else float("nan")
        if labelled.is_empty():
            raise ValueError("no training label is among its user's candidates; widen the candidate pools")
        groups = labelled.group_by(KEYS, maintain_order=True).len()["len"].to_numpy()
        c = self.config
        self.model_ = LGBMRanker(
            objective="lambdarank", n_estimators=c.n_estimators, learning_rate=c.learning_rate,
            num_leaves=c.num_leaves, min_child_samples=c.min_child_samples, random_state=c.seed,
            n_jobs=c.n_threads, verbose=-1, lambdarank_truncation_level=c.n_predictions)
        self.model_.fit(labelled.select(feature_columns(c)).to_numpy().astype(np.float32),
                        labelled["is_label"].to_numpy(), group=groups)
        return self

    def predict(self, world_tables, requests: pl.DataFrame) -> pl.DataFrame:
        """The top `n_predictions` candidates per request by model score (source "lightgbm_pairs", or
        "lightgbm_pairs_prompt" on the prompt's inputs)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("PairRanker.predict before fit: call fit(world, train_labels) first")
        features = pair_features(world_tables, requests, self.config)
        scores = self.model_.predict(features.select(feature_columns(self.config)).to_numpy().astype(np.float32))
        ranked = (
            features.select(*KEYS, "advertiser_id").with_columns(pl.Series("score", scores))
            .join(eligible_advertisers(world_tables), on="advertiser_id", how="left")
            .sort([*KEYS, "score", "advertiser_id"], descending=[False, False, True, False])
        )
        source = "lightgbm_pairs" if self.config.inputs == "all" else f"lightgbm_pairs_{self.config.inputs}"
        return _as_predictions(ranked, source, self.config.n_predictions)

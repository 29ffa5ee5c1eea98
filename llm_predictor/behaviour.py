"""Behaviour-sequence continued pre-training (paper 3.5, phase 2: "recommendation datasets" after the
web corpus): each train user's conversions, oldest first, written as the advertiser names the prompts use,
and the URLs and searches of the last `url_window_days` and `search_window_days` that concern an advertiser,
each a marked name.

Why: the 1-advertiser SFT supervises one name per ~600-token prompt, and a small model trained on that
alone fits the popularity prior and never learns to read the user's own advertisers (issue 14). In a
sequence document every name is a next-advertiser target given the names before it, so one forward pass
supervises dozens, and the model learns that a user's advertisers recur (the repeat mechanism) and which
follow which; the browse items let it learn that users convert with what they browsed (the world's
`semantic` mechanism). Optional age markers (`@8`: the items from here on are 8-15 days old at the sequence's
end) would give the model what a name list lacks and the pair ranker's recency features have, how long ago
each item happened (as time-aware sequential recommenders do, e.g. TiSASRec, Li et al. 2020). The same
format is a prompt of its own (`sequence_prompt`): the user's sequence, then the separator where the next
name goes, so the model can rank names without any SFT (method `behaviour_ranked`). Validation documents
come from train-split users held out of training, never from eval users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from llm_predictor.features import CONVERSION_KINDS, ITEM_SEPARATOR
from llm_predictor.pretrain import TrainConfig
from synthetic_data.config_io import require

KEYS = ["user_id", "anchor_date"]


@dataclass(frozen=True)
class BehaviourConfig:
    """Documents (the last `max_conversions` conversions per user, the URLs of `url_window_days` and the
    searches of `search_window_days`), held-out validation users, loop settings."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=3000, batch_size=8, learning_rate=2e-3, warmup_steps=20, save_steps=250, logging_steps=25,
        torch_compile=True))
    # rows of whole documents (`pretrain.pack_documents`); a longer document keeps its last block_size tokens
    block_size: int = 256
    max_conversions: int = 60
    # days of URLs and of searches written into the sequences (0: none of that kind); the `semantic` conversions
    # follow what the user browsed (docs/world.md); the prompt shows 14 days of URLs (paper 4.1)
    url_window_days: int = 14
    search_window_days: int = 14
    validation_users: int = 600  # train-split users kept out of training: the validation loss's documents
    eval_steps: int = 250  # validation loss every this many steps; the model kept is the checkpoint of lowest loss
    # stop after this many validation losses without a new lowest (0: never stop early); the 3,000 steps chosen on
    # the demo world run Amazon Scientific's ~7x fewer documents for ~45 epochs, past its lowest loss at ~15
    early_stopping_patience: int = 2
    # day buckets of an item's age at the sequence's end, e.g. (1, 2, 4, 8, 16, 32, 64); a marker item `@<bucket>`
    # opens each bucket's run of items, and one `@0` closes a sequence whose last item is older (the next item
    # comes after the end). Off by default: on the demo's validation labels those log2 buckets lowered open
    # Recall@5 by 0.051 [0.016, 0.087] and left Recall@1 and @20 within their intervals (docs/results.md)
    age_buckets_days: tuple[int, ...] = ()
    # train documents per user: its sequences at each of the latest this-many label anchors (a week apart on the
    # demo world), each with its own URL and search windows, so more conversions follow the browsing before them;
    # the validation documents stay at the latest anchor (`documents_anchors`)
    document_anchors: int = 1

    def __post_init__(self) -> None:
        require(self.block_size >= 16, "behaviour.block_size", "must be >= 16 tokens")
        require(self.max_conversions >= 1, "behaviour.max_conversions", "must be >= 1")
        require(self.url_window_days >= 0, "behaviour.url_window_days", "must be >= 0 days (0: no URLs)")
        require(self.search_window_days >= 0, "behaviour.search_window_days", "must be >= 0 days (0: no searches)")
        require(self.validation_users >= 1, "behaviour.validation_users", "must be >= 1")
        require(self.eval_steps >= 1, "behaviour.eval_steps", "must be >= 1")
        require(self.train.save_steps % self.eval_steps == 0, "behaviour.train.save_steps",
                f"must be a multiple of behaviour.eval_steps ({self.eval_steps}), so that the best checkpoint is saved")
        require(self.early_stopping_patience >= 0, "behaviour.early_stopping_patience", "must be >= 0 (0: never)")
        buckets = list(self.age_buckets_days)
        require(all(isinstance(b, int) and b >= 1 for b in buckets) and buckets == sorted(set(buckets)),
                "behaviour.age_buckets_days", "must be increasing whole days >= 1, e.g. [1, 2, 4, 8], or [] for none")
        require(self.document_anchors >= 1, "behaviour.document_anchors", "must be >= 1")


# Browse items (the prompt's searches and URLs, paper 3.2.3) carry a marker before the advertiser's name, so
# that the separator is still followed by a name only where the next item is a conversion.
BROWSE_MARKERS = {"offsite_url": "~", "onsite_search": "?", "offsite_search": "?"}
AGE_MARKER = "@"  # an age-marker item: AGE_MARKER and the bucket's first day, e.g. "@8"


def behaviour_sequences(world_tables, keys: pl.DataFrame, config: BehaviourConfig) -> pl.DataFrame:
    """Per (user_id, anchor_date) of `keys`: `sequence`, the user's items up to the end of the anchor date,
    oldest first, joined by '|': the names of the advertisers of the last `config.max_conversions`
    conversions, and the URLs of `config.url_window_days` and the searches of `config.search_window_days`
    before the end that concern an advertiser (the same mapping as the pair ranker's, `baselines.advertiser_events`),
    each as a marker (`BROWSE_MARKERS`) and the advertiser's name; with `config.age_buckets_days`, age-marker
    items between them (`BehaviourConfig.age_buckets_days`). `items`: the conversions and browses written
    (markers not counted). A key whose user has no item gets an empty sequence and 0 items.
    Shape: one row per key, in `keys`' order."""
    from llm_predictor.baselines import advertiser_events

    names = world_tables.advertisers.select("advertiser_id", "name")
    end = pl.col("anchor_date").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1)
    ends = keys.select(*KEYS).unique().with_columns(end=end)
    days = {"offsite_url": config.url_window_days, "onsite_search": config.search_window_days,
            "offsite_search": config.search_window_days}  # one per BROWSE_MARKERS kind
    windows = {kind: window for kind, window in days.items() if window > 0}
    kinds = [*CONVERSION_KINDS, *windows]
    events = (world_tables.events.filter(pl.col("kind").is_in(kinds))  # before the join: engagements are most rows
              .select("user_id", "ts", "kind", "text", "advertiser_id", "brand_id")
              .join(ends, on="user_id").filter(pl.col("ts") < pl.col("end")))
    conversions = (events.filter(pl.col("kind").is_in(CONVERSION_KINDS))
                   .sort(*KEYS, "ts", "advertiser_id")
                   .filter(pl.int_range(pl.len(), 0, -1).over(KEYS) <= config.max_conversions)
                   .join(names, on="advertiser_id").select(*KEYS, "ts", item=pl.col("name")))
    items = [conversions]
    if windows:
        window = pl.col("kind").cast(pl.String).replace_strict(windows, default=0, return_dtype=pl.Int64)
        browses = events.filter(pl.col("kind").is_in(list(windows)),
                                pl.col("ts") >= pl.col("end") - pl.duration(days=window))
        markers = pl.col("kind").cast(pl.String).replace_strict(BROWSE_MARKERS)
        items.append(advertiser_events(world_tables, browses)
            .unique([*KEYS, "ts", "kind", "advertiser_id"])
            .join(names, on="advertiser_id").select(*KEYS, "ts", item=markers + pl.col("name")))
    marked = pl.concat(items).sort(*KEYS, "ts", "item")
    closing = pl.lit("")
    if config.age_buckets_days:
        marked = _with_age_markers(marked, end, config.age_buckets_days)
        # the next item comes after the end: a sequence whose last run is older says so with the newest marker
        closing = pl.when(pl.col("bucket").last() > 0).then(pl.lit(ITEM_SEPARATOR + AGE_MARKER + "0")).otherwise(
            pl.lit(""))
    sequences = marked.group_by(KEYS).agg(sequence=pl.col("item").str.join(ITEM_SEPARATOR) + closing,
                                          items=pl.len().cast(pl.Int32))
    return (keys.select(*KEYS).join(sequences, on=KEYS, how="left", maintain_order="left")
            .with_columns(pl.col("sequence").fill_null(""), pl.col("items").fill_null(0)))


def _with_age_markers(items: pl.DataFrame, end: pl.Expr, buckets: tuple[int, ...]) -> pl.DataFrame:
    """`items` (sorted by key and time) with `bucket`, the largest of `buckets` at most the item's age in days
    at `end` (0 below the first), and an age marker item before the first item of each bucket's run."""
    age_days = (end - pl.col("ts")).dt.total_seconds() / 86_400
    bucket = pl.lit(0)
    for edge in buckets:
        bucket = pl.when(age_days >= edge).then(edge).otherwise(bucket)
    opens = pl.col("bucket").shift(1).over(KEYS).fill_null(-1) != pl.col("bucket")
    return items.with_columns(bucket=bucket).with_columns(item=pl.when(opens).then(
        pl.lit(AGE_MARKER) + pl.col("bucket").cast(pl.String) + ITEM_SEPARATOR + pl.col("item"))
        .otherwise(pl.col("item")))


def sequence_prompt(sequences: pl.Series) -> pl.Series:
    """The user's sequence followed by the separator: the position where the next advertiser's name goes
    (a user without conversions gets the bare separator: the model's prior over first names)."""
    return (sequences + ITEM_SEPARATOR).alias("prompt")


def is_leave_one_out(world_tables) -> bool:
    """A leave-one-out world (synthetic_data.real): every user is evaluated, and label roles (train,
    validation, test) take the place of the user split."""
    return "role" in world_tables.labels.columns


def document_users(world_tables) -> pl.DataFrame:
    """The users (user_id) whose sequences may be trained on: the train split, or on a leave-one-out world
    every user (its documents end before the validation and test labels, `documents_anchors`)."""
    if is_leave_one_out(world_tables):
        return world_tables.users.select("user_id").sort("user_id")
    return world_tables.splits.filter(pl.col("split") == "train").select("user_id").sort("user_id")


def documents_anchors(world_tables, count: int = 1) -> list[date]:
    """The anchor dates train documents end on, latest first: the latest `count` label anchors (only train-split
    users are written), or on a leave-one-out world the validation labels' anchor, before which neither held-out
    label lies (one anchor only). Raises ValueError when fewer than `count` anchors exist."""
    labels = world_tables.labels
    if is_leave_one_out(world_tables):
        anchors = [labels.filter(pl.col("role") == "validation")["anchor_date"].min()]
    else:
        anchors = labels["anchor_date"].unique().sort(descending=True).to_list()
    if len(anchors) < count:
        raise ValueError(f"behaviour.document_anchors={count} but the world has {len(anchors)} label anchor(s) to "
                         f"end documents on; lower it to {len(anchors)}")
    return anchors[:count]


def validation_users(world_tables, count: int, seed: int) -> pl.DataFrame:
    """A seeded sample of `count` of the `document_users` (user_id), held out of every training stage that
    reads it, for validation losses and choices (on a synthetic world they are train-split users, never
    eval users)."""
    users = document_users(world_tables)
    if users.height <= count:
        raise ValueError(f"behaviour.validation_users={count} leaves no user of {users.height} to train on; lower it")
    chosen = np.random.default_rng(seed).choice(users.height, size=count, replace=False)
    return users[np.sort(chosen)]


def behaviour_documents(world_tables, config: BehaviourConfig, seed: int) -> tuple[list[str], list[str]]:
    """(train documents, validation documents): the `document_users`' sequences, split by `validation_users`:
    a train user's at each of `documents_anchors` (`config.document_anchors`), a validation user's at the latest;
    sequences of fewer than two items say nothing and are left out. Raises ValueError when no train document
    is left."""
    held_out = validation_users(world_tables, config.validation_users, seed)
    latest, *earlier = documents_anchors(world_tables, config.document_anchors)
    users = document_users(world_tables)
    is_held_out = pl.col("user_id").is_in(held_out["user_id"].to_list())
    keys = pl.concat([users.with_columns(anchor_date=pl.lit(latest)),
                      *(users.filter(~is_held_out).with_columns(anchor_date=pl.lit(anchor)) for anchor in earlier)])
    sequences = behaviour_sequences(world_tables, keys, config).filter(pl.col("items") >= 2)
    train = sequences.filter(~is_held_out).sample(fraction=1.0, shuffle=True, seed=seed)
    if train.is_empty():
        raise ValueError("behaviour: no train user has two conversions before the documents' anchor; generate a "
                         "larger world, or skip the stage with sft_init=pretrain")
    return train["sequence"].to_list(), sequences.filter(is_held_out)["sequence"].to_list()

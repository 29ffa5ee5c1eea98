"""Two-tower inputs from observable tables only (events, users, items), as of each request time.

User tower (paper 3.6.1): profile (age, gender, user state) and the last engaged items,
categories, advertisers and search tokens strictly before the request's `as_of` time, plus the
mean content embedding of those items. Item tower: item ID, advertiser, category and content
embedding. Sparse features are (values, lengths) pairs ready for a TorchRec KeyedJaggedTensor;
index 0 of every vocabulary means "unknown". Never reads `*_truth` tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from retrieval.config import FeatureConfig
from synthetic_data.schema import EVENTS, ITEMS, USERS, SchemaError, validate

SEARCH_KINDS = ("onsite_search", "offsite_search")
PROFILE_FIELDS = ("age", "gender", "user_state")
USER_SPARSE = ("recent_items", "recent_categories", "recent_advertisers", "search_tokens",
               *PROFILE_FIELDS)
ITEM_SPARSE = ("item_id", "advertiser_id", "category_id")
TOKEN_PATTERN = r"[a-z0-9]+"

# A sparse feature for a batch: flat int64 values and one bag length per row.
Sparse = tuple[np.ndarray, np.ndarray]


def _index_of(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map raw IDs to 1-based vocabulary positions; unknown (or null) IDs map to 0."""
    values = np.asarray(values)
    if len(sorted_ids) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=np.int64)
    position = np.clip(np.searchsorted(sorted_ids, values), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[position] == values, position + 1, 0).astype(np.int64)


@dataclass(frozen=True)
class Vocabulary:
    """Sorted raw IDs / strings per sparse feature; position + 1 is the embedding row."""

    item_ids: np.ndarray
    advertiser_ids: np.ndarray
    category_ids: np.ndarray
    profile_values: dict[str, tuple[str, ...]]
    search_tokens: tuple[str, ...]

    def sizes(self) -> dict[str, int]:
        """Embedding rows per table (one extra row for "unknown")."""
        return {
            "item": len(self.item_ids) + 1,
            "advertiser": len(self.advertiser_ids) + 1,
            "category": len(self.category_ids) + 1,
            "search_token": len(self.search_tokens) + 1,
            **{name: len(values) + 1 for name, values in self.profile_values.items()},
        }

    def item_index(self, item_ids) -> np.ndarray:
        return _index_of(self.item_ids, item_ids)

    def advertiser_index(self, advertiser_ids) -> np.ndarray:
        return _index_of(self.advertiser_ids, advertiser_ids)

    def category_index(self, category_ids) -> np.ndarray:
        return _index_of(self.category_ids, category_ids)

    def to_state(self) -> dict:
        """Plain lists (loadable with `torch.load(weights_only=True)`)."""
        return {
            "item_ids": self.item_ids.tolist(),
            "advertiser_ids": self.advertiser_ids.tolist(),
            "category_ids": self.category_ids.tolist(),
            "profile_values": {k: list(v) for k, v in self.profile_values.items()},
            "search_tokens": list(self.search_tokens),
        }

    @classmethod
    def from_state(cls, state: dict) -> Vocabulary:
        return cls(
            item_ids=np.asarray(state["item_ids"], dtype=np.int64),
            advertiser_ids=np.asarray(state["advertiser_ids"], dtype=np.int64),
            category_ids=np.asarray(state["category_ids"], dtype=np.int64),
            profile_values={k: tuple(v) for k, v in state["profile_values"].items()},
            search_tokens=tuple(state["search_tokens"]),
        )


def _sorted_unique(*columns: pl.Series) -> np.ndarray:
    values = pl.concat([c.cast(pl.Int64) for c in columns]).drop_nulls().unique().sort()
    return values.to_numpy().astype(np.int64)


def _search_token_lists(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(pl.col("kind").is_in(SEARCH_KINDS) & pl.col("text").is_not_null()).with_columns(
        tokens=pl.col("text").str.to_lowercase().str.extract_all(TOKEN_PATTERN)
    )


def build_vocabulary(items: pl.DataFrame, users: pl.DataFrame, events: pl.DataFrame,
                     config: FeatureConfig) -> Vocabulary:
    """Vocabularies from the catalog, the users and (training-period) events."""
    validate(items, ITEMS, "items")
    validate(users, USERS, "users")
    validate(events, EVENTS, "events")
    tokens = (
        _search_token_lists(events).select(pl.col("tokens").explode()).drop_nulls()
        .group_by("tokens").len().sort(["len", "tokens"], descending=[True, False])
        .head(config.max_search_tokens)["tokens"].sort().to_list()
    )
    return Vocabulary(
        item_ids=_sorted_unique(items["item_id"]),
        advertiser_ids=_sorted_unique(items["advertiser_id"], events["advertiser_id"]),
        category_ids=_sorted_unique(items["category_id"], events["category_id"]),
        profile_values={
            name: tuple(users[name].drop_nulls().unique().sort().to_list()) for name in PROFILE_FIELDS
        },
        search_tokens=tuple(tokens),
    )


def _string_index(values: pl.Series, vocabulary: tuple[str, ...]) -> pl.Series:
    return values.replace_strict(
        list(vocabulary), list(range(1, len(vocabulary) + 1)), default=0, return_dtype=pl.Int64
    )


def _flatten(lists: pl.Series) -> Sparse:
    """A List(Int64) column as KeyedJaggedTensor values and lengths."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = lists.explode().drop_nulls().to_numpy().astype(np.int64)
    if len(values) != lengths.sum():
        raise ValueError("internal: flattened bag values do not match their lengths")
    return values, lengths


@dataclass(frozen=True)
class ItemFeatures:
    """Item-tower inputs for a catalog, in catalog row order."""

    item_ids: np.ndarray  # raw IDs (int64)
    advertiser_ids: np.ndarray  # raw advertiser IDs (int64)
    sparse: dict[str, np.ndarray]  # one vocabulary index per item for each of ITEM_SPARSE
    content: np.ndarray  # (items, content_dim) float32

    def __len__(self) -> int:
        return len(self.item_ids)

    def take(self, rows: np.ndarray) -> tuple[dict[str, Sparse], np.ndarray]:
        """Sparse bags (one ID each) and content of the given catalog rows."""
        ones = np.ones(len(rows), dtype=np.int64)
        return {name: (values[rows], ones) for name, values in self.sparse.items()}, self.content[rows]


def item_features(items: pl.DataFrame, vocabulary: Vocabulary) -> ItemFeatures:
    """Item-tower inputs for every row of `items`."""
    validate(items, ITEMS, "items")
    content = items["embedding"].to_numpy().astype(np.float32)
    return ItemFeatures(
        item_ids=items["item_id"].to_numpy().astype(np.int64),
        advertiser_ids=items["advertiser_id"].to_numpy().astype(np.int64),
        sparse={
            "item_id": vocabulary.item_index(items["item_id"].to_numpy()),
            "advertiser_id": vocabulary.advertiser_index(items["advertiser_id"].to_numpy()),
            "category_id": vocabulary.category_index(items["category_id"].to_numpy()),
        },
        content=np.ascontiguousarray(content),
    )


@dataclass(frozen=True)
class UserFeatures:
    """User-tower inputs for a batch of (user, as_of) rows."""

    sparse: dict[str, Sparse]
    content: np.ndarray  # (rows, content_dim): mean content embedding of the recent items
    history_events: np.ndarray  # events the user had before as_of (for cold-user routing)


class UserHistory:
    """The observable event history, indexed once, answering "features as of t" for many rows."""

    def __init__(self, events: pl.DataFrame, users: pl.DataFrame, items: ItemFeatures,
                 vocabulary: Vocabulary, config: FeatureConfig):
        validate(events, EVENTS, "events")
        validate(users, USERS, "users")
        self.config = config
        self.vocabulary = vocabulary
        self.items = items
        events = events.sort("user_id", "ts", "event_id")
        with_item = events.filter(pl.col("kind") == "engagement").drop_nulls("item_id")
        with_category = events.drop_nulls("category_id")
        with_advertiser = events.drop_nulls("advertiser_id")
        searches = _search_token_lists(events)
        self._sequences = {
            "recent_items": self._sequence(
                with_item, vocabulary.item_index(with_item["item_id"].to_numpy())),
            "recent_categories": self._sequence(
                with_category, vocabulary.category_index(with_category["category_id"].to_numpy())),
            "recent_advertisers": self._sequence(
                with_advertiser, vocabulary.advertiser_index(with_advertiser["advertiser_id"].to_numpy())),
            "search_tokens": self._sequence(
                searches, searches["tokens"].list.eval(
                    pl.element().replace_strict(list(vocabulary.search_tokens),
                                                list(range(1, len(vocabulary.search_tokens) + 1)),
                                                default=0, return_dtype=pl.Int64))),
            "history_events": self._sequence(events, np.zeros(len(events), dtype=np.int64)),
        }
        self._profile = users.select(
            "user_id", *[_string_index(users[name], vocabulary.profile_values[name]).alias(name)
                         for name in PROFILE_FIELDS]
        )
        # Row 0 (unknown item) has a zero content vector.
        self._content = np.vstack([np.zeros((1, items.content.shape[1]), np.float32),
                                   items.content[np.argsort(items.item_ids)]])
        self._content_row = _index_of(np.sort(items.item_ids), vocabulary.item_ids)

    @staticmethod
    def _sequence(events: pl.DataFrame, values) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Per-event running position within the user, and the user's whole value list."""
        frame = events.select("user_id", "ts").with_columns(
            value=pl.Series(values),
            position=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("user_id"),
        )
        per_user = frame.group_by("user_id", maintain_order=True).agg(pl.col("value").alias("values"))
        return frame.select("user_id", "ts", "position").sort("ts"), per_user

    def _recent(self, requests: pl.DataFrame, name: str, limit: int) -> pl.DataFrame:
        positions, per_user = self._sequences[name]
        joined = (
            requests.sort("as_of")
            .join_asof(positions, left_on="as_of", right_on="ts", by="user_id",
                       strategy="backward", allow_exact_matches=False, check_sortedness=False)
            .join(per_user, on="user_id", how="left")
            .sort("_row")
            .with_columns(count=pl.col("position").fill_null(0))
        )
        return joined.select(
            "count",
            pl.col("values").list.slice(pl.max_horizontal(pl.col("count") - limit, 0),
                                        pl.min_horizontal(pl.col("count"), limit)),
        )

    def features(self, user_ids: np.ndarray, as_of: pl.Series) -> UserFeatures:
        """User-tower inputs of each (user, as_of) pair, from events strictly before as_of."""
        if as_of.dtype != EVENTS["ts"]:
            raise SchemaError(f"as_of has dtype {as_of.dtype}; cast it to {EVENTS['ts']} (UTC)")
        requests = pl.DataFrame({
            "_row": np.arange(len(user_ids)), "user_id": np.asarray(user_ids, dtype=np.int64),
            "as_of": as_of,
        })
        config = self.config
        limits = {
            "recent_items": config.max_recent_items,
            "recent_categories": config.max_recent_categories,
            "recent_advertisers": config.max_recent_advertisers,
        }
        sparse = {name: _flatten(self._recent(requests, name, limit)["values"])
                  for name, limit in limits.items()}
        searches = self._recent(requests, "search_tokens", config.max_recent_searches)["values"]
        sparse["search_tokens"] = _flatten(searches.list.eval(pl.element().explode()))
        profile = requests.join(self._profile, on="user_id", how="left").sort("_row")
        ones = np.ones(len(requests), dtype=np.int64)
        for name in PROFILE_FIELDS:
            sparse[name] = (profile[name].fill_null(0).to_numpy().astype(np.int64), ones)
        history = self._recent(requests, "history_events", 1)["count"].to_numpy()
        return UserFeatures(sparse=sparse, content=self._mean_content(*sparse["recent_items"]),
                            history_events=history.astype(np.int64))

    def _mean_content(self, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        total = np.zeros((len(lengths), self._content.shape[1]), dtype=np.float32)
        has_items = lengths > 0
        if has_items.any():
            rows = self._content[np.concatenate([[0], self._content_row])[values]]
            offsets = (np.cumsum(lengths) - lengths)[has_items]
            total[has_items] = np.add.reduceat(rows, offsets, axis=0) / lengths[has_items, None]
        return total


def take_rows(features: dict[str, Sparse], rows: np.ndarray) -> dict[str, Sparse]:
    """The bags of the given rows (in that order), for every sparse feature."""
    taken = {}
    for name, (values, lengths) in features.items():
        starts = np.cumsum(lengths) - lengths
        row_lengths = lengths[rows]
        row_offsets = np.cumsum(row_lengths) - row_lengths
        gather = (np.arange(row_lengths.sum()) - np.repeat(row_offsets, row_lengths)
                  + np.repeat(starts[rows], row_lengths))
        taken[name] = (values[gather], row_lengths)
    return taken

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
from synthetic_data.arrays import ragged_ranges
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


@dataclass(frozen=True)
class _Sequence:
    """One kind of a user's events in (user, time) order, as arrays: which of them precede a time is a
    binary search. Each event carries a bag of values (one ID, or a search's tokens)."""

    user_ids: np.ndarray  # sorted users that have events
    user_starts: np.ndarray  # each user's first event, then the event count
    keys: np.ndarray  # user row * (events + 1) + the event's time rank, ascending
    times: np.ndarray  # every event time (epoch us), sorted, to rank a query time
    value_starts: np.ndarray  # each event's first value, then the value count
    values: np.ndarray

    @classmethod
    def of(cls, events: pl.DataFrame, values: np.ndarray, lengths: np.ndarray | None = None) -> _Sequence:
        """From events sorted by user then time, with `lengths[e]` values per event (default one)."""
        user = events["user_id"].to_numpy().astype(np.int64)
        event_times = events["ts"].dt.epoch("us").to_numpy()
        order = np.argsort(event_times, kind="stable")
        times = event_times[order]
        # an event's time rank: how many events are strictly earlier (ties share the first position)
        is_new_time = np.r_[True, times[1:] != times[:-1]] if len(times) else np.zeros(0, dtype=bool)
        rank = np.empty(len(times), dtype=np.int64)
        rank[order] = np.maximum.accumulate(np.where(is_new_time, np.arange(len(times)), 0))
        first = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, dtype=np.int64)
        user_ids, counts = user[first], np.diff(np.append(first, len(user)))
        keys = np.repeat(np.arange(len(user_ids)), counts) * (len(user) + 1) + rank
        lengths = np.ones(len(user), dtype=np.int64) if lengths is None else lengths
        return cls(user_ids=user_ids, user_starts=np.append(first, len(user)), keys=keys, times=times,
                   value_starts=np.concatenate([[0], np.cumsum(lengths)]), values=np.asarray(values, np.int64))

    def before(self, user_ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: the user's first event, how many of its events precede the time, and how many exist."""
        row = np.minimum(np.searchsorted(self.user_ids, user_ids), max(len(self.user_ids) - 1, 0))
        known = (self.user_ids[row] == user_ids) if len(self.user_ids) else np.zeros(len(user_ids), dtype=bool)
        query = row * (len(self.times) + 1) + np.searchsorted(self.times, times, side="left")
        start = self.user_starts[row] if len(self.user_ids) else np.zeros(len(user_ids), dtype=np.int64)
        count = np.where(known, np.searchsorted(self.keys, query, side="left") - start, 0)
        total = np.where(known, self.user_starts[np.minimum(row + 1, len(self.user_starts) - 1)] - start, 0)
        return start, count, total

    def recent(self, user_ids: np.ndarray, times: np.ndarray, limit: int) -> Sparse:
        """The values of each query's last `limit` events before its time, as one bag per query."""
        start, count, _ = self.before(user_ids, times)
        first = self.value_starts[start + np.maximum(count - limit, 0)]
        lengths = self.value_starts[start + count] - first
        return self.values[ragged_ranges(first, lengths)], lengths


def _require_timestamps(as_of: pl.Series) -> None:
    if as_of.dtype != EVENTS["ts"]:
        raise SchemaError(f"as_of has dtype {as_of.dtype}; cast it to {EVENTS['ts']} (UTC)")


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
        token_ids = searches["tokens"].list.eval(
            pl.element().replace_strict(list(vocabulary.search_tokens),
                                        list(range(1, len(vocabulary.search_tokens) + 1)),
                                        default=0, return_dtype=pl.Int64))
        self._sequences = {
            "recent_items": _Sequence.of(with_item, vocabulary.item_index(with_item["item_id"].to_numpy())),
            "recent_categories": _Sequence.of(
                with_category, vocabulary.category_index(with_category["category_id"].to_numpy())),
            "recent_advertisers": _Sequence.of(
                with_advertiser, vocabulary.advertiser_index(with_advertiser["advertiser_id"].to_numpy())),
            "search_tokens": _Sequence.of(searches, token_ids.explode().drop_nulls().to_numpy().astype(np.int64),
                                          token_ids.list.len().fill_null(0).to_numpy().astype(np.int64)),
            "history_events": _Sequence.of(events, np.zeros(len(events), dtype=np.int64)),
        }
        by_user = users.sort("user_id")
        self._profile_users = by_user["user_id"].to_numpy().astype(np.int64)
        # per field, [1 + users sorted by id]: row 0 (an unknown user) and each user's 1-based code, 0: unknown
        self._profile = {name: np.concatenate([[0], _string_index(by_user[name], vocabulary.profile_values[name])
                                               .to_numpy()]).astype(np.int64) for name in PROFILE_FIELDS}
        # Row 0 (unknown item) has a zero content vector.
        self._content = np.vstack([np.zeros((1, items.content.shape[1]), np.float32),
                                   items.content[np.argsort(items.item_ids)]])
        self._content_row = _index_of(np.sort(items.item_ids), vocabulary.item_ids)
        self.user_ids = np.sort(users["user_id"].to_numpy().astype(np.int64))

    def is_settled(self, user_ids: np.ndarray, as_of: pl.Series) -> np.ndarray:
        """Whether each (user, as_of) comes after all the user's events: its features no longer change."""
        _require_timestamps(as_of)
        start, count, total = self._sequences["history_events"].before(np.asarray(user_ids, dtype=np.int64),
                                                                       as_of.cast(pl.Int64).to_numpy())
        return count == total

    def features(self, user_ids: np.ndarray, as_of: pl.Series) -> UserFeatures:
        """User-tower inputs of each (user, as_of) pair, from events strictly before as_of."""
        _require_timestamps(as_of)
        user_ids = np.asarray(user_ids, dtype=np.int64)
        times = as_of.cast(pl.Int64).to_numpy()
        config = self.config
        limits = {
            "recent_items": config.max_recent_items,
            "recent_categories": config.max_recent_categories,
            "recent_advertisers": config.max_recent_advertisers,
            "search_tokens": config.max_recent_searches,
        }
        sparse = {name: self._sequences[name].recent(user_ids, times, limit) for name, limit in limits.items()}
        row = _index_of(self._profile_users, user_ids)  # 0: a user the table does not know
        ones = np.ones(len(user_ids), dtype=np.int64)
        for name in PROFILE_FIELDS:
            sparse[name] = (self._profile[name][row], ones)
        _, history, _ = self._sequences["history_events"].before(user_ids, times)
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


def bag_starts(features: dict[str, Sparse]) -> dict[str, np.ndarray]:
    """Where each row's bag begins in its feature's values: computed once per table, so that
    `take_rows` costs O(batch) instead of O(table) per batch."""
    return {name: np.cumsum(lengths) - lengths for name, (_, lengths) in features.items()}


def take_rows(features: dict[str, Sparse], rows: np.ndarray, starts: dict[str, np.ndarray]) -> dict[str, Sparse]:
    """The bags of the given rows (in that order), for every sparse feature; `starts` is
    `bag_starts(features)`."""
    taken = {}
    for name, (values, lengths) in features.items():
        row_lengths = lengths[rows]
        row_offsets = np.cumsum(row_lengths) - row_lengths
        gather = (np.arange(row_lengths.sum()) - np.repeat(row_offsets, row_lengths)
                  + np.repeat(starts[name][rows], row_lengths))
        taken[name] = (values[gather], row_lengths)
    return taken

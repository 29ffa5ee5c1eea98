"""Ranking features for (request, candidate) rows: sparse IDs, context, history counts, LLM features.

Sparse IDs (user, item, advertiser, brand, category, context, demographics) feed embedding tables;
dense features are log counts of the user's observable events before the impression's day and,
optionally, the LLM-derived features of `ranking.llm_features` (paper 3.6.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from ranking.config import FeatureConfig
from ranking.llm_features import PredictedLists
from synthetic_data.schema import CONVERSION_KINDS, EVENT_KINDS, SURFACES
from synthetic_data.arrays import window_counts

SPARSE_FEATURES = ("user_id", "item_id", "advertiser_id", "brand_id", "category_id", "parent_category_id",
                   "surface", "position", "age", "gender", "user_state")
HISTORY_FEATURES = tuple(f"user_{kind}_count" for kind in EVENT_KINDS) + (
    "user_advertiser_events", "user_advertiser_conversions", "user_category_events", "log_price")
SCORING_COLUMNS = ("request_id", "user_id", "ts", "surface", "position", "item_id")
_DAY_RANGE = 1 << 17  # days since 1970 fit below this for the next two centuries


@dataclass(frozen=True)
class FeatureTable:
    """Model inputs for n rows: sparse indices [n, s], dense values [n, d] and labels per task."""

    sparse: np.ndarray
    dense: np.ndarray
    sparse_names: tuple[str, ...]
    dense_names: tuple[str, ...]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sparse)

    def rows(self, index: np.ndarray) -> FeatureTable:
        return replace(self, sparse=self.sparse[index], dense=self.dense[index],
                       labels={task: label[index] for task, label in self.labels.items()})

    def without(self, dense_names: tuple[str, ...]) -> FeatureTable:
        """The same rows without the named dense features (the "without LLM features" arm)."""
        keep = [i for i, name in enumerate(self.dense_names) if name not in dense_names]
        return replace(self, dense=self.dense[:, keep], dense_names=tuple(self.dense_names[i] for i in keep))


def _codes(values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """1-based index of each value in the sorted vocabulary; 0 for values not in it."""
    index = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    return np.where(vocabulary[index] == values, index + 1, 0)


def _window_counts(sorted_keys: np.ndarray, pair: np.ndarray, first_day: np.ndarray, end_day: np.ndarray):
    return window_counts(sorted_keys, pair.astype(np.int64) * _DAY_RANGE, first_day, end_day)


class FeatureBuilder:
    """Learns ID vocabularies and an index of the event history; turns candidate rows into features."""

    def __init__(self, config: FeatureConfig):
        self.config = config

    def fit(self, users: pl.DataFrame, items: pl.DataFrame, advertisers: pl.DataFrame,
            categories: pl.DataFrame, events: pl.DataFrame) -> FeatureBuilder:
        """Index the observable tables (no labels are read: vocabularies come from the catalogues)."""
        users = users.sort("user_id")
        items = items.sort("item_id")
        self.user_ids_ = users["user_id"].to_numpy()
        self.demographics_ = {column: np.sort(users[column].unique().drop_nulls().to_numpy())
                              for column in ("age", "gender", "user_state")}
        self.user_demographics_ = {column: _codes(users[column].to_numpy(), self.demographics_[column])
                                   for column in self.demographics_}
        self.item_ids_ = items["item_id"].to_numpy()
        self.item_columns_ = {column: items[column].to_numpy()
                              for column in ("advertiser_id", "brand_id", "category_id", "price")}
        parents = categories.select("category_id", pl.col("parent_id").fill_null(pl.col("category_id")))
        self.category_stride_ = int(categories["category_id"].max()) + 1
        self.parent_of_ = np.zeros(self.category_stride_, dtype=np.int64)
        self.parent_of_[parents["category_id"].to_numpy()] = parents["parent_id"].to_numpy()
        self.advertiser_stride_ = int(max(advertisers["advertiser_id"].max(), items["advertiser_id"].max())) + 1
        self.brand_stride_ = int(items["brand_id"].max()) + 1
        self.advertisers_ = advertisers.select("advertiser_id", "category_id")
        self.categories_ = categories.select("category_id", "parent_id", "name")
        self._index_events(events)
        return self

    def _index_events(self, events: pl.DataFrame) -> None:
        user = _codes(events["user_id"].to_numpy(), self.user_ids_).astype(np.int64)
        day = events["ts"].dt.date().cast(pl.Int32).to_numpy().astype(np.int64)
        kind = events["kind"].to_physical().to_numpy().astype(np.int64)
        advertiser = events["advertiser_id"].fill_null(-1).to_numpy().astype(np.int64)
        category = events["category_id"].fill_null(-1).to_numpy().astype(np.int64)
        has_advertiser, has_category = advertiser >= 0, category >= 0
        is_conversion = events["kind"].is_in(list(CONVERSION_KINDS)).to_numpy() & has_advertiser
        self.kind_keys_ = np.sort((user * len(EVENT_KINDS) + kind) * _DAY_RANGE + day)
        pair = user * self.advertiser_stride_ + advertiser
        self.advertiser_keys_ = np.sort((pair * _DAY_RANGE + day)[has_advertiser])
        self.conversion_keys_ = np.sort((pair * _DAY_RANGE + day)[is_conversion])
        category_pair = user * self.category_stride_ + category
        self.category_keys_ = np.sort((category_pair * _DAY_RANGE + day)[has_category])

    @property
    def vocab_sizes_(self) -> dict[str, int]:
        return {
            "user_id": len(self.user_ids_) + 1, "item_id": len(self.item_ids_) + 1,
            "advertiser_id": self.advertiser_stride_ + 1, "brand_id": self.brand_stride_ + 1,
            "category_id": self.category_stride_ + 1, "parent_category_id": self.category_stride_ + 1,
            "surface": len(SURFACES), "position": self.config.max_position + 1,
            **{column: len(values) + 1 for column, values in self.demographics_.items()},
        }

    def predicted_lists(self, predictions: pl.DataFrame, interests: pl.DataFrame | None = None) -> PredictedLists:
        """Index predicted lists (and interests) once for the LLM features of many `transform` calls."""
        return PredictedLists.build(predictions, self.advertisers_, interests, self.categories_)

    def transform(self, rows: pl.DataFrame, predictions: pl.DataFrame | PredictedLists | None = None,
                  interests: pl.DataFrame | None = None, tasks: tuple[str, ...] = ()) -> FeatureTable:
        """Features of candidate rows (`SCORING_COLUMNS`), plus labels `is_<task>` when asked for.

        `predictions` (a table, or lists indexed by `predicted_lists`, which hold their interests)
        add the LLM features.
        """
        missing = [column for column in SCORING_COLUMNS if column not in rows.columns]
        if missing:
            raise ValueError(f"rows to featurise lack columns {missing}; they need {list(SCORING_COLUMNS)}")
        user = _codes(rows["user_id"].to_numpy(), self.user_ids_)
        item = _codes(rows["item_id"].to_numpy(), self.item_ids_)
        if (item == 0).any():
            raise ValueError(f"{int((item == 0).sum())} candidate item_id(s) are not in the items table, "
                             f"e.g. {rows['item_id'].to_numpy()[item == 0][:3].tolist()}")
        advertiser, brand, category, price = (self.item_columns_[c][item - 1] for c in
                                              ("advertiser_id", "brand_id", "category_id", "price"))
        advertiser, brand, category = (np.asarray(a, dtype=np.int64) for a in (advertiser, brand, category))
        parent = self.parent_of_[category]
        surface = rows["surface"].cast(pl.Enum(list(SURFACES))).to_physical().to_numpy().astype(np.int64)
        position = np.minimum(rows["position"].to_numpy().astype(np.int64), self.config.max_position)
        sparse = np.column_stack([
            user, item, advertiser + 1, brand + 1, category + 1, parent + 1, surface, position,
            *(np.where(user > 0, self.user_demographics_[c][np.maximum(user - 1, 0)], 0)
              for c in ("age", "gender", "user_state")),
        ]).astype(np.int64)

        day = rows["ts"].dt.date().cast(pl.Int32).to_numpy().astype(np.int64)
        first = day - self.config.count_window_days
        user64 = user.astype(np.int64)
        # per-kind counts depend on (user, day) only: look each pair up once (a batch repeats users)
        user_days, inverse = np.unique(user64 * _DAY_RANGE + day, return_inverse=True)
        pair_user, pair_day = user_days // _DAY_RANGE, user_days % _DAY_RANGE
        counts = [_window_counts(self.kind_keys_, pair_user * len(EVENT_KINDS) + k,
                                 pair_day - self.config.count_window_days, pair_day)[inverse.ravel()]
                  for k in range(len(EVENT_KINDS))]
        pair = user64 * self.advertiser_stride_ + advertiser
        counts.append(_window_counts(self.advertiser_keys_, pair, first, day))
        counts.append(_window_counts(self.conversion_keys_, pair, np.zeros_like(day), day))
        counts.append(_window_counts(self.category_keys_, user64 * self.category_stride_ + category, first, day))
        dense = [np.log1p(np.column_stack(counts)), np.log(np.maximum(price, 1e-3))[:, None]]
        dense_names = HISTORY_FEATURES
        if predictions is not None:
            if isinstance(predictions, pl.DataFrame):
                predictions = self.predicted_lists(predictions, interests)
            elif interests is not None:
                raise ValueError("pass interests to `predicted_lists`, not with lists already indexed")
            keyed = pl.DataFrame({"user_id": rows["user_id"], "date": rows["ts"].dt.date(),
                                  "advertiser_id": advertiser.astype(np.int32),
                                  "category_id": category.astype(np.int32), "parent_id": parent.astype(np.int32)})
            extra = predictions.features(keyed)
            dense.append(extra.to_numpy())
            dense_names = dense_names + tuple(extra.columns)
        labels = {task: rows[f"is_{task}"].to_numpy() for task in tasks}
        return FeatureTable(sparse=sparse, dense=np.hstack(dense).astype(np.float32),
                            sparse_names=SPARSE_FEATURES, dense_names=dense_names, labels=labels)


def split_by_time(impressions: pl.DataFrame, config: FeatureConfig) -> dict[str, pl.DataFrame]:
    """Train / validation / test by day: the last `test_days` test, the `validation_days` before validate."""
    day = impressions["ts"].dt.date()
    days = day.unique().sort()
    if len(days) <= config.test_days + config.validation_days:
        raise ValueError(f"impressions span {len(days)} days; features.validation_days "
                         f"({config.validation_days}) + features.test_days ({config.test_days}) must leave "
                         f"training days: log more days or shorten them")
    test_start = days[len(days) - config.test_days]
    validation_start = days[len(days) - config.test_days - config.validation_days]
    return {
        "train": impressions.filter(day < validation_start),
        "validation": impressions.filter((day >= validation_start) & (day < test_start)),
        "test": impressions.filter(day >= test_start),
    }

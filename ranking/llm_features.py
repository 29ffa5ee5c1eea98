"""LLM-derived ranking features (paper 3.6.2) and the random-list control of the lift experiment.

For each impression the user's latest predicted list published before the impression's day gives:
whether the candidate's advertiser is in it, its reciprocal rank, the share of listed advertisers
selling in the candidate's category, and whether a predicted interest names the candidate's category.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from synthetic_data.arrays import offsets_within
from synthetic_data.names import normalise_name
from synthetic_data.schema import PREDICTED_INTERESTS, PREDICTIONS, conform, validate

LLM_FEATURES = ("has_prediction", "is_predicted_advertiser", "predicted_reciprocal_rank",
                "predicted_category_share")
INTEREST_FEATURE = "interest_overlap"
RANDOM_SOURCE = "random_control"
DAY_RANGE = 1 << 17  # days since 1970 fit below this for the next two centuries
ID_RANGE = 1 << 31  # advertiser and category ids are Int32
MAX_USER_ID = 1 << 46  # user_id * DAY_RANGE fits in int64


def _name_keys(names: pl.Expr) -> pl.Expr:
    return names.map_elements(normalise_name, return_dtype=pl.String)


def _interest_matches(interests: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """(user_id, anchor_date, category_id) where a predicted interest names the category, under the
    one name key of `synthetic_data.names` ("Measure & Inspect" names "Measure and Inspect")."""
    validate(interests, PREDICTED_INTERESTS, "predicted_interests")
    names = categories.select("category_id", key=_name_keys(pl.col("name")))
    spelled = interests.select(pl.col("interest").unique()).with_columns(key=_name_keys(pl.col("interest")))
    return (interests.join(spelled, on="interest").join(names, on="key")
            .select("user_id", "anchor_date", "category_id").unique())


def _days(dates: pl.Series) -> np.ndarray:
    return dates.to_physical().to_numpy().astype(np.int64)


def _ids(values: pl.Series) -> np.ndarray:
    """int64 IDs, -1 for null (a series without nulls skips polars' fill: this runs per scoring batch)."""
    return (values if values.null_count() == 0 else values.fill_null(-1)).to_numpy().astype(np.int64)


def _sorted(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(keys, kind="stable")
    return (keys[order], *(value[order] for value in values))


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, is_valid: np.ndarray) -> np.ndarray:
    """The value at each valid query's key in the sorted unique `keys`; 0 where absent."""
    if len(keys) == 0:
        return np.zeros(len(query), dtype=values.dtype)
    position = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(is_valid & (keys[position] == query), values[position], 0)


@dataclass(frozen=True)
class PredictedLists:
    """The predicted lists indexed once for LLM features: a batch's features are then array look-ups,
    not a re-aggregation of the whole predictions table (the simulator scores a batch every few
    simulated minutes); `with_predictions` adds fresh lists (the nightly re-inference) incrementally.

    Keys: lists by user_id * DAY_RANGE + the first day they serve (anchor + 1); a list's advertisers,
    listed categories and interest-named categories by list_id * ID_RANGE + advertiser or category id.
    """

    advertiser_categories: pl.DataFrame  # advertiser_id, category_id (the advertiser's category)
    interest_matches: pl.DataFrame | None  # (user_id, anchor_date, category_id) named by an interest
    list_keys: np.ndarray  # sorted
    list_ids: np.ndarray  # the list at each key
    list_lengths: np.ndarray  # rows (resolved or not) per list id
    advertiser_keys: np.ndarray  # sorted, unique
    advertiser_ranks: np.ndarray  # the advertiser's best rank in the list
    category_keys: np.ndarray  # sorted, unique
    category_hits: np.ndarray  # listed advertisers selling in the category
    interest_keys: np.ndarray  # sorted, unique
    unresolved: int  # prediction rows whose advertiser is null (names that matched no advertiser)

    @classmethod
    def build(cls, predictions: pl.DataFrame, advertisers: pl.DataFrame, interests: pl.DataFrame | None = None,
              categories: pl.DataFrame | None = None) -> PredictedLists:
        """Index `predictions` (and `interests`, which need `categories` to match their names)."""
        matches = None
        if interests is not None:
            if categories is None:
                raise ValueError("interest features need the categories table to match interests to categories")
            matches = _interest_matches(interests, categories)
        empty_int = np.zeros(0, dtype=np.int64)
        empty = cls(advertisers.select("advertiser_id", "category_id"), matches, empty_int, empty_int, empty_int,
                    empty_int, empty_int, empty_int, empty_int, empty_int, 0)
        return empty.with_predictions(predictions)

    def with_predictions(self, predictions: pl.DataFrame) -> PredictedLists:
        """These lists plus those of `predictions` (whose (user, anchor_date) lists must be new)."""
        validate(predictions, PREDICTIONS, "predictions")
        if predictions.height and predictions["rank"].min() < 1:
            raise ValueError("predictions.rank must be >= 1 (1 = the first advertiser of a list); "
                             f"got {predictions['rank'].min()}: renumber the lists")
        lists = (predictions.group_by("user_id", "anchor_date").agg(list_length=pl.len())
                 .sort("user_id", "anchor_date")
                 .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("list_id") + len(self.list_lengths)))
        user = lists["user_id"].to_numpy().astype(np.int64)
        first_day = _days(lists["anchor_date"]) + 1
        if len(user) and (user.min() < 0 or user.max() >= MAX_USER_ID or first_day.min() < 0
                          or first_day.max() >= DAY_RANGE):
            raise ValueError(f"predictions need user_id in [0, {MAX_USER_ID}) and anchor_date from 1970 "
                             f"for the next {DAY_RANGE // 366} years; renumber users or fix the dates")
        new_keys = user * DAY_RANGE + first_day
        if np.isin(new_keys, self.list_keys).any():
            raise ValueError("predictions repeat a (user_id, anchor_date) list that is already served; "
                             "anchor fresh predictions at a new date")
        keyed = predictions.join(lists.select("user_id", "anchor_date", "list_id"), on=["user_id", "anchor_date"])
        listed = (keyed.drop_nulls("advertiser_id").group_by("list_id", "advertiser_id")
                  .agg(pl.col("rank").min()))
        shares = (listed.join(self.advertiser_categories, on="advertiser_id")
                  .group_by("list_id", "category_id").agg(hits=pl.len()))
        interest_keys = self.interest_keys
        if self.interest_matches is not None:
            named = self.interest_matches.join(lists, on=["user_id", "anchor_date"])
            interest_keys = np.sort(np.concatenate([interest_keys, _pair_keys(named, "category_id")]))
        list_keys, list_ids = _sorted(np.concatenate([self.list_keys, new_keys]),
                                      np.concatenate([self.list_ids, lists["list_id"].to_numpy()]))
        advertiser_keys, advertiser_ranks = _sorted(
            np.concatenate([self.advertiser_keys, _pair_keys(listed, "advertiser_id")]),
            np.concatenate([self.advertiser_ranks, listed["rank"].to_numpy().astype(np.int64)]))
        category_keys, category_hits = _sorted(
            np.concatenate([self.category_keys, _pair_keys(shares, "category_id")]),
            np.concatenate([self.category_hits, shares["hits"].to_numpy().astype(np.int64)]))
        return replace(self, list_keys=list_keys, list_ids=list_ids,
                       list_lengths=np.concatenate([self.list_lengths, lists["list_length"].to_numpy().astype(np.int64)]),
                       advertiser_keys=advertiser_keys, advertiser_ranks=advertiser_ranks,
                       category_keys=category_keys, category_hits=category_hits, interest_keys=interest_keys,
                       unresolved=self.unresolved + int(predictions["advertiser_id"].null_count()))

    def user_ids(self) -> np.ndarray:
        """The distinct users with at least one list (sorted)."""
        return np.unique(self.list_keys // DAY_RANGE)

    def features(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Feature columns aligned with `rows` (user_id, date, advertiser_id, category_id, parent_id)."""
        list_id = self._latest_list(_ids(rows["user_id"]), _days(rows["date"]))
        has_list = list_id >= 0

        def in_list(keys: np.ndarray, values: np.ndarray, column: str) -> np.ndarray:
            ids = _ids(rows[column])
            return _lookup(keys, values, list_id * ID_RANGE + ids, has_list & (ids >= 0))

        rank = in_list(self.advertiser_keys, self.advertiser_ranks, "advertiser_id")
        hits = in_list(self.category_keys, self.category_hits, "category_id")
        length = np.ones(len(list_id))
        length[has_list] = self.list_lengths[list_id[has_list]]
        columns = {
            "has_prediction": has_list,
            "is_predicted_advertiser": rank > 0,
            "predicted_reciprocal_rank": np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0),
            "predicted_category_share": hits / length,
        }
        if self.interest_matches is not None:
            named = np.ones(len(self.interest_keys), dtype=bool)
            columns[INTEREST_FEATURE] = (in_list(self.interest_keys, named, "category_id")
                                         | in_list(self.interest_keys, named, "parent_id"))
        return pl.DataFrame({name: values.astype(np.float32) for name, values in columns.items()})

    def _latest_list(self, user: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The id of each (user, day)'s latest list first served on or before the day; -1 if none."""
        if len(self.list_keys) == 0:
            return np.full(len(user), -1, dtype=np.int64)
        at = np.searchsorted(self.list_keys, user * DAY_RANGE + day, side="right") - 1
        candidate = np.maximum(at, 0)
        is_users = (at >= 0) & (user >= 0) & (self.list_keys[candidate] // DAY_RANGE == user)
        return np.where(is_users, self.list_ids[candidate], -1)


def _pair_keys(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame["list_id"].to_numpy().astype(np.int64) * ID_RANGE + frame[column].to_numpy().astype(np.int64)


def llm_features(rows: pl.DataFrame, predictions: pl.DataFrame, advertisers: pl.DataFrame,
                 interests: pl.DataFrame | None = None,
                 categories: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict]:
    """Feature columns aligned with `rows` (user_id, date, advertiser_id, category_id, parent_id).

    Returns the features and counts of what the predictions could not contribute (rows in lists
    whose advertiser is null, i.e. names the model produced that matched no advertiser).
    """
    lists = PredictedLists.build(predictions, advertisers, interests, categories)
    return lists.features(rows), {"unresolved_prediction_rows": lists.unresolved}


def random_prediction_lists(predictions: pl.DataFrame, advertiser_ids: np.ndarray, seed: int) -> pl.DataFrame:
    """The control: each (user, anchor) list replaced by distinct uniform advertisers, same length."""
    validate(predictions, PREDICTIONS, "predictions")
    lists = predictions.group_by("user_id", "anchor_date").agg(length=pl.len()).sort("user_id", "anchor_date")
    lengths = lists["length"].to_numpy().astype(np.int64)
    max_length = int(lengths.max()) if len(lengths) else 0
    if max_length > len(advertiser_ids):
        raise ValueError(f"a predicted list has {max_length} advertisers but only "
                         f"{len(advertiser_ids)} exist to draw the random control from")
    rng = np.random.default_rng(seed)
    drawn = []
    for start in range(0, len(lists), 8192):  # chunks bound the (lists x advertisers) key matrix
        keys = rng.random((min(8192, len(lists) - start), len(advertiser_ids)))
        drawn.append(np.argsort(keys, axis=1)[:, :max_length])
    order = np.concatenate(drawn) if drawn else np.zeros((0, 0), dtype=np.int64)
    list_index = np.repeat(np.arange(len(lists)), lengths)
    rank = offsets_within(lengths) + 1
    chosen = np.asarray(advertiser_ids)[order[list_index, rank - 1]]
    return conform(pl.DataFrame({
        "user_id": lists["user_id"].to_numpy()[list_index],
        "anchor_date": lists["anchor_date"].gather(list_index),
        "rank": rank, "advertiser_id": chosen, "advertiser_name": [None] * len(chosen),
        "source": RANDOM_SOURCE,
    }, schema_overrides={"advertiser_name": pl.String}), PREDICTIONS, "random predictions")


def random_interest_lists(interests: pl.DataFrame, vocabulary: list[str], seed: int) -> pl.DataFrame:
    """The control for predicted interests: each interest replaced by a uniform category name."""
    validate(interests, PREDICTED_INTERESTS, "predicted_interests")
    rng = np.random.default_rng(seed)
    return interests.with_columns(interest=pl.Series(np.asarray(vocabulary)[
        rng.integers(0, len(vocabulary), interests.height)]))

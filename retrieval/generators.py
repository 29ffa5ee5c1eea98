"""Candidate generators behind one interface: `generate(requests) -> CANDIDATES` (paper 3.6.1).

Requests follow `retrieval.requests.REQUESTS` (request_id, user_id, ts). Generators:

- `MainGenerator` ("two_tower"): unfiltered ANN top-N for the user embedding.
- `LlmAdvertiserGenerator` ("llm_advertiser"): the user's LLM-predicted advertisers (the latest
  `PREDICTIONS` anchored before the request day, at most `max_prediction_age_days` old) are
  targeting filters; items under them are scored by the same two-tower. Quota rule (weighted
  round-robin by predicted rank): the j-th best item of the advertiser at rank r has priority
  j * r; the request keeps the `l0_quota` lowest priorities (ties: better rank, then score). So
  rank 1 gets about twice the items of rank 2, every rank <= quota can get at least one, and an
  advertiser with too few items leaves its share to the others. Users without a prediction get
  nothing. The output score is 1 / (1 + the item's place in that order), so whoever keeps a
  source's top `quota` by score (blending, recall@k) keeps the generator's first `quota` by
  priority; the two-tower score only breaks ties.
- `PopularityGenerator` ("popularity"): the most engaged/converted items of the recent window,
  the same for everyone; advertiser-agnostic, for cold users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl

from retrieval.config import GeneratorConfig
from retrieval.features import UserHistory
from retrieval.index import ItemIndex
from retrieval.requests import validate_requests
from retrieval.train import SettledValues, TwoTowerRetriever
from synthetic_data.arrays import ragged_ranges, rank_within_runs
from synthetic_data.schema import CANDIDATES, CONVERSION_KINDS, EVENTS, PREDICTIONS, empty, validate


DAY_RANGE = 1 << 17  # days since 1970 fit below this for the next two centuries
MICROSECONDS_PER_DAY = 86_400_000_000  # request times are UTC microseconds: day = time // this


class CandidateGenerator(Protocol):
    """Anything that turns a request table into a candidates table."""

    source: str

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame: ...


def _candidates(request_id: np.ndarray, item_id: np.ndarray, advertiser_id: np.ndarray, score: np.ndarray,
                source: str) -> pl.DataFrame:
    """A CANDIDATES table from rows already in its order: by request id, then descending score."""
    return pl.DataFrame({"request_id": np.asarray(request_id, dtype=np.int64),
                         "item_id": np.asarray(item_id, dtype=np.int32),
                         "advertiser_id": np.asarray(advertiser_id, dtype=np.int32),
                         "source": pl.Series([source], dtype=pl.String).new_from_index(0, len(request_id)),
                         "score": np.asarray(score, dtype=np.float32)})


def _by_request_id(requests: pl.DataFrame) -> np.ndarray:
    """The request rows in request-id order (the order of a CANDIDATES table)."""
    return np.argsort(requests["request_id"].to_numpy(), kind="stable")


class MainGenerator:
    """Unfiltered two-tower ANN retrieval: the top-N catalog items for the user embedding.

    A user past their last event in the history has a fixed vector, hence fixed top-N: it is
    searched once and kept (a simulated day asks for the same users' top-N ~2.5 times each).
    """

    source = "two_tower"

    def __init__(self, retriever: TwoTowerRetriever, index: ItemIndex, history: UserHistory,
                 config: GeneratorConfig):
        self.retriever, self.index, self.history, self.config = retriever, index, history, config
        self._settled_top = SettledValues(history)

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        validate_requests(requests)
        if requests.height == 0:
            return empty(CANDIDATES)
        scores, rows = self._settled_top.values(requests["user_id"].to_numpy(), requests["ts"], self._search)
        by_id = _by_request_id(requests)
        scores, rows = scores[by_id], rows[by_id]  # faiss ranks each row best first
        found = rows >= 0
        items = self.retriever.items_
        return _candidates(requests["request_id"].to_numpy()[by_id][np.nonzero(found)[0]],
                           items.item_ids[rows[found]], items.advertiser_ids[rows[found]], scores[found], self.source)

    def _search(self, user_ids: np.ndarray, as_of: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Top-N (scores, catalog rows) of each (user, as_of)'s vector."""
        return self.index.search(self.retriever.user_vectors(self.history, user_ids, as_of), self.config.main_top_n)


@dataclass(frozen=True)
class PredictedAdvertisers:
    """A PREDICTIONS table indexed for serving: its (user, anchor) lists by key, each list's resolved
    advertisers (an advertiser listed twice keeps its best rank) in rank order, and per list the rows
    without an advertiser and the repeats that were dropped."""

    list_keys: np.ndarray  # sorted: user_id * DAY_RANGE + anchor day (days since 1970)
    starts: np.ndarray  # each list's first advertiser row, then the row count
    rank: np.ndarray  # per advertiser row
    advertiser_id: np.ndarray  # per advertiser row (int64)
    unresolved: np.ndarray  # per list: rows whose advertiser is null
    duplicates: np.ndarray  # per list: resolved rows that repeat an advertiser of the list

    @classmethod
    def build(cls, predictions: pl.DataFrame) -> PredictedAdvertisers:
        key = (predictions["user_id"].to_numpy().astype(np.int64) * DAY_RANGE
               + predictions["anchor_date"].cast(pl.Int32).to_numpy())
        rank = predictions["rank"].to_numpy().astype(np.int64)
        advertiser = predictions["advertiser_id"].fill_null(-1).to_numpy().astype(np.int64)
        order = np.lexsort((rank, key))
        key, rank, advertiser = key[order], rank[order], advertiser[order]
        list_keys, list_of_row = np.unique(key, return_inverse=True)
        is_resolved = advertiser >= 0
        is_kept = np.zeros(key.size, dtype=bool)  # an advertiser's first (best-ranked) row of each list
        is_kept[np.unique(list_of_row * (advertiser.max(initial=0) + 2) + advertiser + 1, return_index=True)[1]] = True
        is_kept &= is_resolved
        lists = list_keys.size
        kept_per_list = np.bincount(list_of_row[is_kept], minlength=lists)
        return cls(list_keys=list_keys, starts=np.r_[0, np.cumsum(kept_per_list)], rank=rank[is_kept],
                   advertiser_id=advertiser[is_kept],
                   unresolved=np.bincount(list_of_row[~is_resolved], minlength=lists),
                   duplicates=np.bincount(list_of_row[is_resolved], minlength=lists) - kept_per_list)

    def latest_lists(self, user_ids: np.ndarray, days: np.ndarray, max_age_days: int) -> np.ndarray:
        """Each (user, serve day)'s latest list anchored before the day and at most `max_age_days` before
        it (-1 where there is none)."""
        at = np.searchsorted(self.list_keys, user_ids * DAY_RANGE + days) - 1
        candidate = self.list_keys[np.maximum(at, 0)] if self.list_keys.size else np.zeros(0, np.int64)
        is_usable = ((at >= 0) & (candidate // DAY_RANGE == user_ids)
                     & (days - candidate % DAY_RANGE <= max_age_days)) if self.list_keys.size else at >= 0
        return np.where(is_usable, at, -1)


class LlmAdvertiserGenerator:
    """Two-tower retrieval restricted to the user's LLM-predicted advertisers, under an L0 quota."""

    source = "llm_advertiser"

    def __init__(self, retriever: TwoTowerRetriever, index: ItemIndex, history: UserHistory,
                 predictions: pl.DataFrame, config: GeneratorConfig):
        validate(predictions, PREDICTIONS, "predictions")
        self.retriever, self.index, self.history, self.config = retriever, index, history, config
        self.predictions = predictions.filter(pl.col("rank") <= config.max_predicted_advertisers)
        self.stats_ = {"requests": 0, "requests_with_prediction": 0, "unresolved_predictions": 0,
                       "duplicate_advertisers": 0, "advertisers_without_items": 0, "candidates": 0}

    @property
    def predictions(self) -> pl.DataFrame:
        return self._predictions

    @predictions.setter
    def predictions(self, predictions: pl.DataFrame) -> None:
        """Serve `predictions` from now on (the nightly job appends fresh lists); indexed once here."""
        self._predictions = predictions
        self._lists = PredictedAdvertisers.build(predictions)

    def _pairs(self, requests: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(request row, rank, advertiser) of each advertiser of each request's latest usable list, by
        request id then rank."""
        lists = self._lists
        by_id = _by_request_id(requests)
        latest = lists.latest_lists(requests["user_id"].to_numpy().astype(np.int64)[by_id],
                                    requests["ts"].cast(pl.Int64).to_numpy()[by_id] // MICROSECONDS_PER_DAY,
                                    self.config.max_prediction_age_days)
        served, latest = by_id[latest >= 0], latest[latest >= 0]
        self.stats_["unresolved_predictions"] += int(lists.unresolved[latest].sum())
        self.stats_["duplicate_advertisers"] += int(lists.duplicates[latest].sum())
        self.stats_["requests_with_prediction"] += served.size
        counts = lists.starts[latest + 1] - lists.starts[latest]
        rows = ragged_ranges(lists.starts[latest], counts)
        return np.repeat(served, counts), lists.rank[rows], lists.advertiser_id[rows]

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        validate_requests(requests)
        self.stats_["requests"] += requests.height
        request_of_pair, rank, advertiser = self._pairs(requests)
        if rank.size == 0:
            return empty(CANDIDATES)
        is_first_pair = np.r_[True, request_of_pair[1:] != request_of_pair[:-1]]
        served, query_of_pair = request_of_pair[is_first_pair], np.cumsum(is_first_pair) - 1
        users = self.retriever.user_vectors(self.history, requests["user_id"].to_numpy()[served],
                                            requests["ts"].gather(served))
        matches = self.index.search_advertisers(users, query_of_pair, advertiser, self.config.l0_quota)
        self.stats_["advertisers_without_items"] += int(len(advertiser) - len(np.unique(matches.pair)))
        query, pair_rank = query_of_pair[matches.pair], rank[matches.pair]
        priority = (matches.position + 1) * pair_rank
        order = np.lexsort((-matches.score, pair_rank, priority, query))
        place = rank_within_runs(query[order])  # within the request
        chosen, place = order[place < self.config.l0_quota], place[place < self.config.l0_quota]
        self.stats_["candidates"] += chosen.size
        items = self.retriever.items_
        item_rows = matches.item_row[chosen]
        return _candidates(requests["request_id"].to_numpy()[served][query[chosen]], items.item_ids[item_rows],
                           items.advertiser_ids[item_rows], 1.0 / (1 + place), self.source)


class PopularityGenerator:
    """The recent window's most engaged or converted items, for every (or every cold) request."""

    source = "popularity"

    def __init__(self, config: GeneratorConfig, history: UserHistory | None = None):
        if config.popularity_max_user_events >= 0 and history is None:
            raise ValueError("popularity_max_user_events is set: pass the user history so that "
                             "cold users can be told apart, or set it to -1")
        self.config, self.history = config, history

    def fit(self, events: pl.DataFrame, items: pl.DataFrame, as_of: datetime) -> PopularityGenerator:
        """Count item engagements and conversions in [as_of - window, as_of)."""
        validate(events, EVENTS, "events")
        window = (pl.col("ts") >= as_of - timedelta(days=self.config.popularity_window_days)) & (
            pl.col("ts") < as_of)
        counts = (
            events.filter(window & pl.col("kind").is_in(["engagement", *CONVERSION_KINDS]))
            .drop_nulls("item_id").group_by("item_id").len()
            .join(items.select("item_id", "advertiser_id"), on="item_id")
            .sort(["len", "item_id"], descending=[True, False]).head(self.config.popularity_top_n)
        )
        self.as_of_ = as_of
        self.popular_ = counts.with_columns(score=(pl.col("len") / pl.col("len").sum()).cast(pl.Float32))
        return self

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        validate_requests(requests)
        if requests.height and requests["ts"].min() < self.as_of_:
            raise ValueError(f"requests at {requests['ts'].min()} precede the popularity snapshot "
                             f"({self.as_of_}); fit the generator on events before the first request")
        if self.config.popularity_max_user_events >= 0:
            history = self.history.features(requests["user_id"].to_numpy(), requests["ts"]).history_events
            requests = requests.filter(pl.Series(history <= self.config.popularity_max_user_events))
        request_id = requests["request_id"].to_numpy()[_by_request_id(requests)]
        popular = {name: np.tile(self.popular_[name].to_numpy(), request_id.size)
                   for name in ("item_id", "advertiser_id", "score")}  # every request: the same list, best first
        return _candidates(np.repeat(request_id, self.popular_.height), popular["item_id"], popular["advertiser_id"],
                           popular["score"], self.source)

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

from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl

from retrieval.config import GeneratorConfig
from retrieval.features import UserHistory
from retrieval.index import ItemIndex
from retrieval.requests import validate_requests
from retrieval.train import SettledValues, TwoTowerRetriever
from synthetic_data.schema import CANDIDATES, CONVERSION_KINDS, EVENTS, PREDICTIONS, conform, empty, validate


class CandidateGenerator(Protocol):
    """Anything that turns a request table into a candidates table."""

    source: str

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame: ...


def _candidates(request_id, item_id, advertiser_id, score, source: str) -> pl.DataFrame:
    frame = pl.DataFrame({"request_id": request_id, "item_id": item_id,
                          "advertiser_id": advertiser_id, "score": score})
    return conform(frame.with_columns(source=pl.lit(source)).select(list(CANDIDATES)),
                   CANDIDATES, "candidates").sort(["request_id", "score"], descending=[False, True])


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
        found = rows >= 0
        request_row = np.nonzero(found)[0]
        items = self.retriever.items_
        return _candidates(requests["request_id"].to_numpy()[request_row], items.item_ids[rows[found]],
                           items.advertiser_ids[rows[found]], scores[found], self.source)

    def _search(self, user_ids: np.ndarray, as_of: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Top-N (scores, catalog rows) of each (user, as_of)'s vector."""
        return self.index.search(self.retriever.user_vectors(self.history, user_ids, as_of), self.config.main_top_n)


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

    def _pairs(self, requests: pl.DataFrame) -> pl.DataFrame:
        """(request, rank, advertiser) rows from each request's latest usable prediction."""
        anchors = self.predictions.select("user_id", "anchor_date").unique().sort("anchor_date")
        served = (
            requests.with_columns(serve_date=pl.col("ts").dt.date()).sort("serve_date")
            .join_asof(anchors, left_on="serve_date", right_on="anchor_date", by="user_id",
                       strategy="backward", allow_exact_matches=False, check_sortedness=False)
            .filter((pl.col("serve_date") - pl.col("anchor_date")).dt.total_days()
                    <= self.config.max_prediction_age_days)
        )
        pairs = served.join(self.predictions.select("user_id", "anchor_date", "rank", "advertiser_id"),
                            on=["user_id", "anchor_date"])
        unresolved = pairs.filter(pl.col("advertiser_id").is_null()).height
        resolved = pairs.drop_nulls("advertiser_id").sort("request_id", "rank")
        deduplicated = resolved.unique(["request_id", "advertiser_id"], keep="first", maintain_order=True)
        self.stats_["unresolved_predictions"] += unresolved
        self.stats_["duplicate_advertisers"] += resolved.height - deduplicated.height
        self.stats_["requests_with_prediction"] += served.height
        return deduplicated

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        validate_requests(requests)
        self.stats_["requests"] += requests.height
        pairs = self._pairs(requests)
        if pairs.height == 0:
            return empty(CANDIDATES)
        served = pairs.select("request_id", "user_id", "ts").unique("request_id", maintain_order=True)
        users = self.retriever.user_vectors(self.history, served["user_id"].to_numpy(), served["ts"])
        query_of_pair = pairs.join(served.with_row_index("query"), on="request_id", how="left",
                                   maintain_order="left")["query"]
        advertiser = pairs["advertiser_id"].to_numpy().astype(np.int64)
        matches = self.index.search_advertisers(users, query_of_pair.to_numpy(), advertiser,
                                                self.config.l0_quota)
        self.stats_["advertisers_without_items"] += int(
            len(advertiser) - len(np.unique(matches.pair)))
        items = self.retriever.items_
        rank = pairs["rank"].to_numpy()[matches.pair]
        chosen = (
            pl.DataFrame({
                "request_id": pairs["request_id"].to_numpy()[matches.pair],
                "priority": (matches.position + 1) * rank, "rank": rank, "score": matches.score,
                "item_id": items.item_ids[matches.item_row],
                "advertiser_id": items.advertiser_ids[matches.item_row],
            })
            .sort(["request_id", "priority", "rank", "score"], descending=[False, False, False, True])
            .group_by("request_id", maintain_order=True).head(self.config.l0_quota)
            .with_columns(order_score=1.0 / (1 + pl.int_range(pl.len()).over("request_id")))
        )
        self.stats_["candidates"] += chosen.height
        return _candidates(chosen["request_id"], chosen["item_id"], chosen["advertiser_id"],
                           chosen["order_score"], self.source)


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
        served = requests.select("request_id").join(self.popular_, how="cross")
        return _candidates(served["request_id"], served["item_id"], served["advertiser_id"],
                           served["score"], self.source)

"""The SimPy market (paper 4.5): simulated days of requests through retrieval, blending, ranking, auction.

SimPy owns time and order - batch ticks, pacing updates, conversion arrivals, the nightly LLM
job - and each tick hands a whole batch of requests to polars/numpy/torch. One `simulate` call
is one market (an arm) over its users; every random draw is keyed (CRN, simulator/random_streams).
The steps of a batch that read no market state (retrieval, blending, the ranker's features) run
for the day's next batches on a second thread while the current one is ranked and auctioned
(`Market.retrieve`, `Market.serve`): the same outcomes as one batch at a time, on both cores.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl
import simpy
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from blending.blend import BlendConfig, blend_rows
from blending.funnel import FunnelLedger
from simulator import auction, pacing
from simulator.attribution import draw_conversions
from simulator.config import SimulationConfig
from simulator.protocols import CandidateGenerator, NightlyJob, PredictionConsumer, ResponseModel, Scorer
from simulator.random_streams import normals, uniforms
from simulator.traffic import TrafficTables, day_requests, day_start, traffic_tables
from synthetic_data import schema
from synthetic_data.arrays import first_rows, ragged_ranges
from synthetic_data.schema import World

SECONDS_PER_DAY = 86400.0
USER_METRICS = ("requests", "impressions", "clicks", "spend", "conversions", "click_conversions",
                "conversion_value")
_NIGHTLY_EPSILON = 1e-3  # midnight runs just after the day's last batch tick
# threads per numerical op (torch, faiss, BLAS) while a market runs: its batches are a few thousand
# rows, too small to gain much from a second thread, and when another process shares the cores a
# thread that waits for a descheduled partner at every op made the trained stack 3x slower
SIMULATION_THREADS = 1
# batches of a day retrieved ahead of the one being auctioned: more than one evens out batches
# where retrieval and the request path take turns being the slower
LOOKAHEAD_BATCHES = 3


@dataclass(frozen=True)
class Stack:
    """The models a market runs: candidate sources, the ranker, the true response, the nightly job."""

    generators: tuple[CandidateGenerator, ...]
    scorer: Scorer
    response: ResponseModel
    nightly: NightlyJob | None = None
    # the market's list coverage beside the ranker's LLM features' training coverage
    # (`ranking.scoring.Ranker.coverage_check`); empty for a scorer without LLM features
    llm_feature_coverage: dict = field(default_factory=dict)
    # the users whose serving lists the market starts with: the A/B's served slice (paper Table 6 reports
    # its opt-in slice), fixed before any arm runs; None for a stack without lists
    served_users: np.ndarray | None = None


@dataclass(frozen=True)
class SimulationResult:
    """What one market produced: logs, per-user metrics, the funnel ledger and a summary."""

    impressions: pl.DataFrame  # schema.IMPRESSIONS + source, prices, predicted and true rates
    conversions: pl.DataFrame  # every conversion drawn, with arrival_ts and is_attributed
    user_metrics: pl.DataFrame  # user_id + USER_METRICS
    advertiser_days: pl.DataFrame  # day, advertiser_id, spend, budget
    ledger: FunnelLedger
    summary: dict


def simulation_start(world: World) -> date:
    """The first simulated day: the day after the world's last event."""
    if world.events.height == 0:
        raise ValueError("the world has no events; the simulation starts the day after the last one")
    return world.events["ts"].max().date() + timedelta(days=1)


def top_advertisers(ranked: pl.DataFrame, rank_depth: int) -> pl.DataFrame:
    """The rows of each request's first `rank_depth` advertisers, in `ranked`'s (request, rank) order.

    The depth counts advertisers, not candidates: an advertiser's other candidates go along (the
    auction enters its best by eCPM) but cannot push a rival, a potential price-setter, out.
    """
    return ranked.filter(pl.Series(is_within_rank_depth(ranked["request_id"].to_numpy(),
                                                        ranked["advertiser_id"].to_numpy(), rank_depth)))


def is_within_rank_depth(request: np.ndarray, advertiser: np.ndarray, rank_depth: int) -> np.ndarray:
    """`top_advertisers` as a mask over rows given as arrays (each request's rows adjacent, in rank order)."""
    if request.size == 0:
        return np.zeros(0, dtype=bool)
    is_request_start = np.r_[True, request[1:] != request[:-1]]
    run = np.cumsum(is_request_start) - 1
    first_row = first_rows(advertiser, run)  # the first row of each row's (request, advertiser)
    is_first = first_row == np.arange(first_row.size)
    advertisers = np.cumsum(is_first)
    request_start = np.flatnonzero(is_request_start)[run]
    advertisers_so_far = advertisers - advertisers[request_start] + is_first[request_start]
    return advertisers_so_far[first_row] <= rank_depth


def _lookahead_thread() -> None:
    """Set up the thread that retrieves the next batches: one thread per op, and a lower scheduling
    priority (nice +10) so that the market's thread, whose ranking and auction every batch waits for,
    keeps its core when anything else wants one."""
    threadpool_limits(SIMULATION_THREADS, "openmp")
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + 10)
    except (AttributeError, OSError):  # no per-thread priorities here: the lookahead still overlaps
        pass


class Columns(dict[str, np.ndarray]):
    """Parallel numpy columns of one batch's rows: the market's working table inside its hot loop."""

    def take(self, index: np.ndarray) -> Columns:
        return Columns({name: column[index] for name, column in self.items()})

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        return Columns({name: np.concatenate([part[name] for part in parts]) for name in parts[0]})


@dataclass(frozen=True)
class Retrieved:
    """A batch after `Market.retrieve`: its requests, the coalesced requests the models see (`served`),
    each request's representative among them, the candidates before and after blending, the
    scorer's input and what the scorer prepared ahead."""

    requests: pl.DataFrame
    served: pl.DataFrame
    representative: np.ndarray  # [requests] -> row of `served`
    candidates: Columns
    blended: Columns
    scorer_input: pl.DataFrame  # the blended rows as the scorer reads them (`Market._scorer_input`)
    prepared: object = None  # the scorer's `prepare` of `scorer_input`, where it has one


IMPRESSION_LOG = ("request_id", "user_id", "ts", "surface", "position", "item_id", "advertiser_id", "category_id",
                  "source", "is_click", "dwell_seconds", "propensity", "price_paid", "ecpm", "ctcvr", "vtcvr",
                  "p_click", "p_conversion", "p_view_conversion")
CONVERSION_INPUT = ("request_id", "user_id", "ts", "item_id", "advertiser_id", "source", "is_click", "p_conversion",
                    "p_view_conversion", "price")


class Market:
    """The state of one market between SimPy ticks; each method is one step called by a process."""

    def __init__(self, world: World, stack: Stack, blend_config: BlendConfig, user_ids: np.ndarray,
                 config: SimulationConfig):
        self.stack, self.blend_config, self.config = stack, blend_config, config
        self.user_ids = np.sort(np.asarray(user_ids, dtype=np.int64))
        advertisers = world.advertisers.sort("advertiser_id")
        self.advertiser_ids = advertisers["advertiser_id"].to_numpy().astype(np.int64)
        self.is_active = advertisers["is_active"].to_numpy()
        self.is_roas = (advertisers["campaign_type"] == "ROAS").to_numpy()
        self.bid = advertisers["bid"].to_numpy()
        self.target_roas = advertisers["target_roas"].fill_null(1.0).to_numpy()
        self.budget = advertisers["daily_budget"].to_numpy() * config.budget_share
        self.items = world.items.select("item_id", "price", "brand_id", "category_id", "title").sort("item_id")
        self.item_ids = self.items["item_id"].to_numpy()
        self.slots = np.array([config.traffic.slots.get(surface, 0) for surface in schema.SURFACES], dtype=np.int64)
        source_names = [generator.source for generator in stack.generators]
        self.source_names = pl.Series("source", source_names, pl.String)
        self.ledger = FunnelLedger(source_names, self.advertiser_ids)
        self.spend_today = np.zeros(self.advertiser_ids.size)
        self.pass_rates = np.ones(self.advertiser_ids.size)
        self.totals = {name: np.zeros(self.user_ids.size) for name in USER_METRICS}
        self.pending = None
        self.impression_log: list[pl.DataFrame] = []
        self.conversion_log: list[pl.DataFrame] = []
        self.day_events: list[pl.DataFrame] = []
        self.advertiser_days: list[pl.DataFrame] = []
        if stack.nightly is not None:  # every market starts from the world's state, not another arm's
            stack.nightly.reset()
        for consumer in self._prediction_consumers():
            consumer.reset_predictions()
        self.counters = {"requests": 0, "batches": 0, "users_reinferred": 0, "overspend": 0.0,
                         "unattributed_conversions": 0}
        self.seconds: dict[str, float] = {}  # wall seconds per stack component

    # -- the request path -------------------------------------------------------------------
    def retrieve(self, requests: pl.DataFrame) -> Retrieved | None:
        """The steps of a batch that read no market state: coalescing, every source's candidates and
        blending. None for an empty batch.

        Generators and blending read only the requests and their own state, which changes between
        days (`update_predictions`, `reset_predictions`), so `simulate` runs this for the next batch
        of a day while the current one is ranked and auctioned. Nothing here writes the market.
        """
        if requests.height == 0:
            return None
        served_rows, representative = self._coalesce(requests)
        served = requests[served_rows]
        candidates = self._retrieve(served)
        started = time.perf_counter()
        rows, position = blend_rows(candidates["request_rank"], candidates["quota_source"], candidates["score"],
                                    candidates["item_id"], candidates["advertiser_id"], self.blend_config)
        blended = candidates.take(rows)
        blended["blend_position"] = position.astype(np.int32)
        self._time("blending", started)
        started = time.perf_counter()
        scorer_input = self._scorer_input(blended, served)
        prepared = self.stack.scorer.prepare(scorer_input) if hasattr(self.stack.scorer, "prepare") else None
        self._time("scorer, ahead", started)
        return Retrieved(requests, served, representative, candidates, blended, scorer_input, prepared)

    def serve(self, batch: Retrieved | None) -> None:
        """Run a retrieved batch (`retrieve`) through pacing, ranking, the auction and the user.

        The batch's rows stay numpy columns (`Columns`) between the steps; `request` indexes the
        batch's requests, `served` the coalesced requests the models see.
        """
        if batch is None:
            return
        requests, served, candidates, blended = batch.requests, batch.served, batch.candidates, batch.blended
        self.counters["requests"] += requests.height
        self.counters["batches"] += 1
        self._add_to_users(requests["user_id"].to_numpy(), "requests", np.ones(requests.height))
        copies = np.bincount(batch.representative, minlength=served.height).astype(np.float64)
        self.ledger.add("retrieved", candidates["source"], candidates["advertiser"], copies[candidates["served"]])
        self.ledger.add("blended", blended["source"], blended["advertiser"], copies[blended["served"]])
        can_pay = self.is_active & pacing.has_budget(self.spend_today, self.budget)
        paying = np.flatnonzero(can_pay[blended["advertiser"]])
        if paying.size == 0:
            return
        started = time.perf_counter()
        if paying.size < blended["item_id"].size:
            scorable, scorer_input = blended.take(paying), batch.scorer_input[paying]
        else:  # every advertiser can pay (most batches): no copy
            scorable, scorer_input = Columns(blended), batch.scorer_input
        scores = (self.stack.scorer.score(scorer_input) if batch.prepared is None
                  else self.stack.scorer.score(scorer_input, batch.prepared))
        self._time("scorer", started)
        scorable["ctcvr"] = scores["ctcvr"].cast(pl.Float64).to_numpy()
        scorable["vtcvr"] = scores["vtcvr"].cast(pl.Float64).to_numpy()
        served_ids = served["request_id"].to_numpy()
        ranked = self._rank(scorable, requests, np.searchsorted(np.sort(served_ids), served_ids[batch.representative]))
        self.ledger.add("ranked", ranked["source"], ranked["advertiser"])
        self._auction(ranked, requests)

    def _retrieve(self, served: pl.DataFrame) -> Columns:
        """Every source's candidates for the served requests; a source this arm switched off (quota 0)
        is not asked. `request_rank` orders the rows' requests by id, as blending does."""
        served_ids = served["request_id"].to_numpy()
        by_id = np.argsort(served_ids)
        parts = []
        for index, generator in enumerate(self.stack.generators):
            if self.blend_config.quotas.get(generator.source) == 0:
                continue
            started = time.perf_counter()
            frame = schema.validate(generator.generate(served), schema.CANDIDATES, f"candidates of {generator.source}")
            self._time(f"generator {generator.source}", started)
            parts.append(self._columns(frame, index, served_ids[by_id], by_id))
        return Columns.concat(parts) if parts else self._columns(schema.empty(schema.CANDIDATES), 0,
                                                                 served_ids[by_id], by_id)

    def _columns(self, candidates: pl.DataFrame, source: int, sorted_ids: np.ndarray, by_id: np.ndarray) -> Columns:
        """The candidates of the stack's `source`-th generator as columns. Raises ValueError for rows of
        another source, of a source without a quota, of requests not asked for or unknown advertisers."""
        name = self.stack.generators[source].source
        if name not in self.blend_config.quotas:
            raise ValueError(f"candidates come from source(s) ['{name}'] that have no quota; "
                             f"add them to blend.quotas (e.g. blend.quotas.{name}=50) or drop them")
        request_id, advertiser_id = candidates["request_id"].to_numpy(), candidates["advertiser_id"].to_numpy()
        request_rank = np.minimum(np.searchsorted(sorted_ids, request_id), max(sorted_ids.size - 1, 0))
        advertiser = np.minimum(np.searchsorted(self.advertiser_ids, advertiser_id), self.advertiser_ids.size - 1)
        if not ((candidates["source"] == name).all() and (sorted_ids[request_rank] == request_id).all()
                and (self.advertiser_ids[advertiser] == advertiser_id).all()):
            raise ValueError(f"candidates of {name} name another source, a request they were not asked for or "
                             f"an advertiser the world does not have")
        rows = np.ones(candidates.height, dtype=np.int64)
        return Columns(request_rank=request_rank, served=by_id[request_rank], item_id=candidates["item_id"].to_numpy(),
                       advertiser_id=advertiser_id, advertiser=advertiser, score=candidates["score"].to_numpy(),
                       source=rows * source, quota_source=rows * list(self.blend_config.quotas).index(name))

    def _scorer_input(self, scorable: Columns, served: pl.DataFrame) -> pl.DataFrame:
        """The scorer's table: CANDIDATES, `blend_position` and the columns of each row's request."""
        candidates = pl.DataFrame({
            "request_id": served["request_id"].to_numpy()[scorable["served"]], "item_id": scorable["item_id"],
            "advertiser_id": scorable["advertiser_id"], "source": self.source_names.gather(scorable["source"]),
            "score": scorable["score"], "blend_position": scorable["blend_position"]})
        return pl.concat([candidates, served.drop("request_id")[scorable["served"]]], how="horizontal")

    def _rank(self, scorable: Columns, requests: pl.DataFrame, representative_rank: np.ndarray) -> Columns:
        """Each request's candidates (its representative's) that pass pacing, by predicted conversion
        (ties: blending order), within the rank depth; requests by id. `representative_rank[r]` is the
        `request_rank` of the served request whose candidates request row r takes."""
        predicted = scorable["ctcvr"] + scorable["vtcvr"]
        # rows come by request in blending order, which the stable sort keeps among equal predictions
        order = np.lexsort((-predicted, scorable["request_rank"]))
        request_id = requests["request_id"].to_numpy()
        by_id = np.argsort(request_id)
        sorted_rank = scorable["request_rank"][order]
        starts = np.searchsorted(sorted_rank, representative_rank[by_id])
        counts = np.searchsorted(sorted_rank, representative_rank[by_id], side="right") - starts
        rows, request = order[ragged_ranges(starts, counts)], np.repeat(by_id, counts)  # one per request's candidate
        # each request's own pacing coin: an advertiser takes part in an auction with its pass rate
        pass_rate = self.pass_rates[scorable["advertiser"][rows]]
        passes = np.flatnonzero(uniforms(self.config.seed, "pacing", request_id[request],
                                         self.advertiser_ids[scorable["advertiser"][rows]]) < pass_rate)
        rows, request, pass_rate = rows[passes], request[passes], pass_rate[passes]
        kept = np.flatnonzero(is_within_rank_depth(request_id[request], scorable["advertiser_id"][rows],
                                                   self.config.auction.rank_depth))
        ranked = scorable.take(rows[kept])
        ranked.update(p_conversion_predicted=predicted[rows[kept]], request=request[kept],
                      request_id=request_id[request[kept]], pass_rate=pass_rate[kept])
        ranked["price"] = self.items["price"].to_numpy()[np.searchsorted(self.item_ids, ranked["item_id"])]
        return ranked

    def _auction(self, ranked: Columns, requests: pl.DataFrame) -> None:
        config, seed = self.config, self.config.seed
        advertiser = ranked["advertiser"]
        values = auction.ecpm(self.is_roas[advertiser], self.bid[advertiser], self.target_roas[advertiser],
                              ranked["price"], ranked["p_conversion_predicted"])
        slots = self.slots[requests["surface"].to_physical().to_numpy()[ranked["request"]]]
        outcome = auction.run_auction(ranked["request_id"], ranked["advertiser_id"], values, slots,
                                      config.auction.reserve_ecpm, config.auction.max_slots_per_advertiser)
        ranked.update(position=outcome.position.astype(np.int16), price_paid=outcome.price, ecpm=values)
        winners = ranked.take(np.flatnonzero(outcome.is_winner))
        self.ledger.add("won_auction", winners["source"], winners["advertiser"])
        view_probability = config.feedback.view_decay ** winners["position"]
        is_seen = uniforms(seed, "view", winners["request_id"], winners["item_id"]) < view_probability
        # the logging propensity of an impression given its ranking: passing pacing, then being seen
        winners["propensity"] = winners["pass_rate"] * view_probability
        shown = winners.take(np.flatnonzero(is_seen))
        self.ledger.add("impressed", shown["source"], shown["advertiser"])
        if shown["request"].size == 0:
            return
        shown["user_id"] = requests["user_id"].to_numpy()[shown["request"]]
        self._charge(shown)
        self._respond(shown, requests)

    def _charge(self, shown: Columns) -> None:
        price = shown["price_paid"]
        before = self.spend_today.copy()
        np.add.at(self.spend_today, shown["advertiser"], price)
        self.counters["overspend"] += float(
            (np.maximum(self.spend_today - self.budget, 0) - np.maximum(before - self.budget, 0)).sum())
        self._add_to_users(shown["user_id"], "impressions", np.ones(price.size))
        self._add_to_users(shown["user_id"], "spend", price)

    def _respond(self, shown: Columns, requests: pl.DataFrame) -> None:
        """Clicks from the true (position-biased) rates, dwell, and the conversions they cause."""
        seed = self.config.seed
        request_id, item_id = shown["request_id"], shown["item_id"]
        started = time.perf_counter()
        rates = self.stack.response.true_rates(
            shown["user_id"], item_id, requests["surface"].to_physical().to_numpy()[shown["request"]],
            shown["position"], requests["day"].to_numpy()[shown["request"]].astype("datetime64[D]"))
        self._time("true response", started)
        is_click = uniforms(seed, "click", request_id, item_id) < rates.p_click
        dwell = np.where(is_click, np.exp(rates.dwell_log_mean + rates.dwell_log_sd
                                          * normals(seed, "dwell", request_id, item_id)), 0.0)
        clicked = np.flatnonzero(is_click)
        self.ledger.add("clicked", shown["source"][clicked], shown["advertiser"][clicked])
        self._add_to_users(shown["user_id"][clicked], "clicks", np.ones(clicked.size))
        gathered = pl.DataFrame({"ts": requests["ts"], "surface": requests["surface"]})[shown["request"]]
        columns = {
            **{name: shown[name] for name in ("request_id", "user_id", "item_id", "advertiser_id", "price_paid",
                                              "ecpm", "ctcvr", "vtcvr", "propensity", "price")},
            "ts": gathered["ts"], "surface": gathered["surface"], "position": shown["position"],
            "category_id": self.items["category_id"].to_numpy()[np.searchsorted(self.item_ids, item_id)],
            "source": self.source_names.gather(shown["source"]), "is_click": is_click,
            "dwell_seconds": dwell.astype(np.float32), "p_click": rates.p_click, "p_conversion": rates.p_conversion,
            "p_view_conversion": rates.p_view_conversion}
        self.impression_log.append(pl.DataFrame({name: columns[name] for name in IMPRESSION_LOG}))
        self.day_events.append(pl.DataFrame({
            "user_id": shown["user_id"][clicked], "ts": gathered["ts"].gather(clicked),
            "item_id": item_id[clicked], "advertiser_id": shown["advertiser_id"][clicked],
            "kind": pl.Series(["engagement"]).new_from_index(0, clicked.size),
            "value": pl.Series([None], dtype=pl.Float64).new_from_index(0, clicked.size)}))
        conversions = draw_conversions(pl.DataFrame({name: columns[name] for name in CONVERSION_INPUT}),
                                       self.config.feedback, seed)
        self.pending = conversions if self.pending is None else pl.concat([self.pending, conversions])

    def _coalesce(self, requests: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the requests to run through the models and, per request, its representative's
        place among them.

        With `coalesce_requests`, requests of one user on one day with the same surface and context
        share retrieval and ranking (exact while the models read the user's history by day); the first
        of them represents them.
        """
        rows = np.arange(requests.height)
        if not self.config.coalesce_requests:
            return rows, rows
        signature = [column.to_numpy() for column in requests.select(
            pl.col(name).to_physical().fill_null(-1) for name in ("context_item_id", "query_category_id", "surface",
                                                                  "day", "user_id"))]
        first = first_rows(*signature)  # each group's earliest request represents it
        served_rows = np.flatnonzero(first == rows)
        return served_rows, np.searchsorted(served_rows, first)

    def _time(self, component: str, started: float) -> None:
        self.seconds[component] = self.seconds.get(component, 0.0) + time.perf_counter() - started

    def _add_to_users(self, user_ids: np.ndarray, metric: str, amounts: np.ndarray) -> None:
        np.add.at(self.totals[metric], np.searchsorted(self.user_ids, user_ids), amounts)

    # -- other processes' steps ------------------------------------------------------------
    def deliver_conversions(self, now: np.datetime64) -> None:
        """Conversions whose arrival time has come: attribute them (or count them unattributed)."""
        if self.pending is None or self.pending.height == 0:
            return
        has_arrived = self.pending["arrival_ts"].cast(pl.Int64).to_numpy() <= np.datetime64(now, "us").astype(np.int64)
        if not has_arrived.any():
            return
        arrived = self.pending.filter(pl.Series(has_arrived))
        self.pending = self.pending.filter(pl.Series(~has_arrived))
        self.conversion_log.append(arrived)
        attributed = arrived.filter(pl.col("is_attributed"))
        self.counters["unattributed_conversions"] += arrived.height - attributed.height
        self.ledger.record("converted", attributed)
        users = attributed["user_id"].to_numpy()
        self._add_to_users(users, "conversions", np.ones(attributed.height))
        self._add_to_users(users, "click_conversions", attributed["is_click_through"].to_numpy() * 1.0)
        self._add_to_users(users, "conversion_value", attributed["value"].to_numpy())
        self.day_events.append(attributed.select("user_id", pl.col("arrival_ts").alias("ts"), "item_id",
                                                 "advertiser_id", pl.lit("attributed_conversion").alias("kind"),
                                                 "value"))

    def pace(self, day_fraction: float) -> None:
        self.pass_rates = pacing.next_pass_rates(self.pass_rates, self.spend_today, self.budget, day_fraction,
                                                 self.config.pacing)

    def midnight(self, day: date) -> None:
        """Close the day: record spend, run the nightly LLM job on new activity, reset budgets."""
        self.advertiser_days.append(pl.DataFrame({
            "day": [day] * self.advertiser_ids.size, "advertiser_id": self.advertiser_ids,
            "spend": self.spend_today.copy(), "budget": self.budget}))
        new_events = self._new_events()
        if self.stack.nightly is not None:
            started = time.perf_counter()
            fresh = schema.validate(self.stack.nightly(day, new_events), schema.PREDICTIONS, "nightly predictions")
            self.counters["users_reinferred"] += fresh["user_id"].n_unique()
            for consumer in self._prediction_consumers():
                consumer.update_predictions(fresh)
            self._time("nightly job", started)
        self.day_events = []
        self.spend_today = np.zeros_like(self.spend_today)
        self.pass_rates = np.ones_like(self.pass_rates)

    def _prediction_consumers(self) -> list[PredictionConsumer]:
        """The generators and the scorer that read advertiser predictions (and take fresh ones nightly)."""
        return [model for model in (*self.stack.generators, self.stack.scorer) if hasattr(model, "update_predictions")]

    def _new_events(self) -> pl.DataFrame:
        if not self.day_events:
            return schema.empty(schema.EVENTS)
        events = (pl.concat(self.day_events).sort("ts")
                  .join(self.items.select("item_id", "brand_id", "category_id", "title"), on="item_id", how="left"))
        is_conversion = pl.col("kind") == "attributed_conversion"
        return schema.conform(events.with_columns(
            pl.int_range(pl.len()).alias("event_id"), pl.col("title").alias("text"),
            pl.when(is_conversion).then(pl.lit("checkout")).alias("conversion_type"),
            is_conversion.alias("is_high_priority"),
        ).select(list(schema.EVENTS)), schema.EVENTS, "new_events")

    def result(self, wall_seconds: float, days: int) -> SimulationResult:
        impressions = (pl.concat(self.impression_log) if self.impression_log else pl.DataFrame())
        conversions = pl.concat(self.conversion_log) if self.conversion_log else pl.DataFrame()
        if impressions.height:
            flags = (conversions.filter(pl.col("is_attributed"))
                     .group_by("request_id", "item_id")
                     .agg(pl.col("is_click_through").any().alias("is_ctcvr"),
                          (~pl.col("is_click_through")).any().alias("is_vtcvr"))
                     if conversions.height else pl.DataFrame(schema={"request_id": pl.Int64, "item_id": pl.Int32,
                                                                     "is_ctcvr": pl.Boolean, "is_vtcvr": pl.Boolean}))
            impressions = schema.validate(
                impressions.join(flags, on=["request_id", "item_id"], how="left")
                .with_columns(pl.col("is_ctcvr").fill_null(False), pl.col("is_vtcvr").fill_null(False)),
                schema.IMPRESSIONS, "simulated impressions")
        user_metrics = pl.DataFrame({"user_id": self.user_ids, **self.totals})
        summary = {**self.counters, "users": int(self.user_ids.size), "days": days,
                   "impressions": int(impressions.height),
                   "censored_conversions": int(self.pending.height) if self.pending is not None else 0,
                   "wall_seconds": wall_seconds, "component_seconds": dict(self.seconds),
                   "requests_per_second": self.counters["requests"] / max(wall_seconds, 1e-9)}
        return SimulationResult(impressions=impressions, conversions=conversions, user_metrics=user_metrics,
                                advertiser_days=pl.concat(self.advertiser_days), ledger=self.ledger, summary=summary)


def simulate(world: World, stack: Stack, blend_config: BlendConfig, user_ids: np.ndarray,
             config: SimulationConfig, progress: bool = False, tables: TrafficTables | None = None) -> SimulationResult:
    """Simulate `config.days` days of the market for `user_ids` under `blend_config`."""
    tables = tables if tables is not None else traffic_tables(world)
    market = Market(world, stack, blend_config, user_ids, config)
    start = simulation_start(world)
    origin = np.datetime64(day_start(start, 0).replace(tzinfo=None), "us")
    env = simpy.Environment()
    horizon = config.days * SECONDS_PER_DAY
    bar = tqdm(total=config.days, desc="simulated days", unit="day", disable=not progress)

    def clock(seconds: float) -> np.datetime64:
        return origin + np.timedelta64(int(seconds * 1e6), "us")

    def traffic():
        for day_index in range(config.days):
            requests = day_requests(tables, market.user_ids, start, day_index, config.traffic, config.seed)
            offsets = ((requests["ts"].dt.replace_time_zone(None).to_numpy() - origin)
                       / np.timedelta64(1, "s")).astype(np.float64)
            day_end, ticks = (day_index + 1) * SECONDS_PER_DAY, [day_index * SECONDS_PER_DAY]
            while ticks[-1] < day_end:
                ticks.append(min(ticks[-1] + config.batch_seconds, day_end))
            batches = [requests[np.flatnonzero((offsets >= window_start) & (offsets < tick))]
                       for window_start, tick in zip(ticks, ticks[1:])]
            # the day's first batch is retrieved at its tick, after midnight updated the generators; the
            # next LOOKAHEAD_BATCHES while earlier ones are ranked and auctioned (`Market.retrieve` reads
            # no market state), in order on one thread
            ahead: dict[int, Future] = {}
            for index, tick in enumerate(ticks[1:]):
                yield env.timeout(tick - env.now)
                market.deliver_conversions(clock(env.now))
                batch = ahead.pop(index).result() if index in ahead else market.retrieve(batches[index])
                for later in range(index + 1, min(index + 1 + LOOKAHEAD_BATCHES, len(batches))):
                    if later not in ahead:
                        ahead[later] = retriever.submit(market.retrieve, batches[later])
                market.serve(batch)
            bar.update(1)

    def pacer():
        while env.now < horizon:
            yield env.timeout(config.pacing.interval_seconds)
            market.pace((env.now % SECONDS_PER_DAY) / SECONDS_PER_DAY or 1.0)

    def nights():
        for day_index in range(config.days):
            yield env.timeout((day_index + 1) * SECONDS_PER_DAY + _NIGHTLY_EPSILON - env.now)
            market.midnight(start + timedelta(days=day_index))

    def conversion_tail():
        yield env.timeout(horizon + config.conversion_tail_days * SECONDS_PER_DAY)
        market.deliver_conversions(clock(env.now))

    started = time.perf_counter()
    for process in (traffic(), pacer(), nights(), conversion_tail()):
        env.process(process)
    with (threadpool_limits(limits=SIMULATION_THREADS),
          ThreadPoolExecutor(max_workers=1, initializer=_lookahead_thread) as retriever):
        env.run()
    bar.close()
    return market.result(time.perf_counter() - started, config.days)

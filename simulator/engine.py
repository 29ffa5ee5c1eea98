"""The SimPy market (paper 4.5): simulated days of requests through retrieval, blending, ranking, auction.

SimPy owns time and order - batch ticks, pacing updates, conversion arrivals, the nightly LLM
job - and each tick hands a whole batch of requests to polars/numpy/torch. One `simulate` call
is one market (an arm) over its users; every random draw is keyed (CRN, simulator/random_streams).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl
import simpy
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from blending.blend import BlendConfig, blend
from blending.funnel import FunnelLedger
from simulator import auction, pacing
from simulator.attribution import draw_conversions
from simulator.config import SimulationConfig
from simulator.protocols import CandidateGenerator, NightlyJob, PredictionConsumer, ResponseModel, Scorer
from simulator.random_streams import normals, uniforms
from simulator.traffic import TrafficTables, day_requests, day_start, traffic_tables
from synthetic_data import schema
from synthetic_data.schema import World

SECONDS_PER_DAY = 86400.0
USER_METRICS = ("requests", "impressions", "clicks", "spend", "conversions", "click_conversions",
                "conversion_value")
_NIGHTLY_EPSILON = 1e-3  # midnight runs just after the day's last batch tick
# threads per numerical op (torch, faiss, BLAS) while a market runs: its batches are a few thousand
# rows, too small to gain much from a second thread, and when another process shares the cores a
# thread that waits for a descheduled partner at every op made the trained stack 3x slower
SIMULATION_THREADS = 1


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
    is_advertisers_first = pl.int_range(pl.len()).over("request_id", "advertiser_id") == 0
    return (ranked.with_columns(is_advertisers_first.cum_sum().over("request_id").alias("_advertisers_so_far"))
            .filter(pl.col("_advertisers_so_far").first().over("request_id", "advertiser_id") <= rank_depth)
            .drop("_advertisers_so_far"))


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
        self.items = world.items.select("item_id", "price", "brand_id", "category_id", "title")
        source_names = [generator.source for generator in stack.generators]
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
    def serve(self, requests: pl.DataFrame) -> None:
        """Run a batch of requests through retrieval, blending, ranking, auction and the user."""
        if requests.height == 0:
            return
        seed = self.config.seed
        self.counters["requests"] += requests.height
        self.counters["batches"] += 1
        self._add_to_users(requests["user_id"], "requests", np.ones(requests.height))
        served, copies = self._coalesce(requests)
        frames = []
        for generator in self.stack.generators:
            if self.blend_config.quotas.get(generator.source) == 0:
                continue  # a source this arm switched off (quota 0) is not asked for candidates
            started = time.perf_counter()
            frames.append(schema.validate(generator.generate(served), schema.CANDIDATES,
                                          f"candidates of {generator.source}").select(list(schema.CANDIDATES)))
            self._time(f"generator {generator.source}", started)
        candidates = pl.concat(frames) if frames else schema.empty(schema.CANDIDATES)
        self.ledger.record("retrieved", candidates, self._copies_of(candidates, copies))
        started = time.perf_counter()
        blended = blend(candidates, self.blend_config)
        self._time("blending", started)
        self.ledger.record("blended", blended, self._copies_of(blended, copies))

        advertiser = np.searchsorted(self.advertiser_ids, blended["advertiser_id"].to_numpy())
        can_pay = self.is_active[advertiser] & pacing.has_budget(self.spend_today, self.budget)[advertiser]
        scorable = blended.filter(pl.Series(can_pay)).join(served, on="request_id", how="left")
        if scorable.height == 0:
            return
        started = time.perf_counter()
        scores = self.stack.scorer.score(scorable)
        self._time("scorer", started)
        # every coalesced request gets the candidates and scores of its representative, then its own
        # pacing coin (an advertiser takes part in an auction with its pass rate)
        eligible = (scorable.select(pl.col("request_id").alias("representative_id"), "item_id", "advertiser_id",
                                    "source", "score", "blend_position")
                    .with_columns(ctcvr=scores["ctcvr"].cast(pl.Float64), vtcvr=scores["vtcvr"].cast(pl.Float64))
                    .join(copies, on="representative_id").join(requests, on="request_id", how="left"))
        advertiser = np.searchsorted(self.advertiser_ids, eligible["advertiser_id"].to_numpy())
        passes = uniforms(seed, "pacing", eligible["request_id"].to_numpy(), self.advertiser_ids[advertiser])
        eligible = (eligible.with_columns(pl.Series("pass_rate", self.pass_rates[advertiser]))
                    .filter(pl.Series(passes < self.pass_rates[advertiser])))
        by_prediction = (eligible.with_columns((pl.col("ctcvr") + pl.col("vtcvr")).alias("p_conversion_predicted"))
                         .sort(["request_id", "p_conversion_predicted", "blend_position", "item_id"],
                               descending=[False, True, False, False]))  # ties: blending order, then item
        ranked = (top_advertisers(by_prediction, self.config.auction.rank_depth)
                  .join(self.items.select("item_id", "price"), on="item_id", how="left"))
        self.ledger.record("ranked", ranked)
        self._auction(ranked)

    def _auction(self, ranked: pl.DataFrame) -> None:
        config, seed = self.config, self.config.seed
        advertiser = np.searchsorted(self.advertiser_ids, ranked["advertiser_id"].to_numpy())
        values = auction.ecpm(self.is_roas[advertiser], self.bid[advertiser], self.target_roas[advertiser],
                              ranked["price"].to_numpy(), ranked["p_conversion_predicted"].to_numpy())
        slots = ranked["surface"].cast(pl.String).replace_strict(config.traffic.slots, return_dtype=pl.Int64).to_numpy()
        outcome = auction.run_auction(ranked["request_id"].to_numpy(), ranked["advertiser_id"].to_numpy(), values,
                                      slots, config.auction.reserve_ecpm, config.auction.max_slots_per_advertiser)
        winners = (ranked.with_columns(pl.Series("position", outcome.position, pl.Int16),
                                       pl.Series("price_paid", outcome.price), pl.Series("ecpm", values))
                   .filter(pl.Series(outcome.is_winner)))
        self.ledger.record("won_auction", winners)
        request_id, item_id = winners["request_id"].to_numpy(), winners["item_id"].to_numpy()
        position = winners["position"].to_numpy()
        view_probability = config.feedback.view_decay ** position
        is_seen = uniforms(seed, "view", request_id, item_id) < view_probability
        # the logging propensity of an impression given its ranking: passing pacing, then being seen
        shown = (winners.with_columns((pl.col("pass_rate") * pl.Series(view_probability)).alias("propensity"))
                 .filter(pl.Series(is_seen)))
        self.ledger.record("impressed", shown)
        if shown.height == 0:
            return
        self._charge(shown)
        self._respond(shown)

    def _charge(self, shown: pl.DataFrame) -> None:
        advertiser = np.searchsorted(self.advertiser_ids, shown["advertiser_id"].to_numpy())
        price = shown["price_paid"].to_numpy()
        before = self.spend_today.copy()
        np.add.at(self.spend_today, advertiser, price)
        self.counters["overspend"] += float(
            (np.maximum(self.spend_today - self.budget, 0) - np.maximum(before - self.budget, 0)).sum())
        self._add_to_users(shown["user_id"], "impressions", np.ones(shown.height))
        self._add_to_users(shown["user_id"], "spend", price)

    def _respond(self, shown: pl.DataFrame) -> None:
        """Clicks from the true (position-biased) rates, dwell, and the conversions they cause."""
        seed = self.config.seed
        request_id, item_id = shown["request_id"].to_numpy(), shown["item_id"].to_numpy()
        started = time.perf_counter()
        rates = self.stack.response.true_rates(
            shown["user_id"].to_numpy(), item_id, shown["surface"].to_physical().to_numpy(),
            shown["position"].to_numpy(), shown["day"].to_numpy().astype("datetime64[D]"))
        self._time("true response", started)
        is_click = uniforms(seed, "click", request_id, item_id) < rates.p_click
        dwell = np.where(is_click, np.exp(rates.dwell_log_mean + rates.dwell_log_sd
                                          * normals(seed, "dwell", request_id, item_id)), 0.0)
        shown = shown.with_columns(pl.Series("is_click", is_click), pl.Series("dwell_seconds", dwell, pl.Float32),
                                   pl.Series("p_click", rates.p_click), pl.Series("p_conversion", rates.p_conversion),
                                   pl.Series("p_view_conversion", rates.p_view_conversion))
        clicked = shown.filter(pl.col("is_click"))
        self.ledger.record("clicked", clicked)
        self._add_to_users(clicked["user_id"], "clicks", np.ones(clicked.height))
        self.impression_log.append(shown.join(self.items.select("item_id", "category_id"), on="item_id", how="left")
                                   .select("request_id", "user_id", "ts", "surface", "position", "item_id",
                                           "advertiser_id", "category_id", "source", "is_click", "dwell_seconds",
                                           "propensity", "price_paid", "ecpm", "ctcvr", "vtcvr", "p_click",
                                           "p_conversion", "p_view_conversion"))
        self.day_events.append(clicked.select("user_id", "ts", "item_id", "advertiser_id",
                                              pl.lit("engagement").alias("kind"), pl.lit(None, pl.Float64).alias("value")))
        conversions = draw_conversions(shown.select("request_id", "user_id", "ts", "item_id", "advertiser_id", "source",
                                                    "is_click", "p_conversion", "p_view_conversion", "price"),
                                        self.config.feedback, seed)
        self.pending = conversions if self.pending is None else pl.concat([self.pending, conversions])

    def _coalesce(self, requests: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The requests to run through the models and, per request, its representative.

        With `coalesce_requests`, requests of one user on one day with the same surface and context
        share retrieval and ranking (exact while the models read the user's history by day).
        """
        if not self.config.coalesce_requests:
            return requests, requests.select("request_id", pl.col("request_id").alias("representative_id"))
        signature = ["user_id", "day", "surface", pl.col("query_category_id").fill_null(-1),
                     pl.col("context_item_id").fill_null(-1)]
        keyed = requests.with_columns(pl.col("request_id").first().over(signature).alias("representative_id"))
        served = requests.filter(pl.col("request_id") == keyed["representative_id"])
        return served, keyed.select("request_id", "representative_id")

    @staticmethod
    def _copies_of(rows: pl.DataFrame, copies: pl.DataFrame) -> np.ndarray:
        """How many requests each row (of a representative request) stands for."""
        multiplicity = copies.group_by("representative_id").len()
        return (rows.select(pl.col("request_id").alias("representative_id"))
                .join(multiplicity, on="representative_id", how="left", maintain_order="left")["len"]
                .to_numpy().astype(np.float64))

    def _time(self, component: str, started: float) -> None:
        self.seconds[component] = self.seconds.get(component, 0.0) + time.perf_counter() - started

    def _add_to_users(self, user_ids: pl.Series, metric: str, amounts: np.ndarray) -> None:
        np.add.at(self.totals[metric], np.searchsorted(self.user_ids, user_ids.to_numpy()), amounts)

    # -- other processes' steps ------------------------------------------------------------
    def deliver_conversions(self, now: np.datetime64) -> None:
        """Conversions whose arrival time has come: attribute them (or count them unattributed)."""
        if self.pending is None or self.pending.height == 0:
            return
        now_literal = pl.lit(now).cast(schema.UTC_TS)
        arrived = self.pending.filter(pl.col("arrival_ts") <= now_literal)
        self.pending = self.pending.filter(pl.col("arrival_ts") > now_literal)
        if arrived.height == 0:
            return
        self.conversion_log.append(arrived)
        attributed = arrived.filter(pl.col("is_attributed"))
        self.counters["unattributed_conversions"] += arrived.height - attributed.height
        self.ledger.record("converted", attributed)
        self._add_to_users(attributed["user_id"], "conversions", np.ones(attributed.height))
        self._add_to_users(attributed["user_id"], "click_conversions", attributed["is_click_through"].to_numpy() * 1.0)
        self._add_to_users(attributed["user_id"], "conversion_value", attributed["value"].to_numpy())
        self.day_events.append(attributed.select("user_id", pl.col("arrival_ts").alias("ts"), "item_id", "advertiser_id",
                                                 pl.lit("attributed_conversion").alias("kind"), "value"))

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
            day_end = (day_index + 1) * SECONDS_PER_DAY
            tick = day_index * SECONDS_PER_DAY
            while tick < day_end:
                window_start, tick = tick, min(tick + config.batch_seconds, day_end)
                yield env.timeout(tick - env.now)
                market.deliver_conversions(clock(env.now))
                batch = np.flatnonzero((offsets >= window_start) & (offsets < tick))
                market.serve(requests[batch] if batch.size else requests.clear())
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
    with threadpool_limits(limits=SIMULATION_THREADS):
        env.run()
    bar.close()
    return market.result(time.perf_counter() - started, config.days)

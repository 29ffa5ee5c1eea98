"""Assembles the models a simulated market runs (DESIGN: `simulator/` is the only package that wires
every stage): the world's true response, candidate generators, the scorer, the nightly job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from simulator.baselines import AdvertiserFilterGenerator, HistoryScorer, PopularityGenerator, history_predictions
from simulator.engine import Stack
from simulator.nightly import LlmPredictor, NightlyRefresh, history_predictor
from simulator.protocols import NightlyJob
from simulator.world_response import WorldResponse
from synthetic_data import schema
from synthetic_data.config import WorldConfig
from synthetic_data.schema import World

if TYPE_CHECKING:
    from ranking.features import FeatureTable

BASELINE_SOURCES = ("main", "llm")  # main: category popularity; llm: items of predicted advertisers


def nightly_job(kind: str, world: World, run: Path | None = None, llm_max_users: int = 100) -> NightlyJob | None:
    """The nightly re-inference: none, the history baseline, or the run's LLM (`llm`: its GRPO model's top
    20 of the allowed names; `llm:METHOD`: any `adsim llm` method, e.g. `llm:chosen`) for `llm_max_users`
    of each day's active users, each over world + simulated events."""
    if kind == "none":
        return None
    if kind == "history":
        return NightlyRefresh(history_predictor(), world.events)
    if kind == "llm" or kind.startswith("llm:"):
        if run is None:
            raise ValueError("nightly job 'llm' needs the run folder that holds the trained LLM")
        method = kind.partition(":")[2]  # empty for plain `llm`: the predictor's default method
        predictor = LlmPredictor(run, world, max_users=llm_max_users, **({"method": method} if method else {}))
        return NightlyRefresh(predictor, world.events)
    raise ValueError(f"nightly job {kind!r} is not available; use 'none', 'history', 'llm' or 'llm:METHOD'")


def load_predictions(path: Path | None, world: World) -> tuple[pl.DataFrame, str]:
    """A PREDICTIONS table from `path`, or the history baseline (each user's most-converted advertisers)."""
    if path is None:
        return history_predictions(world.events), "history baseline (most-converted advertisers)"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `adsim llm predict` first or drop --predictions")
    return schema.validate(pl.read_parquet(path), schema.PREDICTIONS, str(path)), str(path)


def served_users(predictions: pl.DataFrame) -> np.ndarray:
    """The sorted ids of the users a PREDICTIONS table lists advertisers for: the market's served slice."""
    return np.sort(predictions.filter(pl.col("advertiser_id").is_not_null())["user_id"].unique().to_numpy())


def baseline_stack(world: World, world_config: WorldConfig, predictions: pl.DataFrame,
                   nightly: NightlyJob | None = None) -> Stack:
    """The model-free stack: popularity + predicted-advertiser generators, history scorer, true response."""
    return Stack(generators=(PopularityGenerator(world, source=BASELINE_SOURCES[0]),
                             AdvertiserFilterGenerator(world, predictions, source=BASELINE_SOURCES[1])),
                 scorer=HistoryScorer(world), response=WorldResponse.from_world(world, world_config), nightly=nightly,
                 served_users=served_users(predictions))


TRAINED_SOURCES = ("two_tower", "popularity", "llm_advertiser")  # main, cold-start, LLM generator


def trained_arms(llm_quota: int = 25) -> list[dict]:
    """Default arms for the trained stack (config dicts): LLM generator off versus on at `llm_quota`."""
    main = {TRAINED_SOURCES[0]: 60, TRAINED_SOURCES[1]: 10}
    return [{"name": name, "blend": {"quotas": {**main, TRAINED_SOURCES[2]: quota}, "max_candidates": 60}}
            for name, quota in (("control", 0), ("llm_generator", llm_quota))]


def largest_quotas(arms) -> dict[str, int]:
    """Per source, the largest L0 quota any arm gives it (what the generators must retrieve)."""
    largest: dict[str, int] = {}
    for arm in arms:
        for source, quota in arm.blend.quotas.items():
            largest[source] = max(largest.get(source, 0), quota)
    return largest


class PredictionFeed:
    """Gives retrieval's LLM-advertiser generator nightly predictions (`PredictionConsumer`): the new
    rows are anchored at the day that ended, so the generator serves them from the next day."""

    def __init__(self, generator):
        self.generator = generator
        self.source = generator.source
        self.initial_predictions = generator.predictions

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        return self.generator.generate(requests)

    def update_predictions(self, predictions: pl.DataFrame) -> None:
        limit = self.generator.config.max_predicted_advertisers
        self.generator.predictions = pl.concat([self.generator.predictions,
                                                predictions.filter(pl.col("rank") <= limit)
                                                .select(self.generator.predictions.columns)])

    def reset_predictions(self) -> None:
        self.generator.predictions = self.initial_predictions


class RankerScorer:
    """`Scorer` over the trained ranking models (ranking/scoring.py): calibrated p_ctcvr, p_vtcvr.
    A `PredictionConsumer`: nightly predictions reach the ranker's LLM features from the next day.

    A candidate's scores are kept until its day ends (or the predictions change): the ranker reads
    the history by day and scores at the top slot, so a user's candidate on a surface scores the same
    all day, and about half of a day's candidate rows repeat an earlier one. The models (ctcvr, vtcvr)
    score one after the other on the market's thread, while the market's lookahead thread retrieves
    and featurises the next batches (`prepare`) on the other core.
    """

    KEYS = ("user_id", "day", "surface", "item_id")

    def __init__(self, ranker):
        self.ranker = ranker
        self._forget()

    def _forget(self) -> None:
        self.kept_: dict[int, ScoreTable] = {}  # per day: (user, surface, item) -> ctcvr, vtcvr
        self.seen_: dict[int, ScoreTable] = {}  # per day: the keys `prepare` featurised (a set: no values)

    def update_predictions(self, predictions: pl.DataFrame) -> None:
        self.ranker.update_predictions(predictions)
        self._forget()

    def reset_predictions(self) -> None:
        self.ranker.reset_predictions()
        self._forget()

    @property
    def scored_(self) -> pl.DataFrame:
        """The kept scores as a table: `KEYS`, ctcvr, vtcvr."""
        kept = [(day, *table.items()) for day, table in self.kept_.items()]
        keys = np.concatenate([np.zeros(0, np.int64), *(keys for _, keys, _ in kept)])
        scores = np.concatenate([np.zeros((0, 2)), *(scores for _, _, scores in kept)])
        days = np.concatenate([np.zeros(0, np.int32), *(np.full(keys.size, day, np.int32) for day, keys, _ in kept)])
        return pl.DataFrame({"user_id": keys >> 33, "day": pl.Series(days).cast(pl.Date),
                             "surface": pl.Series(schema.SURFACES, dtype=schema.Surface).gather((keys >> 31) & 3),
                             "item_id": (keys & (2**31 - 1)).astype(np.int32), "ctcvr": scores[:, 0],
                             "vtcvr": scores[:, 1]})

    def prepare(self, candidates: pl.DataFrame) -> PreparedFeatures | None:
        """The features of the candidates whose (user, surface, item) it has not seen today, for `score`.

        Called on the market's lookahead thread with a batch's blended candidates before the current
        batch's auction (`Market.retrieve`): features read only the day's history and lists, not the
        market, so the rows `score` will meet for the first time are featurised ahead. A key seen
        today is either scored already or belonged to an advertiser out of budget (and is featurised
        by `score` if it ever comes back). The record of seen keys is this thread's alone.
        """
        if candidates.height == 0:
            return None
        day, key = _score_day(candidates), _score_key(candidates)
        first_seen = []
        for seen, _, _, _, first, _ in _keys_by_day(self.seen_, day, key, lambda: ScoreTable(width=0)):
            seen.add(key[first], np.zeros((first.size, 0)))
            first_seen.append(first)
        rows = np.sort(np.concatenate(first_seen))
        return PreparedFeatures(day[rows], key[rows], self.ranker.featurise(_scoring_rows(candidates, rows)))

    def score(self, candidates: pl.DataFrame, prepared: PreparedFeatures | None = None) -> pl.DataFrame:
        """Scores of `candidates` (rows in order): kept ones from today's table, new ones from the
        models, in one call, with the features `prepare` made where it has them all."""
        if candidates.height == 0:
            return pl.DataFrame(schema={"ctcvr": pl.Float64, "vtcvr": pl.Float64})
        day, key = _score_day(candidates), _score_key(candidates)
        scores = np.empty((key.size, 2))
        unscored = []  # per day: (its table, rows of keys not kept, the first row of each new key, each row's key)
        for table, kept_rows, kept_scores, new_rows, first, inverse in _keys_by_day(
                self.kept_, day, key, lambda: ScoreTable(dtype=np.float32)):
            scores[kept_rows] = kept_scores
            unscored.append((table, new_rows, first, inverse))
        first_rows = np.sort(np.concatenate([first for _, _, first, _ in unscored]))
        if first_rows.size:  # scored in one call, in the rows' order
            features = prepared.table_of(day[first_rows], key[first_rows]) if prepared is not None else None
            if features is None:
                features = self.ranker.featurise(_scoring_rows(candidates, first_rows))
            fresh = self.ranker.table_probabilities(features)
            fresh_scores = np.column_stack([fresh["ctcvr"], fresh["vtcvr"]]).astype(np.float32)  # as `Ranker.score`
            for table, new_rows, first, inverse in unscored:
                new_scores = fresh_scores[np.searchsorted(first_rows, first)]
                scores[new_rows] = new_scores[inverse]
                table.add(key[first], new_scores)
        return pl.DataFrame({"ctcvr": scores[:, 0], "vtcvr": scores[:, 1]})


@dataclass(frozen=True)
class PreparedFeatures:
    """Features made ahead by `RankerScorer.prepare`: one row per (day, key)."""

    day: np.ndarray  # [rows] days since the epoch
    key: np.ndarray  # [rows] `_score_key`
    table: FeatureTable

    def table_of(self, day: np.ndarray, key: np.ndarray) -> FeatureTable | None:
        """The feature rows of these (day, key) pairs, in their order; None if any is missing."""
        index = np.empty(key.size, dtype=np.int64)
        for today in np.unique(day):
            held = np.flatnonzero(self.day == today)
            held = held[np.argsort(self.key[held])]
            wanted = np.flatnonzero(day == today)
            at = np.minimum(np.searchsorted(self.key[held], key[wanted]), held.size - 1)
            if held.size == 0 or not (self.key[held[at]] == key[wanted]).all():
                return None
            index[wanted] = held[at]
        return self.table.rows(index)


class ScoreTable:
    """A hash table (open addressing, linear probing) from non-negative int64 keys to rows of floats,
    looked up and filled a whole array at a time: each call costs its keys, not the table's size."""

    def __init__(self, capacity: int = 1 << 20, width: int = 2, dtype: type = np.float64):
        if capacity & (capacity - 1):
            raise ValueError(f"a ScoreTable's capacity is a power of two, got {capacity}")
        self.keys = np.full(capacity, -1, dtype=np.int64)  # -1: an empty slot
        self.values = np.zeros((capacity, width), dtype=dtype)
        self.size = 0

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each key is held, and the values of those that are (in `keys` order)."""
        slot = self._slots(keys)
        is_held = self.keys[slot] == keys
        return is_held, self.values[slot[is_held]]

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Hold distinct keys that are not held yet, with their value rows."""
        if 2 * (self.size + keys.size) > self.keys.size:
            held = self.keys >= 0
            grown = ScoreTable(1 << (2 * (self.size + keys.size)).bit_length(), self.values.shape[1], self.values.dtype)
            grown.add(self.keys[held], self.values[held])
            self.keys, self.values = grown.keys, grown.values
        pending = np.arange(keys.size)
        while pending.size:  # keys probing to one empty slot: one is written, the others probe on
            slot = self._slots(keys[pending])
            self.keys[slot] = keys[pending]
            is_written = self.keys[slot] == keys[pending]
            self.values[slot[is_written]] = values[pending[is_written]]
            pending = pending[~is_written]
        self.size += keys.size

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """The held keys and their values."""
        held = self.keys >= 0
        return self.keys[held], self.values[held]

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        """Each key's slot: where it is held, else the empty slot that ends its probe."""
        bits = self.keys.size.bit_length() - 1
        slot = ((keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)).astype(np.int64)
        pending = np.arange(keys.size)
        while pending.size:
            found = self.keys[slot[pending]]
            pending = pending[(found != keys[pending]) & (found >= 0)]
            slot[pending] = (slot[pending] + 1) & (self.keys.size - 1)
        return slot


def _keys_by_day(tables: dict[int, ScoreTable], day: np.ndarray, key: np.ndarray, new_table: Callable[[], ScoreTable]):
    """Per day of the rows, with its table in `tables` (made by `new_table` for a new day; earlier days are
    dropped): (the table, the rows whose key it holds, their values, the rows it does not hold, the first
    of those rows per distinct key, each of those rows' index among the distinct keys)."""
    for past in [past for past in tables if past < day.min()]:
        del tables[past]
    days = np.unique(day)
    for today in days:
        rows = np.arange(key.size) if days.size == 1 else np.flatnonzero(day == today)
        table = tables[int(today)] = tables.get(int(today)) or new_table()
        is_held, values = table.get(key[rows])
        new_rows = rows[~is_held]
        _, first, inverse = np.unique(key[new_rows], return_index=True, return_inverse=True)
        yield table, rows[is_held], values, new_rows, new_rows[first], inverse


def _score_day(candidates: pl.DataFrame) -> np.ndarray:
    """Each row's day (days since the epoch): the scores' and the features' lifetime."""
    return candidates["ts"].dt.date().cast(pl.Int32).to_numpy()


def _scoring_rows(candidates: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """The columns the ranker's features read, of `rows`."""
    return candidates.select("request_id", "user_id", "ts", pl.col("surface").cast(schema.Surface), "item_id")[rows]


def _score_key(candidates: pl.DataFrame) -> np.ndarray:
    """(user, surface, item) of each row packed in one int64 (user_id < 2**30, item_id < 2**31)."""
    user = candidates["user_id"].to_numpy().astype(np.int64)
    item = candidates["item_id"].to_numpy().astype(np.int64)
    if user.size and (user.min() < 0 or user.max() >= 2**30 or item.min() < 0 or item.max() >= 2**31):
        raise ValueError("the ranker's score cache packs user_id < 2**30 and item_id < 2**31 (non-negative); "
                         "renumber users or items")
    surface = candidates["surface"].cast(schema.Surface).to_physical().to_numpy().astype(np.int64)
    return (user << 33) | (surface << 31) | item


def trained_stack(run: Path, world: World, world_config: WorldConfig, predictions: pl.DataFrame,
                  objective: str = "clicks", quotas: dict[str, int] | None = None,
                  nightly: NightlyJob | None = None) -> Stack:
    """The trained stack of a run folder: two-tower main + LLM-advertiser + popularity generators
    (`adsim retrieval train/index`), the DCN ranker (`adsim rank train`) and the true response.

    `quotas` (per source, the largest any arm uses) size what each generator retrieves: blending
    keeps a source's top `quota` by score, so retrieving more would only cost time.
    """
    from datetime import datetime, timezone

    from ranking.scoring import load_ranker
    from retrieval.config import GeneratorConfig, IndexConfig
    from retrieval.generators import LlmAdvertiserGenerator, MainGenerator
    from retrieval.generators import PopularityGenerator as RecentPopularityGenerator
    from retrieval.index import ItemIndex
    from retrieval.train import TwoTowerRetriever
    from simulator.engine import simulation_start
    from synthetic_data.config_io import from_dict
    from synthetic_data.run_folder import RunFolder

    folder = RunFolder(run)
    needed = {f"retrieval_train_{objective}": f"adsim retrieval train --run {run}",
              f"retrieval_index_{objective}": f"adsim retrieval index --run {run}",
              "ranking": f"adsim rank train --run {run}"}
    for stage, command in needed.items():
        if folder.stage_record(stage) is None:
            raise FileNotFoundError(f"{folder.root / stage} is missing: run `{command}` first "
                                    f"(or use --stack baseline)")
    index_config = from_dict(IndexConfig, folder.stage_record(f"retrieval_index_{objective}")["config"]["index"])
    retriever = TwoTowerRetriever.load(folder.root / f"retrieval_train_{objective}" / "model.pt", world.items)
    index = ItemIndex.load(folder.root / f"retrieval_index_{objective}", index_config)
    history = retriever.history(world.events, world.users)
    quotas = {source: max(quota, 1) for source, quota in (quotas or {}).items()}
    defaults = GeneratorConfig()
    generator_config = GeneratorConfig(
        main_top_n=quotas.get(TRAINED_SOURCES[0], defaults.main_top_n),
        popularity_top_n=quotas.get(TRAINED_SOURCES[1], defaults.popularity_top_n),
        l0_quota=quotas.get(TRAINED_SOURCES[2], defaults.l0_quota))
    start = datetime.combine(simulation_start(world), datetime.min.time(), tzinfo=timezone.utc)
    generators = (MainGenerator(retriever, index, history, generator_config),
                  RecentPopularityGenerator(generator_config, history).fit(world.events, world.items, start),
                  PredictionFeed(LlmAdvertiserGenerator(retriever, index, history, predictions, generator_config)))
    ranker = load_ranker(folder.root / "ranking" / "ranker.pt")
    # the market's lists reach the ranker's LLM features too, except (user, anchor) lists it trained on
    trained_keys = ranker.predictions.select("user_id", "anchor_date") if ranker.predictions is not None else None
    ranker.serve_from(predictions if trained_keys is None
                      else predictions.join(trained_keys.unique(), on=["user_id", "anchor_date"], how="anti"))
    return Stack(generators=generators, scorer=RankerScorer(ranker),
                 response=WorldResponse.from_world(world, world_config), nightly=nightly,
                 llm_feature_coverage=ranker.coverage_check(world.users["user_id"].to_numpy()),
                 served_users=served_users(predictions))

"""Assembles the models a simulated market runs (DESIGN: `simulator/` is the only package that wires
every stage): the world's true response, candidate generators, the scorer, the nightly job.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from simulator.baselines import AdvertiserFilterGenerator, HistoryScorer, PopularityGenerator, history_predictions
from simulator.engine import Stack
from simulator.nightly import LlmPredictor, NightlyRefresh, history_predictor
from simulator.protocols import NightlyJob
from simulator.world_response import WorldResponse
from synthetic_data import schema
from synthetic_data.config import WorldConfig
from synthetic_data.schema import World

BASELINE_SOURCES = ("main", "llm")  # main: category popularity; llm: items of predicted advertisers


def nightly_job(kind: str, world: World, run: Path | None = None, llm_max_users: int = 100) -> NightlyJob | None:
    """The nightly re-inference: none, the history baseline, or the run's GRPO LLM (`llm_max_users`
    of each day's active users), each over world + simulated events."""
    if kind == "none":
        return None
    if kind == "history":
        return NightlyRefresh(history_predictor(), world.events)
    if kind == "llm":
        if run is None:
            raise ValueError("nightly job 'llm' needs the run folder that holds the trained LLM")
        return NightlyRefresh(LlmPredictor(run, world, max_users=llm_max_users), world.events)
    raise ValueError(f"nightly job {kind!r} is not available; use 'none', 'history' or 'llm'")


def load_predictions(path: Path | None, world: World) -> tuple[pl.DataFrame, str]:
    """A PREDICTIONS table from `path`, or the history baseline (each user's most-converted advertisers)."""
    if path is None:
        return history_predictions(world.events), "history baseline (most-converted advertisers)"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `adsim llm predict` first or drop --predictions")
    return schema.validate(pl.read_parquet(path), schema.PREDICTIONS, str(path)), str(path)


def baseline_stack(world: World, world_config: WorldConfig, predictions: pl.DataFrame,
                   nightly: NightlyJob | None = None) -> Stack:
    """The model-free stack: popularity + predicted-advertiser generators, history scorer, true response."""
    return Stack(generators=(PopularityGenerator(world, source=BASELINE_SOURCES[0]),
                             AdvertiserFilterGenerator(world, predictions, source=BASELINE_SOURCES[1])),
                 scorer=HistoryScorer(world), response=WorldResponse.from_world(world, world_config), nightly=nightly)


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
    all day, and about half of a day's candidate rows repeat an earlier one.
    """

    KEYS = ("user_id", "day", "surface", "item_id")

    def __init__(self, ranker):
        self.ranker = ranker
        self._forget()

    def _forget(self) -> None:
        self.scored_ = pl.DataFrame(schema={"user_id": pl.Int64, "day": pl.Date, "surface": schema.Surface,
                                            "item_id": pl.Int32, "ctcvr": pl.Float64, "vtcvr": pl.Float64})

    def update_predictions(self, predictions: pl.DataFrame) -> None:
        self.ranker.update_predictions(predictions)
        self._forget()

    def reset_predictions(self) -> None:
        self.ranker.reset_predictions()
        self._forget()

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        keys = list(self.KEYS)
        keyed = candidates.with_columns(pl.col("ts").dt.date().alias("day"), pl.col("surface").cast(schema.Surface))
        if self.scored_.height and self.scored_["day"].min() < keyed["day"].min():
            self.scored_ = self.scored_.filter(pl.col("day") >= keyed["day"].min())  # past days are over
        known = self.scored_.filter(pl.col("user_id").is_in(keyed["user_id"].unique().implode()))
        unscored = (keyed.join(known.select(keys), on=keys, how="anti").unique(keys, maintain_order=True))
        if unscored.height:
            scores = self.ranker.score(unscored.select("request_id", "user_id", "ts", "surface", "item_id"))
            fresh = unscored.select(keys).with_columns(pl.Series("ctcvr", scores["p_ctcvr"], pl.Float64),
                                                       pl.Series("vtcvr", scores["p_vtcvr"], pl.Float64))
            self.scored_ = pl.concat([self.scored_, fresh], rechunk=False)
            known = pl.concat([known, fresh])
        return keyed.select(keys).join(known, on=keys, how="left", maintain_order="left").select("ctcvr", "vtcvr")


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
            raise FileNotFoundError(f"{folder.root / stage} is missing: run `{command}` first (or use --stack baseline)")
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
                 llm_feature_coverage=ranker.coverage_check(world.users["user_id"].to_numpy()))

"""The oracle prediction source: a positive control with a quality dial (issue #15).

It writes advertiser lists in the LLM's contract (`schema.PREDICTIONS` and `PREDICTED_INTERESTS`)
from the world's hidden response model (synthetic_data/response.py, which reads the `*_truth`
tables), so it is a control that tells how the stack responds to a predictor of known quality,
never a method. Each list position comes from the user's advertisers ranked by true expected
conversions with probability w, else from a popularity draw; w is calibrated by bisection so that
Recall@20 on the eval labels (llm_predictor.metrics, as the LLM's eval computes it) lands within a
tolerance of a target q. Random lists of the same length (ranking.llm_features) stay the negative
control.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from llm_predictor.baselines import eligible_advertiser_ids, predictions_table
from llm_predictor.metrics import recall_with_intervals
from llm_predictor.prompts import N_ADVERTISERS, N_INTERESTS
from synthetic_data.config import WorldConfig
from synthetic_data.config_io import require
from synthetic_data.next_conversion import next_conversion_probabilities
from synthetic_data.response import ResponseState, true_rates
from synthetic_data.schema import PREDICTED_INTERESTS, World, conform

KEYS = ["user_id", "anchor_date"]
RECALL = f"recall_at_{N_ADVERTISERS}"  # the calibrated metric: Recall@20, the list's length
# LLM-config overrides under which `prediction_keys` returns every serving and held-out user, not a sample
ALL_USERS = [f"{name}_max_users={2**31 - 1}" for name in ("serving", "heldout")]
# A user set only a control may have: its lists read no label, so train-split users' lists leak nothing,
# while an LLM's lists for the users it trained on would (`adsim llm predict` has no such set).
EVERYONE = "everyone"
EVERYONE_HELP = "every user of the world at every label anchor (Table 5 at the world's size; controls only)"
RANKINGS = {"impression": "oracle", "next_conversion": "oracle_next"}  # ranking -> source prefix
PAIRS_PER_CHUNK = 1 << 20  # (list, item) rates scored at once: bounds the response model's arrays


@dataclass(frozen=True)
class OracleConfig:
    """The quality dial: the target Recall@20, how close calibration must get, and the draws' seed."""

    q: float = 0.5  # target Recall@20 on the calibration labels (the V1 eval set)
    tolerance: float = 0.02  # |measured Recall@20 - q| accepted; Recall moves in steps of 1 / labels
    max_steps: int = 20  # bisection steps on the mixing weight w before giving up
    seed: int = 0  # the popularity draws and the per-position coins
    # A q outside the reachable range: False raises UnreachableRecall; True measures the nearest end
    # instead (w = 1, the pure oracle, for q above it; w = 0, popularity draws, for q below it), so a
    # dose-response from q = 0 to q = 1 spans everything a predictor ranked by the truth can reach.
    clamp: bool = False
    # Whose lists: False, the LLM preset's serving and held-out users (as `adsim llm predict` covers them:
    # a seeded sample where the preset caps them, as small does the held-out users); True, every user of the set.
    all_users: bool = False
    # What the oracle ranks a user's advertisers by: `impression`, true expected conversions of one impression
    # (what the market rewards); `next_conversion`, the world's probability that the user's next conversion
    # goes to the advertiser (synthetic_data/next_conversion.py: what the labels are drawn from, so its
    # Recall is the ceiling a predictor of the labels can aim at).
    ranking: Literal["impression", "next_conversion"] = "impression"

    def __post_init__(self) -> None:
        require(0 <= self.q <= 1, "q", f"a target Recall@{N_ADVERTISERS} must be in [0, 1], got {self.q}")
        require(0 < self.tolerance < 1, "tolerance", f"must be in (0, 1), got {self.tolerance}; "
                "with n labels Recall moves in steps of 1/n, so keep it above 1/(2n)")
        require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        require(self.ranking in RANKINGS, "ranking", f"must be one of {list(RANKINGS)}, got {self.ranking!r}")

    @property
    def source(self) -> str:
        """The PREDICTIONS `source` of the lists, e.g. "oracle_q0.5" (`impression` ranking) or
        "oracle_next_q1" (`next_conversion`)."""
        return f"{RANKINGS[self.ranking]}_q{self.q:g}"

    def stage(self, users: str) -> str:
        """The run-folder stage of the lists for a user set, e.g. "oracle_q0.5_heldout" ("_all" appended
        when the lists cover every user of the set)."""
        return f"{self.source}_{users}{'_all' if self.all_users else ''}"


class CalibrationError(ValueError):
    """No mixing weight gives Recall@20 within the tolerance of q."""


class UnreachableRecall(CalibrationError):
    """q lies outside [Recall@20 of popularity draws alone, Recall@20 of the pure oracle]."""


@dataclass(frozen=True)
class Calibration:
    """The calibrated weight, its measured recall, and the range any q can ask for."""

    weight: float  # probability that a list position comes from the oracle ranking
    recall: dict[str, float]  # Recall@1/5/20 at `weight`, with Wilson intervals (recall_with_intervals)
    floor: float  # Recall@20 at w = 0 (popularity draws only)
    ceiling: float  # Recall@20 at w = 1 (the pure oracle): the most a predictor ranked by the truth reaches
    curve: dict[float, float]  # Recall@20 at every weight tried, by weight


def oracle_scores(state: ResponseState, items: pl.DataFrame, keys: pl.DataFrame,
                  advertiser_ids: np.ndarray) -> np.ndarray:
    """(n_keys, n_advertisers) true expected conversions (probability) of one impression of each
    advertiser's best item at the top Home Feed slot, for each (user_id, anchor_date) of `keys` on the
    day after the anchor (when its list first serves): max over items of p_click * p_conversion +
    p_view_conversion. An advertiser without items scores 0."""
    # The response reads an item only through its advertiser and category: one item per pair is exact.
    pairs = (items.filter(pl.col("advertiser_id").is_in(advertiser_ids.tolist()))
             .group_by("advertiser_id", "category_id").agg(pl.col("item_id").min())
             .sort("advertiser_id", "category_id"))
    pair_advertiser = pairs["advertiser_id"].to_numpy().astype(np.int64)
    pair_item = pairs["item_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, pair_advertiser[1:] != pair_advertiser[:-1]])
    columns = np.searchsorted(advertiser_ids, pair_advertiser[starts])
    users = keys["user_id"].to_numpy()
    days = (keys["anchor_date"] - state.start_date).dt.total_days().to_numpy() + 1
    scores = np.zeros((keys.height, len(advertiser_ids)))
    chunk = max(1, PAIRS_PER_CHUNK // len(pair_item))
    for begin in range(0, keys.height, chunk):
        rows = slice(begin, begin + chunk)
        n_rows = len(users[rows])
        rates = true_rates(state, np.repeat(users[rows], len(pair_item)), np.tile(pair_item, n_rows),
                           "home_feed", 0, np.repeat(days[rows], len(pair_item)))
        expected = (rates.p_click * rates.p_conversion + rates.p_view_conversion).reshape(n_rows, -1)
        scores[rows, columns] = np.maximum.reduceat(expected, starts, axis=1)
    return scores


def popularity_orders(popularity: np.ndarray, n_lists: int, rng: np.random.Generator) -> np.ndarray:
    """(n_lists, n_advertisers) column orders, each a draw without replacement with probability
    proportional to `popularity` (Gumbel-top-k: the order of log p + Gumbel noise)."""
    noisy = np.log(popularity)[None, :] + rng.gumbel(size=(n_lists, len(popularity)))
    return np.argsort(-noisy, axis=1, kind="stable")


def mixed_lists(oracle_order: np.ndarray, popularity_order: np.ndarray, coins: np.ndarray,
                weight: float) -> np.ndarray:
    """(n_lists, list_length) distinct column indices: position by position, the first column not yet
    listed in the oracle order where coins < weight, else in the popularity order. Both orders are
    (n_lists, n_advertisers); coins are (n_lists, list_length) U(0, 1) draws shared by every weight."""
    n_lists, list_length = coins.shape
    rows = np.arange(n_lists)
    is_listed = np.zeros(oracle_order.shape, dtype=bool)  # by column
    lists = np.empty((n_lists, list_length), dtype=np.int64)
    for position in range(list_length):
        order = np.where((coins[:, position] < weight)[:, None], oracle_order, popularity_order)
        is_free = ~np.take_along_axis(is_listed, order, axis=1)
        lists[:, position] = order[rows, is_free.argmax(axis=1)]
        is_listed[rows, lists[:, position]] = True
    return lists


def truth_interests(state: ResponseState, world: World, keys: pl.DataFrame) -> pl.DataFrame:
    """PREDICTED_INTERESTS: each (user_id, anchor_date)'s 5 heaviest latent leaf categories (interests_truth,
    as many as the LLM's list names) in the drift epoch its list serves, named as in the categories table."""
    day = (pl.col("anchor_date") - pl.lit(state.start_date)).dt.total_days() + 1
    epoch = (day // state.drift_period_days).clip(0, state.n_epochs - 1).cast(pl.Int16)
    table = (keys.select(*KEYS, epoch.alias("epoch"))
             .join(world.interests_truth, on=["user_id", "epoch"])
             .join(world.categories.select("category_id", pl.col("name").alias("interest")), on="category_id")
             .sort(*KEYS, "weight", "category_id", descending=[False, False, True, False])
             .with_columns(pl.int_range(1, pl.len() + 1).over(KEYS).alias("rank"))
             .filter(pl.col("rank") <= N_INTERESTS))
    return conform(table.select(*PREDICTED_INTERESTS), PREDICTED_INTERESTS, "oracle interests")


def calibrate(measure: Callable[[float], dict[str, float]], config: OracleConfig) -> Calibration:
    """Bisect the mixing weight until `measure(weight)[RECALL]` is within `config.tolerance` of `config.q`.

    A q above the pure oracle's Recall@20 (w = 1) or below that of popularity draws alone (w = 0)
    gets that end's weight when `config.clamp`, else raises UnreachableRecall naming the measured
    bound; CalibrationError when bisection ends without a weight inside the tolerance (Recall jumps
    by 1/labels; widen the tolerance).
    """
    measured = {0.0: measure(0.0), 1.0: measure(1.0)}
    floor, ceiling = measured[0.0][RECALL], measured[1.0][RECALL]

    def calibration(weight: float) -> Calibration:
        return Calibration(weight=weight, recall=measured[weight], floor=floor, ceiling=ceiling,
                           curve={weight: recall[RECALL] for weight, recall in sorted(measured.items())})

    end = 1.0 if config.q > ceiling + config.tolerance else 0.0 if config.q < floor - config.tolerance else None
    if end is not None and config.clamp:
        return calibration(end)
    if end == 1.0:
        raise UnreachableRecall(
            f"q = {config.q:g} is above the Recall@{N_ADVERTISERS} of the pure oracle (w = 1), {ceiling:.3f}, on "
            f"these labels: the labels are draws, so even lists ranked by the true response miss some. "
            f"Ask for q <= {ceiling:.3f}")
    if end == 0.0:
        raise UnreachableRecall(
            f"q = {config.q:g} is below the Recall@{N_ADVERTISERS} of popularity draws alone (w = 0), "
            f"{floor:.3f}, on these labels. Ask for q >= {floor:.3f}, or use the random control "
            f"(ranking.llm_features.random_prediction_lists) for less")

    def distance(weight: float) -> float:
        return abs(measured[weight][RECALL] - config.q)

    low, high = 0.0, 1.0
    best = min(measured, key=distance)
    for _ in range(config.max_steps):
        if distance(best) <= config.tolerance:
            break
        middle = (low + high) / 2
        measured[middle] = measure(middle)
        low, high = (middle, high) if measured[middle][RECALL] < config.q else (low, middle)
        best = min(measured, key=distance)
    if distance(best) > config.tolerance:
        raise CalibrationError(
            f"no weight gave Recall@{N_ADVERTISERS} within {config.tolerance:g} of q = {config.q:g} after "
            f"{config.max_steps} bisection steps (closest: {measured[best][RECALL]:.3f} at w = {best:.4f}); "
            f"Recall moves in steps of 1 / labels: widen --tolerance or raise --max-steps")
    return calibration(best)


@dataclass(frozen=True)
class OracleLists:
    """The oracle's lists for one set of (user_id, anchor_date) keys at any mixing weight. The draws
    are made once, so every weight mixes the same orders with the same coins (common random numbers:
    Recall changes with the weight, not with the draws)."""

    keys: pl.DataFrame  # (user_id, anchor_date), unique, sorted
    advertisers: pl.DataFrame  # the world's ADVERTISERS (names)
    advertiser_ids: np.ndarray  # the eligible advertisers, sorted; lists index into them
    oracle_order: np.ndarray  # (n_keys, n_advertisers) by descending true expected conversions
    popularity_order: np.ndarray  # (n_keys, n_advertisers) popularity draws without replacement
    coins: np.ndarray  # (n_keys, list_length) U(0, 1)
    source: str

    @classmethod
    def draw(cls, world: World, state: ResponseState, keys: pl.DataFrame, config: OracleConfig,
             world_config: WorldConfig | None = None) -> OracleLists:
        """Score and draw for `keys`; lists are 20 long (fewer if fewer advertisers are eligible). The
        `next_conversion` ranking re-simulates the world from `world_config` (ValueError without it)."""
        keys = keys.select(KEYS).unique().sort(KEYS)
        # the only advertisers a label can name, sorted: lists index into them
        advertiser_ids = eligible_advertiser_ids(world)
        popularity = (pl.DataFrame({"advertiser_id": advertiser_ids.astype(np.int32)})
                      .join(world.advertisers_truth, on="advertiser_id", how="left", maintain_order="left")
                      ["popularity"].to_numpy())
        rng = np.random.default_rng(config.seed)
        coins = rng.random((keys.height, min(N_ADVERTISERS, len(advertiser_ids))))
        if config.ranking == "impression":
            scores = oracle_scores(state, world.items, keys, advertiser_ids)
        elif world_config is None:
            raise ValueError("the next_conversion ranking re-simulates the world: pass its world_config")
        else:
            scores = next_conversion_probabilities(world_config, keys)[:, advertiser_ids]
        return cls(keys=keys, advertisers=world.advertisers, advertiser_ids=advertiser_ids,
                   oracle_order=np.argsort(-scores, axis=1, kind="stable"),
                   popularity_order=popularity_orders(popularity, keys.height, rng), coins=coins,
                   source=config.source)

    def predictions(self, weight: float) -> pl.DataFrame:
        """PREDICTIONS of every key at mixing weight `weight` in [0, 1]."""
        lists = mixed_lists(self.oracle_order, self.popularity_order, self.coins, weight)
        return predictions_table(self.keys, lists, self.advertisers, self.advertiser_ids, self.source)


def oracle_predictions(world: World, state: ResponseState, requests: pl.DataFrame, labels: pl.DataFrame,
                       config: OracleConfig, world_config: WorldConfig | None = None,
                       ) -> tuple[pl.DataFrame, pl.DataFrame, Calibration]:
    """The oracle's PREDICTIONS and PREDICTED_INTERESTS for the (user_id, anchor_date) `requests`, with
    w calibrated on `labels` (LABELS rows; the eval's V1 set in `adsim oracle`).

    Requests and labels share one set of draws, so a requested list whose (user, anchor) has a label
    is the list that was measured. Raises CalibrationError / UnreachableRecall (see `calibrate`); the
    `next_conversion` ranking needs `world_config` (see `OracleLists.draw`).
    """
    oracle = OracleLists.draw(world, state, pl.concat([requests.select(KEYS), labels.select(KEYS)]), config,
                              world_config)
    calibration = calibrate(lambda weight: recall_with_intervals(oracle.predictions(weight), labels), config)
    requested = requests.select(KEYS).unique().sort(KEYS)
    predictions = oracle.predictions(calibration.weight).join(requested, on=KEYS, how="semi")
    return predictions, truth_interests(state, world, requested), calibration


def everyone_keys(world: World) -> pl.DataFrame:
    """(user_id, anchor_date) of every user at every label anchor, sorted: the `everyone` user set."""
    anchors = world.labels.select("anchor_date").unique()
    return world.users.select("user_id").join(anchors, how="cross").sort(KEYS)


def user_keys(world: World, llm_config, users: str) -> pl.DataFrame:
    """The (user_id, anchor_date) rows of a user set: `adsim llm predict --users` for its sets, or EVERYONE."""
    from llm_predictor.stages import prediction_keys

    return everyone_keys(world) if users == EVERYONE else prediction_keys(world, llm_config, users).select(KEYS)


def oracle_stage(run_root: Path, config: OracleConfig, users: str, llm_preset: str,
                 force: bool = False) -> tuple[dict, bool]:
    """`adsim oracle`: write `<run>/oracle_q<q>_<users>/{predictions,interests}.parquet` for the users
    `adsim llm predict --users <users> --preset <llm_preset>` predicts (every user of the set with
    `config.all_users`), or EVERYONE, w calibrated on the V1 eval labels. Returns (the stage summary,
    whether it was skipped as complete). Raises FileNotFoundError without a world stage, ConfigError for
    an unknown user set or preset, CalibrationError."""
    from llm_predictor.config import resolve_config
    from llm_predictor.stages import PREDICT_USERS
    from llm_predictor.evaluate import evaluation_labels
    from synthetic_data.config_io import ConfigError, from_dict, to_dict
    from synthetic_data.response import build_response_state
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world

    run = RunFolder(run_root)
    world_record = run.stage_record("world")
    if world_record is None:
        raise FileNotFoundError(f"{run.root / 'world'} has no stage record: run `adsim world --out {run.root}` first")
    if users not in PREDICT_USERS and users != EVERYONE:
        raise ConfigError(f"config field 'users': {users!r} is not one of {sorted([*PREDICT_USERS, EVERYONE])}")
    llm_config = resolve_config(llm_preset, None, ALL_USERS if config.all_users else None)
    stage = config.stage(users)
    stage_config = {"upstream": world_record["config_hash"], "oracle": to_dict(config), "users": users,
                    "llm_preset": llm_preset, "evaluation": to_dict(llm_config.eval.evaluation),
                    "max_users": {"serving": llm_config.serving_max_users,
                                  "heldout": llm_config.heldout_max_users}.get(users),
                    "user_seed": llm_config.seed}
    if not force and run.is_complete(stage, stage_config):
        return run.stage_record(stage)["summary"], True
    started = time.perf_counter()
    world_config = from_dict(WorldConfig, world_record["config"])
    world = load_world(run.root / "world")
    state = build_response_state(world, date.fromisoformat(world_config.start_date),
                                 world_config.users.drift_period_days)
    requests = user_keys(world, llm_config, users)
    labels = evaluation_labels(world, llm_config.eval.evaluation)["v1"]
    predictions, interests, calibration = oracle_predictions(world, state, requests, labels, config, world_config)
    directory = run.stage_dir(stage)
    predictions.write_parquet(directory / "predictions.parquet")
    interests.write_parquet(directory / "interests.parquet")
    summary = {"source": config.source, "q": config.q, "weight": calibration.weight,
               "calibration_labels": f"V1 eval set ({labels.height} labels)", **calibration.recall,
               "floor_" + RECALL: calibration.floor, "ceiling_" + RECALL: calibration.ceiling,
               "curve": [[weight, recall] for weight, recall in calibration.curve.items()],
               "users": requests["user_id"].n_unique(), "lists": predictions.select(KEYS).n_unique(),
               "anchor_dates": sorted({str(anchor) for anchor in requests["anchor_date"].to_list()}),
               "seconds": round(time.perf_counter() - started, 1)}
    run.complete(stage, stage_config, ["predictions.parquet", "interests.parquet"], summary)
    return summary, False

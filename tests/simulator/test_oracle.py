from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from llm_predictor.baselines import eligible_advertisers
from llm_predictor.metrics import recall_at_k
from simulator.cli import app
from llm_predictor.evaluate import next_conversion_ceiling
from simulator.oracle import (KEYS, RECALL, CalibrationError, OracleConfig, OracleLists, UnreachableRecall,
                              calibrate, oracle_predictions, oracle_scores)
from synthetic_data.config_io import ConfigError, to_dict
from synthetic_data.response import build_response_state, true_rates
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import PREDICTED_INTERESTS, PREDICTIONS, WORLD_TABLES, validate

# The tiny preset has 26 eligible advertisers, so any 20 of them hit ~94% of its labels: recall tests
# need a world where a 20-advertiser list is a real choice.
WIDE = ["advertisers.n_advertisers=150"]


@pytest.fixture(scope="module")
def wide_config():
    from synthetic_data.presets import preset

    return preset("tiny", WIDE)


@pytest.fixture(scope="module")
def wide_world(wide_config):
    from synthetic_data.world import generate_world

    return generate_world(wide_config, progress=False)


@pytest.fixture(scope="module")
def wide_state(wide_world, wide_config):
    return build_response_state(wide_world, date.fromisoformat(wide_config.start_date),
                                wide_config.users.drift_period_days)


@pytest.fixture(scope="module")
def wide_lists(wide_world, wide_state):
    return OracleLists.draw(wide_world, wide_state, wide_world.labels, OracleConfig())


def _tiny_state(world):
    from synthetic_data.presets import preset

    config = preset("tiny")
    return build_response_state(world, date.fromisoformat(config.start_date), config.users.drift_period_days)


def test_lists_and_interests_follow_the_llm_contract(tiny_world):
    state = _tiny_state(tiny_world)
    eval_users = tiny_world.splits.filter(pl.col("split") == "eval").select("user_id")
    requests = eval_users.join(tiny_world.labels.select("anchor_date").unique(), how="cross")
    config = OracleConfig(q=0.9, tolerance=0.1)
    predictions, interests, _ = oracle_predictions(tiny_world, state, requests, tiny_world.labels, config)
    validate(predictions, PREDICTIONS, "predictions")
    validate(interests, PREDICTED_INTERESTS, "interests")
    assert predictions.select(KEYS).unique().sort(KEYS).equals(requests.select(KEYS).sort(KEYS))
    lists = predictions.group_by(KEYS).agg(pl.col("rank").sort(), pl.col("advertiser_id").n_unique())
    assert (lists["rank"].list.eval(pl.element() == pl.int_range(1, 21)).list.all().all()
            and (lists["advertiser_id"] == 20).all())
    spending = tiny_world.advertisers.filter(pl.col("is_active") & pl.col("has_active_spend"))  # as labels.py
    listed, every = set(predictions["advertiser_id"]), set(tiny_world.advertisers["advertiser_id"])
    assert listed <= set(spending["advertiser_id"]) < every
    names = predictions.join(tiny_world.advertisers.select("advertiser_id", "name"), on="advertiser_id")
    assert (names["advertiser_name"] == names["name"]).all() and set(predictions["source"]) == {"oracle_q0.9"}
    # interest 1 names the user's heaviest latent category in the epoch the list serves
    epoch = (((pl.col("anchor_date") - pl.lit(state.start_date)).dt.total_days() + 1) // state.drift_period_days
             ).clip(0, state.n_epochs - 1).cast(pl.Int16)
    heaviest = (requests.with_columns(epoch.alias("epoch")).join(tiny_world.interests_truth, on=["user_id", "epoch"])
                .sort("weight", descending=True).group_by(KEYS).first()
                .join(tiny_world.categories.select("category_id", "name"), on="category_id"))
    first = interests.filter(pl.col("rank") == 1).join(heaviest, on=KEYS)
    assert first.height == requests.height and (first["interest"] == first["name"]).all()
    assert interests.group_by(KEYS).agg(pl.col("rank").max())["rank"].max() <= 5


def test_scores_are_the_best_item_true_expected_conversions(wide_world, wide_state):
    keys = wide_world.labels.select(KEYS).unique().sort(KEYS).head(40)
    advertiser_ids = np.sort(eligible_advertisers(wide_world)["advertiser_id"].to_numpy())
    scores = oracle_scores(wide_state, wide_world.items, keys, advertiser_ids)
    # brute force over every item of every eligible advertiser
    items = wide_world.items.filter(pl.col("advertiser_id").is_in(advertiser_ids.tolist()))
    days = (keys["anchor_date"] - wide_state.start_date).dt.total_days().to_numpy() + 1
    rates = true_rates(wide_state, np.repeat(keys["user_id"].to_numpy(), items.height),
                       np.tile(items["item_id"].to_numpy(), keys.height), "home_feed", 0,
                       np.repeat(days, items.height))
    expected = (rates.p_click * rates.p_conversion + rates.p_view_conversion).reshape(keys.height, -1)
    best = np.zeros_like(scores)
    for column, advertiser in enumerate(advertiser_ids):
        is_its = items["advertiser_id"].to_numpy() == advertiser
        best[:, column] = expected[:, is_its].max(axis=1) if is_its.any() else 0.0
    np.testing.assert_allclose(scores, best, rtol=1e-12)
    assert (scores > 0).mean() > 0.9


def test_pure_oracle_lists_first_the_advertiser_of_highest_true_value(wide_lists, wide_world, wide_state):
    scores = oracle_scores(wide_state, wide_world.items, wide_lists.keys, wide_lists.advertiser_ids)
    first = (wide_lists.predictions(1.0).filter(pl.col("rank") == 1)
             .join(wide_lists.keys.with_row_index("row"), on=KEYS).sort("row"))
    columns = np.searchsorted(wide_lists.advertiser_ids, first["advertiser_id"].to_numpy())
    first_value = scores[first["row"].to_numpy(), columns]
    np.testing.assert_array_equal(first_value, scores.max(axis=1))
    assert first_value.mean() > 3 * scores.mean()  # a random eligible advertiser's expected value


def test_recall_at_20_rises_with_the_weight(wide_lists, wide_world):
    recall = [recall_at_k(wide_lists.predictions(weight), wide_world.labels)[20] for weight in (0, 0.25, 0.5, 0.75, 1)]
    assert recall == sorted(recall) and recall[-1] - recall[0] > 0.3, recall


def test_calibration_hits_a_reachable_target(wide_world, wide_state):
    labels = wide_world.labels
    config = OracleConfig(q=0.7, tolerance=0.02)
    predictions, _, calibration = oracle_predictions(wide_world, wide_state, labels, labels, config)
    measured = recall_at_k(predictions, labels)
    assert abs(measured[20] - 0.7) <= 0.02 and measured[20] == calibration.recall[RECALL]
    assert calibration.floor < 0.7 < calibration.ceiling and 0 < calibration.weight < 1
    assert set(calibration.curve) >= {0.0, 1.0, calibration.weight}


def test_unreachable_target_raises_with_the_measured_bound(wide_lists, wide_world, wide_state):
    labels = wide_world.labels
    ceiling = recall_at_k(wide_lists.predictions(1.0), labels)[20]
    floor = recall_at_k(wide_lists.predictions(0.0), labels)[20]
    assert ceiling < 0.97 and floor > 0.05  # labels are draws: the truth itself misses some
    with pytest.raises(UnreachableRecall, match=f"pure oracle.*{ceiling:.3f}.*q <= {ceiling:.3f}"):
        oracle_predictions(wide_world, wide_state, labels, labels, OracleConfig(q=1.0))
    with pytest.raises(UnreachableRecall, match=f"popularity draws alone.*{floor:.3f}"):
        oracle_predictions(wide_world, wide_state, labels, labels, OracleConfig(q=0.0))


def test_bisection_on_known_curves():
    calibration = calibrate(lambda weight: {RECALL: 0.2 + 0.6 * weight}, OracleConfig(q=0.5, tolerance=0.001))
    assert abs(calibration.weight - 0.5) <= 0.001 / 0.6 and (calibration.floor, calibration.ceiling) == (0.2, 0.8)
    with pytest.raises(CalibrationError, match="widen --tolerance") as error:
        calibrate(lambda weight: {RECALL: 0.2 if weight < 0.3 else 0.8}, OracleConfig(q=0.5, tolerance=0.05))
    assert not isinstance(error.value, UnreachableRecall)


def test_clamped_target_outside_the_reachable_range_is_measured_at_the_nearest_end():
    curve = lambda weight: {RECALL: 0.2 + 0.6 * weight}  # noqa: E731
    above = calibrate(curve, OracleConfig(q=1.0, clamp=True))
    below = calibrate(curve, OracleConfig(q=0.0, clamp=True))
    assert (above.weight, above.recall[RECALL]) == (1.0, 0.8) and (below.weight, below.recall[RECALL]) == (0.0, 0.2)
    assert calibrate(curve, OracleConfig(q=0.5, tolerance=0.001, clamp=True)).weight == pytest.approx(0.5, abs=0.002)
    with pytest.raises(UnreachableRecall):
        calibrate(curve, OracleConfig(q=1.0))


@pytest.mark.parametrize("field, value", [("q", 1.5), ("tolerance", 0.0), ("max_steps", 0), ("ranking", "clicks")])
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        OracleConfig(**{field: value})


@pytest.fixture(scope="module")
def wide_run(wide_world, wide_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle_run")
    wide_world.write(root / "world")
    RunFolder(root).complete("world", to_dict(wide_config), [f"{t}.parquet" for t in WORLD_TABLES])
    return root


def test_cli_writes_the_stage_and_skips_when_complete(wide_run, wide_world):
    from simulator.stack import load_predictions

    runner = CliRunner()
    arguments = ["oracle", "--run", str(wide_run), "--q", "0.6", "--tolerance", "0.1", "--users", "heldout",
                 "--llm-preset", "nano"]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    stage = wide_run / "oracle_q0.6_heldout"
    record = RunFolder(wide_run).stage_record(stage.name)
    summary = record["summary"]
    assert abs(summary["recall_at_20"] - 0.6) <= 0.1 and 0 <= summary["weight"] <= 1
    predictions, _ = load_predictions(stage / "predictions.parquet", wide_world)  # what `adsim ab` reads
    validate(pl.read_parquet(stage / "interests.parquet"), PREDICTED_INTERESTS)
    # heldout covers every eval user (nano: 60) at every anchor: its V1 lists are the measured ones
    v1 = wide_world.labels.join(wide_world.splits.filter(pl.col("split") == "eval"), on="user_id", how="semi")
    v1 = v1.filter(pl.col("in_v1") & (pl.col("anchor_date") == v1["anchor_date"].max()))
    assert predictions.height == 20 * 60 * wide_world.labels["anchor_date"].n_unique()
    assert recall_at_k(predictions, v1)[20] == summary["recall_at_20"]
    again = runner.invoke(app, arguments)
    assert again.exit_code == 0 and "skipping" in again.output
    assert RunFolder(wide_run).stage_record(stage.name)["finished_at"] == record["finished_at"]
    unreachable = runner.invoke(app, ["oracle", "--run", str(wide_run), "--q", "1.0", "--llm-preset", "nano"])
    assert unreachable.exit_code == 2 and "pure oracle" in unreachable.output


def test_cli_all_users_covers_every_serving_user_and_clamps_to_the_pure_oracle(wide_run, wide_world):
    """nano's serving sample is 10 users; --all-users lists every user who converted in the 90 days before
    the world's last day (paper 3.2.1); --clamp measures the unreachable q = 1 at w = 1."""
    result = CliRunner().invoke(app, ["oracle", "--run", str(wide_run), "--q", "1.0", "--users", "serving",
                                      "--llm-preset", "nano", "--all-users", "--clamp"])
    assert result.exit_code == 0, result.output
    summary = RunFolder(wide_run).stage_record("oracle_q1_serving_all")["summary"]
    last = wide_world.events["ts"].max()
    converters = wide_world.events.filter(pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]),
                                          pl.col("ts") >= last.replace(hour=0, minute=0, second=0, microsecond=0)
                                          - timedelta(days=89))["user_id"].n_unique()
    assert summary["users"] == converters > 10
    assert summary["weight"] == 1.0 and summary["recall_at_20"] == summary["ceiling_recall_at_20"]


def test_cli_everyone_lists_every_user_at_every_label_anchor(wide_run, wide_world):
    """`--users everyone` (a control's user set, Table 5 at the world's size) covers every user of the world, train
    split included, at every label anchor, with the lists of the V1 eval labels the ones calibrated."""
    result = CliRunner().invoke(app, ["oracle", "--run", str(wide_run), "--q", "0.6", "--tolerance", "0.1",
                                      "--users", "everyone", "--llm-preset", "nano"])
    assert result.exit_code == 0, result.output
    stage = wide_run / "oracle_q0.6_everyone"
    predictions = pl.read_parquet(stage / "predictions.parquet")
    keys = predictions.select(KEYS).unique()
    anchors = wide_world.labels["anchor_date"].n_unique()
    assert keys.height == wide_world.users.height * anchors and predictions.height == 20 * keys.height
    assert keys["user_id"].n_unique() == wide_world.users.height
    v1 = wide_world.labels.join(wide_world.splits.filter(pl.col("split") == "eval"), on="user_id", how="semi")
    v1 = v1.filter(pl.col("in_v1") & (pl.col("anchor_date") == v1["anchor_date"].max()))
    summary = RunFolder(wide_run).stage_record(stage.name)["summary"]
    assert recall_at_k(predictions, v1)[20] == summary["recall_at_20"]
    bad = CliRunner().invoke(app, ["oracle", "--run", str(wide_run), "--q", "0.6", "--users", "nobody"])
    assert bad.exit_code == 2 and "everyone" in bad.output


def test_next_conversion_ranking_lists_the_likeliest_eligible_advertisers(wide_world, wide_config):
    """The ceiling's lists: 20 distinct eligible advertisers in descending order of the world's next-conversion
    probability, and Recall above popularity's on the same labels."""
    from synthetic_data.next_conversion import next_conversion_probabilities

    labels = wide_world.labels.filter(pl.col("anchor_date") == pl.col("anchor_date").max())
    lists = next_conversion_ceiling(wide_world, wide_config, labels)
    keys = labels.select(KEYS).unique().sort(KEYS)
    assert lists.select(KEYS).unique().height == keys.height and (lists.group_by(KEYS).len()["len"] == 20).all()
    assert lists["advertiser_id"].is_in(eligible_advertisers(wide_world)["advertiser_id"].implode()).all()
    probabilities = next_conversion_probabilities(wide_config, keys, progress=False)
    listed = lists.join(keys.with_row_index("row"), on=KEYS).sort("row", "rank")
    listed_probability = probabilities[listed["row"].to_numpy(), listed["advertiser_id"].to_numpy()]
    assert (np.diff(listed_probability.reshape(-1, 20), axis=1) <= 0).all()  # descending within each list
    oracle = OracleLists.draw(wide_world, None, labels, OracleConfig(ranking="next_conversion"), wide_config)
    assert oracle.predictions(1.0).equals(lists.with_columns(source=pl.lit("oracle_next_q0.5")))
    assert recall_at_k(lists, labels)[1] > recall_at_k(oracle.predictions(0.0), labels)[1]  # popularity draws
    with pytest.raises(ValueError, match="world_config"):
        OracleLists.draw(wide_world, None, labels, OracleConfig(ranking="next_conversion"))


def test_cli_next_conversion_ranking_writes_its_own_stage(wide_run):
    result = CliRunner().invoke(app, ["oracle", "--run", str(wide_run), "--q", "1.0", "--users", "eval",
                                      "--llm-preset", "nano", "--clamp", "--ranking", "next_conversion"])
    assert result.exit_code == 0, result.output
    summary = RunFolder(wide_run).stage_record("oracle_next_q1_eval")["summary"]
    assert summary["source"] == "oracle_next_q1" and summary["weight"] == 1.0
    assert summary["ceiling_recall_at_20"] > summary["floor_recall_at_20"]


def test_run_folder_reads_back_the_generated_world_config(wide_run, wide_config, tmp_path):
    """The config a generated world came from; None for a run without a world record or with real data's."""
    assert RunFolder(wide_run).world_config() == wide_config
    assert RunFolder(tmp_path).world_config() is None
    RunFolder(tmp_path).complete("world", {"source": "amazon_scientific", "min_events": 5}, [])
    assert RunFolder(tmp_path).world_config() is None

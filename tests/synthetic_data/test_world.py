"""The world generator: determinism, contracts, and that each mechanism does what its knob says."""

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from synthetic_data import schema
from synthetic_data.config_io import ConfigError
from synthetic_data.presets import preset
from synthetic_data.world import generate_world, write_world


def _world(*overrides):
    return generate_world(preset("tiny", list(overrides)), progress=False)


def _past_advertiser_hits(world, only_mechanism=None):
    """For each label: is its advertiser among the user's conversion advertisers before the anchor?
    Also the chance expectation if label advertisers were uniform over all advertisers."""
    conversions = world.events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS))
    labels = world.labels
    past = (labels.select("user_id", "anchor_date").join(conversions, on="user_id")
            .filter(pl.col("ts").dt.date() <= pl.col("anchor_date"))
            .group_by("user_id", "anchor_date").agg(pl.col("advertiser_id").unique().alias("past")))
    joined = labels.join(past, on=["user_id", "anchor_date"], how="left").with_columns(
        pl.col("past").fill_null([]))
    hits = joined.select(pl.col("past").list.contains(pl.col("advertiser_id")).alias("hit"),
                         (pl.col("past").list.len() / world.advertisers.height).alias("chance"))
    return hits["hit"].to_numpy(), hits["chance"].to_numpy()


def test_tiny_world_follows_every_contract(tiny_world):
    for name in schema.WORLD_TABLES:
        schema.validate(getattr(tiny_world, name), schema.SCHEMAS[name], name)
    events = tiny_world.events
    assert events["event_id"].to_list() == list(range(events.height))
    assert events.select(pl.col("user_id").diff().min()).item() >= 0  # sorted by user, then time
    assert events.group_by("user_id").agg(pl.col("ts").diff().min()).drop_nulls()["ts"].min().total_seconds() >= 0
    assert set(events["kind"].cast(pl.String).unique()) == set(schema.EVENT_KINDS)
    conversions = events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS))
    assert conversions["conversion_type"].null_count() == 0 and conversions["value"].null_count() == 0
    assert events.filter(~pl.col("kind").is_in(schema.CONVERSION_KINDS))["conversion_type"].null_count() == \
        events.height - conversions.height
    assert tiny_world.conversions_truth.height == conversions.height
    # Ids in events refer to real rows.
    assert set(events["item_id"].drop_nulls()) <= set(tiny_world.items["item_id"])
    assert set(events["advertiser_id"].drop_nulls()) <= set(tiny_world.advertisers["advertiser_id"])


def test_same_seed_same_world_other_seed_other_world(tiny_world):
    again = _world()
    assert again.events.equals(tiny_world.events) and again.labels.equals(tiny_world.labels)
    other = _world("seed=8")
    assert not other.events.equals(tiny_world.events)


def test_adsim_world_twice_writes_identical_bytes(tmp_path):
    from simulator.cli import app

    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(app, ["world", "--preset", "tiny", "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "a" / "world").glob("*.parquet"))
    assert len(files) == len(schema.WORLD_TABLES)
    for name in files:
        assert (tmp_path / "a" / "world" / name).read_bytes() == (tmp_path / "b" / "world" / name).read_bytes()
    assert (tmp_path / "a" / "manifest.json").exists()
    again = runner.invoke(app, ["world", "--preset", "tiny", "--out", str(tmp_path / "a"), "--quiet"])
    assert "skipping" in again.output


def test_streaming_writer_and_worker_count_do_not_change_the_world(tmp_path, tiny_world):
    config = preset("tiny", ["user_chunk_size=250"])
    write_world(config, tmp_path / "one", progress=False, workers=1)
    write_world(config, tmp_path / "two", progress=False, workers=2)
    for name in schema.WORLD_TABLES:
        assert (tmp_path / "one" / f"{name}.parquet").read_bytes() == (tmp_path / "two" / f"{name}.parquet").read_bytes()
    in_memory = generate_world(config, progress=False)
    assert schema.load_table(tmp_path / "one", "events").equals(in_memory.events)


@pytest.mark.parametrize("override, message", [
    ("users.n_users=-5", "users.n_users"),
    ("advertisers.n_advertisers=0", "advertisers.n_advertisers"),
    ("behavior.conversion_mixture.repeat=0.9", "sum to 1"),
    ("users.gender_probs.female=0.1", "users.gender_probs"),
    ("labels.anchor_days=[80]", "n_days"),
    ("users.favourite=3", "unknown config field"),
    ("n_days='ninety'", "expected an integer"),
])
def test_bad_config_fails_with_the_field_named(override, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny", [override])


def test_bad_config_fails_before_any_work_in_the_cli(tmp_path):
    from simulator.cli import app

    result = CliRunner().invoke(app, ["world", "--preset", "galaxy", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown preset 'galaxy'" in result.output
    assert not (tmp_path / "x").exists()


def test_mechanism_shares_follow_the_mixture():
    world = _world("users.n_users=1500")
    shares = world.conversions_truth["mechanism"].cast(pl.String).value_counts(normalize=True)
    share = dict(shares.iter_rows())
    # repeat and semantic fall back to popular while a user's memory is empty, never the reverse.
    assert share["noise"] == pytest.approx(0.05, abs=0.015)
    assert 0.2 < share["repeat"] <= 0.35 + 0.02 and 0.2 < share["semantic"] <= 0.3 + 0.02
    only_noise = _world("behavior.conversion_mixture={repeat=0.0, semantic=0.0, popular=0.0, noise=1.0}")
    assert set(only_noise.conversions_truth["mechanism"].cast(pl.String)) == {"noise"}


def test_without_repeat_labels_hit_past_advertisers_only_by_chance():
    noise_only = _world("users.n_users=1500",
                        "behavior.conversion_mixture={repeat=0.0, semantic=0.0, popular=0.0, noise=1.0}")
    hit, chance = _past_advertiser_hits(noise_only)
    expected, sd = chance.sum(), np.sqrt((chance * (1 - chance)).sum())
    # Labels come from active spending advertisers only, a subset: allow for it on the high side.
    assert abs(hit.sum() - expected) < 4 * sd + 0.25 * expected
    repeat_heavy = _world("users.n_users=1500",
                          "behavior.conversion_mixture={repeat=0.9, semantic=0.0, popular=0.1, noise=0.0}")
    hit_repeat, chance_repeat = _past_advertiser_hits(repeat_heavy)
    assert hit_repeat.mean() > 0.75 > 3 * chance_repeat.mean()
    no_repeat = _world("users.n_users=1500",
                       "behavior.conversion_mixture={repeat=0.0, semantic=0.3, popular=0.65, noise=0.05}")
    hit_none, _ = _past_advertiser_hits(no_repeat)
    assert hit_none.mean() < hit_repeat.mean() - 0.3


def test_semantic_conversions_follow_recent_offsite_browsing():
    world = _world("behavior.conversion_mixture={repeat=0.0, semantic=1.0, popular=0.0, noise=0.0}",
                   "behavior.semantic_same_advertiser_probability=1.0",
                   "behavior.search_brand_mention_probability=1.0")
    events = world.events.with_columns(pl.col("ts").dt.date().alias("day"))
    semantic = (events.join(world.conversions_truth, on="event_id")
                .filter(pl.col("mechanism") == "semantic").select("user_id", "day", "advertiser_id"))
    browsed = events.filter(pl.col("kind").is_in(["offsite_url", "offsite_search"])
                            & pl.col("advertiser_id").is_not_null()).select("user_id", "day", "advertiser_id")
    earlier = semantic.join(browsed, on=["user_id", "advertiser_id"], suffix="_browse").filter(
        pl.col("day_browse") < pl.col("day")).unique(["user_id", "day", "advertiser_id"])
    assert semantic.height > 100
    assert earlier.height == semantic.unique(["user_id", "day", "advertiser_id"]).height


def test_loyal_users_browse_their_favourites():
    world = _world("users.loyalty_beta=[1000.0, 0.001]")
    favorites = world.users_truth.select("user_id", "favorite_advertisers").explode("favorite_advertisers")
    browses = world.events.filter(pl.col("kind").is_in(["offsite_url", "engagement"]))
    on_favorite = browses.join(favorites, left_on=["user_id", "advertiser_id"],
                               right_on=["user_id", "favorite_advertisers"], how="semi")
    assert on_favorite.height / browses.height > 0.99


def test_interest_drift_follows_its_probability():
    def changed(world):
        first = world.interests_truth.filter(pl.col("epoch") == 0).sort("user_id", "weight")
        last = world.interests_truth.filter(pl.col("epoch") == pl.col("epoch").max()).sort("user_id", "weight")
        return (first["category_id"] != last["category_id"]).mean()

    assert changed(_world("users.drift_probability=0.0")) == 0
    assert changed(_world("users.drift_probability=1.0")) > 0.3


def test_event_rates_follow_daily_rates(tiny_world):
    config = preset("tiny")
    user_days = config.users.n_users * config.n_days
    per_day = tiny_world.events["kind"].cast(pl.String).value_counts()
    for kind, count in per_day.iter_rows():
        rate = config.behavior.daily_rates[kind]  # activity and intent have mean 1
        assert count / user_days == pytest.approx(rate, rel=0.25), kind


def test_embeddings_carry_category_and_advertiser(tiny_world):
    items = tiny_world.items
    vectors = items["embedding"].to_numpy()
    sim = vectors @ vectors.T
    same_leaf = items["category_id"].to_numpy()[:, None] == items["category_id"].to_numpy()[None, :]
    same_adv = items["advertiser_id"].to_numpy()[:, None] == items["advertiser_id"].to_numpy()[None, :]
    off_diagonal = ~np.eye(len(items), dtype=bool)
    assert sim[same_leaf & ~same_adv & off_diagonal].mean() > sim[~same_leaf].mean() + 0.3
    assert sim[same_leaf & same_adv & off_diagonal].mean() > sim[same_leaf & ~same_adv].mean()


def test_corpus_ties_every_advertiser_to_domain_and_brands(tiny_world):
    text = "\n".join(tiny_world.corpus["text"])
    for name, domain in tiny_world.advertisers.select("name", "domain").iter_rows():
        assert name in text and domain in text
    owned = tiny_world.brands.join(tiny_world.advertisers.select("advertiser_id", pl.col("name").alias("owner")),
                                   on="advertiser_id")
    for brand, owner in owned.select("name", "owner").iter_rows():
        assert f"{brand} is a brand of {owner}" in text


def test_preset_pool_is_daily_top_spend_of_spending_advertisers(tiny_world):
    pool, spend = tiny_world.preset_pool, tiny_world.advertiser_spend
    size = preset("tiny").advertisers.preset_pool_size
    assert pool.group_by("day").len()["len"].max() == size
    spending = set(tiny_world.advertisers.filter("has_active_spend")["advertiser_id"])
    assert set(pool["advertiser_id"]) <= spending
    day = pool["day"][0]
    top = spend.filter(pl.col("day") == day).sort("spend", descending=True).head(size)
    assert pool.filter(pl.col("day") == day).sort("rank")["advertiser_id"].to_list() == top["advertiser_id"].to_list()


def test_no_user_in_both_splits_and_labels_only_for_eligible_conversions(tiny_world):
    splits = tiny_world.splits
    assert splits["user_id"].n_unique() == splits.height == tiny_world.users.height
    labels = tiny_world.labels.join(tiny_world.advertisers, on="advertiser_id")
    assert labels["is_active"].all() and labels["has_active_spend"].all()
    assert labels["conversion_type"].is_in(list(preset("tiny").behavior.high_priority_types)).all()
    days = (labels["ts"].dt.date() - labels["anchor_date"]).dt.total_days()
    assert days.min() >= 1 and days.max() <= 7

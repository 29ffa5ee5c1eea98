"""Tests of the Amazon real-data adapter, its baselines and results table (synthetic_data/real/).

Tests on the full dataset skip with a reason where `../shared/data/amazon18_scientific` (or
$ADSIM_AMAZON_DIR) is absent; format errors and exact formulas use hand-made files in tmp_path.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthetic_data.names import normalise_name
from synthetic_data import schema
from synthetic_data.real.amazon import (
    AmazonConfig,
    AmazonFormatError,
    build_world,
    load_dataset,
    write_amazon_world,
)
from synthetic_data.intervals import paired_difference_interval, proportion_interval
from synthetic_data.real.amazon_baselines import most_recent_predictions, popularity_predictions
from synthetic_data.real.amazon_results import (
    ResultsConfig,
    held_out_labels,
    label_ranks,
    results_table,
    score_method,
    to_markdown,
    write_baselines,
    write_results,
)

REPO = Path(__file__).resolve().parents[2]
AMAZON_DIR = Path(os.environ.get("ADSIM_AMAZON_DIR", REPO.parent / "shared" / "data" / "amazon18_scientific"))


@pytest.fixture(scope="module")
def amazon_dir() -> Path:
    if not any(AMAZON_DIR.glob("*.inter.json")):
        pytest.skip(f"Amazon 2018 Scientific data not found at {AMAZON_DIR}; set ADSIM_AMAZON_DIR "
                    f"to the folder holding Scientific.item.json and Scientific.inter.json")
    return AMAZON_DIR


@pytest.fixture(scope="module")
def amazon(amazon_dir):
    """(raw dataset, world, summary) of the full dataset."""
    dataset = load_dataset(amazon_dir)
    world, summary = build_world(dataset, AmazonConfig())
    return dataset, world, summary


def _item(title: str, brand: str = "Acme", categories: str = "Dept,Tools,Hammers") -> dict:
    return {"title": title, "description": f"about {title}", "brand": brand, "categories": categories}


def write_dataset(directory: Path, items: dict, sequences: dict, name: str = "Tiny") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.item.json").write_text(json.dumps(items))
    (directory / f"{name}.inter.json").write_text(json.dumps(sequences))
    return directory


TINY_ITEMS = {
    "0": _item("Acme claw hammer"),
    "1": _item("Beta tape measure", brand="Beta", categories="Dept,Test, Measure & Inspect,Tapes"),
    "2": _item("BETA level", brand="BETA ", categories="Dept,Test, Measure & Inspect,Levels"),
    "3": _item("Acme nails"),
    "4": _item("Gamma Pro glue gun 40W", brand="", categories=""),  # brand from the title
    "5": _item("Unbranded widget", brand="", categories="Dept,Tools"),  # stays unbranded
    "6": _item("Gamma Pro glue sticks", brand="Gamma Pro"),
    "7": _item("Beta square", brand="Beta", categories="Dept,Test, Measure & Inspect,Tapes"),
}
TINY_SEQUENCES = {
    "0": [0, 1, 2, 3],  # test = Acme (3), validation = Beta (2), train = Beta (1)
    "1": [3, 1, 0],  # test = Acme, validation = Beta, no train label
    "2": [6, 4],  # test = Gamma Pro (from title), no validation
    "3": [1],  # no label
    "4": [0, 6, 5],  # test item unbranded: no test label
}


@pytest.fixture
def tiny(tmp_path):
    directory = write_dataset(tmp_path / "tiny", TINY_ITEMS, TINY_SEQUENCES)
    world, summary = build_world(load_dataset(directory), AmazonConfig(end_date="2020-01-10",
                                                                       embedding_dim=4))
    return world, summary


def brand_of(world: schema.World, name: str) -> int:
    return world.brands.filter(pl.col("name") == name)["brand_id"].item()


# --- format errors, named by file and record --------------------------------------------------

@pytest.mark.parametrize("items, sequences, fragments", [
    ({"0": {"title": "x", "brand": "b", "categories": "c"}}, {"0": [0]},
     ["Tiny.item.json", "record '0'", "missing field 'description'"]),
    ({"0": _item("x"), "1": _item("y")}, {"0": [0, 1], "7": [1, 9]},
     ["Tiny.inter.json", "record '7'", "item id 9", "position 1", "not defined in"]),
    ({"0": _item("x")}, {"0": [0], "5": []}, ["Tiny.inter.json", "record '5'", "non-empty list"]),
    ({"0": _item("x")}, {"0": [0, "0"]}, ["Tiny.inter.json", "record '0'", "not an integer"]),
    ({"a": _item("x")}, {"0": [0]}, ["Tiny.item.json", "record 'a'", "non-negative integer"]),
    ({"0": dict(_item("x"), title=3)}, {"0": [0]}, ["record '0'", "field 'title' must be a string"]),
])
def test_malformed_files_name_the_file_and_record(tmp_path, items, sequences, fragments):
    write_dataset(tmp_path, items, sequences)
    with pytest.raises(AmazonFormatError) as error:
        load_dataset(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_invalid_json_and_missing_files_are_clear(tmp_path):
    with pytest.raises(AmazonFormatError, match="expected exactly one"):
        load_dataset(tmp_path)
    write_dataset(tmp_path, {"0": _item("x")}, {"0": [0]})
    (tmp_path / "Tiny.inter.json").write_text('{"0": [0,')
    with pytest.raises(AmazonFormatError, match=r"Tiny.inter.json: not valid JSON .* line 1"):
        load_dataset(tmp_path)


# --- adapter on a hand-made dataset -----------------------------------------------------------

def test_brands_are_normalised_and_taken_from_titles(tiny):
    world, summary = tiny
    assert sorted(world.brands["name"]) == ["Acme", "Beta", "Gamma Pro"]  # "BETA " merged into the commoner "Beta"
    items = world.items.sort("item_id")
    assert items["brand_id"][2] == brand_of(world, "Beta")
    assert items["brand_id"][4] == brand_of(world, "Gamma Pro")
    assert items["brand_id"][5] is None
    assert (items["advertiser_id"] == items["brand_id"]).fill_null(True).all()
    assert summary["items_brand_from_title"] == 1 and summary["items_without_brand"] == 1


SPELLED_ITEMS = {
    "0": _item("B&C Eagle staples", brand="B&C Eagle"),
    "1": _item("B&C Eagle nails", brand="B & C Eagle"),
    "2": _item("B&C Eagle brads", brand="B&C Eagle"),
    "3": _item("Oral-B brush", brand="Oral-B"),
    "4": _item("Oral B brush heads", brand="Oral B"),
    "5": _item("Oral-B floss", brand="Generic"),  # placeholder: brand from the title
    "6": _item("Cabinet hinge", brand="Generic"),  # placeholder, no brand in the title
    "7": _item("Dust mask", brand=" N/A "),
    "8": _item("Generic hammer", brand=""),  # a placeholder in the title names no brand either
    "9": _item("3M-1860 respirator", brand=""),  # title word ends at the hyphen
    "10": _item("3M tape", brand="3M"),
    "11": _item("Zephyr Lab kit", brand="Zephyr Lab"),
    "12": _item("Zephyr Labs kit", brand="Zephyr Labs"),  # one letter apart: another brand
    "13": _item("B and C Eagle rivets", brand="b and c EAGLE"),
}
SPELLED_SEQUENCES = {"0": [0, 1, 2], "1": [3, 6], "2": [4, 5], "3": [11, 12, 9]}


@pytest.fixture
def spelled(tmp_path):
    directory = write_dataset(tmp_path / "spelled", SPELLED_ITEMS, SPELLED_SEQUENCES)
    return build_world(load_dataset(directory), AmazonConfig(end_date="2020-01-10", embedding_dim=4))


def test_spellings_of_one_brand_are_one_advertiser(spelled):
    world, summary = spelled
    # "B&C Eagle" is the most frequent of its 3 spellings (2 items to 1 and 1); "Oral B" and
    # "Oral-B" tie 1:1 (item 5's title adds no spelling): the first in sort order is shown.
    assert sorted(world.brands["name"]) == ["3M", "B&C Eagle", "Oral B", "Zephyr Lab", "Zephyr Labs"]
    assert world.advertisers.height == world.brands.height == summary["brands"] == 5
    brand_of_item = dict(world.items.select("item_id", "brand_id").iter_rows())
    assert {brand_of_item[i] for i in (0, 1, 2, 13)} == {brand_of(world, "B&C Eagle")}
    assert brand_of_item[3] == brand_of_item[4] == brand_of_item[5] == brand_of(world, "Oral B")
    assert brand_of_item[9] == brand_of(world, "3M")
    assert world.labels.filter(pl.col("user_id") == 0)["advertiser_id"].to_list() == [brand_of(world, "B&C Eagle")] * 2
    assert summary["brand_spellings"] == 8  # the distinct values that name a brand


def test_placeholder_brands_count_as_missing(spelled):
    world, summary = spelled
    brand_of_item = dict(world.items.select("item_id", "brand_id").iter_rows())
    assert [brand_of_item[i] for i in (6, 7, 8)] == [None, None, None]
    assert not set(world.brands["name"]) & {"Generic", "N/A"}
    assert summary["items_brand_placeholder"] == 3  # items 5, 6, 7
    assert summary["items_brand_from_title"] == 2 and summary["items_without_brand"] == 3
    # User 1's last purchase is a "Generic" hinge: no test label; user 2's is Oral B by its title.
    test_labels = dict(world.labels.filter(pl.col("role") == "test").select("user_id", "advertiser_id").iter_rows())
    assert 1 not in test_labels and test_labels[2] == brand_of(world, "Oral B")
    assert summary["labels_dropped_unbranded"] == {"test": 1, "validation": 0, "train": 0}


def test_placeholder_brands_are_a_checked_config_field():
    assert "generic" in AmazonConfig().placeholder_brands and "unknown" in AmazonConfig().placeholder_brands
    with pytest.raises(ValueError, match="placeholder_brands"):
        AmazonConfig(placeholder_brands=("generic", "--"))


def test_category_names_with_commas_are_not_split(tiny):
    world, _ = tiny
    assert set(world.categories.filter(pl.col("level") == 1)["name"]) == {"Tools", "Test, Measure & Inspect"}
    assert set(world.categories.filter(pl.col("level") == 2)["name"]) == {"Hammers", "Tapes", "Levels", "Tools"}
    leaf_of_tape = world.items.filter(pl.col("item_id") == 1)["category_id"].item()
    parent = world.categories.filter(pl.col("category_id") == leaf_of_tape)["parent_id"].item()
    assert world.categories.filter(pl.col("category_id") == parent)["name"].item() == "Test, Measure & Inspect"


def test_labels_follow_leave_one_out_roles(tiny):
    world, summary = tiny
    labels = world.labels.sort("user_id", "anchor_date")
    roles = {(u, str(r)): (a, d) for u, r, a, d in
             labels.select("user_id", "role", "advertiser_id", "anchor_date").iter_rows()}
    acme, beta, gamma = (brand_of(world, n) for n in ("Acme", "Beta", "Gamma Pro"))
    assert roles[(0, "test")] == (acme, date(2020, 1, 9))
    assert roles[(0, "validation")] == (beta, date(2020, 1, 8))
    assert roles[(0, "train")] == (beta, date(2020, 1, 7))
    assert roles[(1, "test")] == (acme, date(2020, 1, 9)) and roles[(1, "validation")][0] == beta
    assert roles[(2, "test")] == (gamma, date(2020, 1, 9)) and (2, "validation") not in roles
    assert not labels.filter(pl.col("user_id") == 3).height
    assert (4, "test") not in roles and (4, "validation") in roles
    assert summary["labels_dropped_unbranded"] == {"test": 1, "validation": 0, "train": 0}
    splits = dict(world.splits.select("user_id", "split").iter_rows())
    assert splits == {0: "eval", 1: "eval", 2: "eval", 3: "train", 4: "train"}


def test_events_are_dated_one_day_apart_ending_on_end_date(tiny):
    world, _ = tiny
    user0 = world.events.filter(pl.col("user_id") == 0).sort("ts")
    assert user0["item_id"].to_list() == [0, 1, 2, 3]
    assert user0["ts"].dt.date().to_list() == [date(2020, 1, d) for d in (7, 8, 9, 10)]
    last_days = world.events.group_by("user_id").agg(pl.col("ts").max().dt.date())["ts"]
    assert (last_days == date(2020, 1, 10)).all()
    assert (world.events["kind"] == "attributed_conversion").all()
    assert world.events.filter(pl.col("item_id") == 1)["text"][0] == "Beta tape measure"


def test_preset_pool_never_counts_a_test_purchase(tiny):
    world, _ = tiny
    assert world.preset_pool["day"].max() == date(2020, 1, 9)
    last = world.preset_pool.filter(pl.col("day") == date(2020, 1, 9)).sort("rank")
    names = dict(world.brands.select("brand_id", "name").iter_rows())
    # Through Jan 9 (every purchase but each user's last): Acme 3, Beta 3, Gamma Pro 2; ties by id.
    assert [(names[a], r) for a, r in last.select("advertiser_id", "revenue").iter_rows()] == [
        ("Acme", 3.0), ("Beta", 3.0), ("Gamma Pro", 2.0)]


def test_baselines_are_exact_on_hand_made_data(tiny):
    world, _ = tiny
    test = held_out_labels(world.labels, "test")
    popularity = popularity_predictions(world.events, test, world.advertisers, k=2)
    recent = most_recent_predictions(world.events, test, world.advertisers, k=20)
    acme, beta, gamma = (brand_of(world, n) for n in ("Acme", "Beta", "Gamma Pro"))
    # Purchases dated on or before the test anchor: Acme 3, Beta 3, Gamma Pro 2 (ties by id).
    assert popularity.filter(pl.col("user_id") == 0)["advertiser_id"].to_list() == [acme, beta]
    assert recent.filter(pl.col("user_id") == 0)["advertiser_id"].to_list() == [beta, acme]
    assert recent.filter(pl.col("user_id") == 1)["advertiser_id"].to_list() == [beta, acme]
    assert recent.filter(pl.col("user_id") == 2)["advertiser_id"].to_list() == [gamma]
    assert popularity["source"].unique().to_list() == ["popularity"]
    table = results_table(pl.concat([popularity, recent]), test, ResultsConfig())
    rows = {r["method"]: r for r in table.iter_rows(named=True)}
    # Test labels: u0 Acme, u1 Acme, u2 Gamma. most_recent ranks: 2, 2, 1; popularity: 1, 1, absent.
    assert rows["most_recent_no_fill"]["recall_at_1"] == pytest.approx(1 / 3)
    assert rows["most_recent_no_fill"]["recall_at_5"] == pytest.approx(1.0)
    assert rows["most_recent_no_fill"]["delta_vs_popularity_at_1"] == pytest.approx(1 / 3 - 2 / 3)
    assert rows["popularity"]["recall_at_1"] == pytest.approx(2 / 3)
    assert rows["popularity"]["recall_at_5"] == pytest.approx(2 / 3)
    # first-ranked: popularity Acme for u0 and u1 (u2 gets none); most recent Beta, Beta, Gamma
    assert rows["popularity"]["distinct_first"] == 1 and rows["most_recent_no_fill"]["distinct_first"] == 2
    # every reference present gets its own columns: most recent as a reference, popularity against it
    both = results_table(pl.concat([popularity, recent]), test, ResultsConfig(references=("popularity",
                                                                                          "most_recent_no_fill")))
    assert {r["method"]: r["delta_vs_most_recent_no_fill_at_1"] for r in both.iter_rows(named=True)
            }["popularity"] == pytest.approx(2 / 3 - 1 / 3)
    assert "delta_vs_sasrec_at_1" not in table.columns  # absent references get no columns
    # Wilson for the share of 3 users, Tango for the paired difference (1 user each way at Recall@1)
    assert (rows["most_recent_no_fill"]["recall_at_5_low"], rows["most_recent_no_fill"]["recall_at_5_high"]
            ) == pytest.approx(proportion_interval(3, 3))
    assert (rows["most_recent_no_fill"]["delta_vs_popularity_at_1_low"],
            rows["most_recent_no_fill"]["delta_vs_popularity_at_1_high"]
            ) == pytest.approx(paired_difference_interval(np.array([0, 0, 1]), np.array([1, 1, 0])))
    # the reference against itself: no discordant user, yet ±z²/(n + z²), not [0, 0]
    z2 = 1.959963984540054**2
    assert (rows["popularity"]["delta_vs_popularity_at_1_low"],
            rows["popularity"]["delta_vs_popularity_at_1_high"]) == pytest.approx(
        (-z2 / (3 + z2), z2 / (3 + z2)))


def test_score_method_counts_unmapped_rows_and_users_without_list():
    labels = pl.DataFrame({"user_id": [1, 2, 3, 4], "anchor_date": [date(2020, 1, 1)] * 4,
                           "advertiser_id": [10, 20, 30, 40]})
    predictions = schema.conform(pl.DataFrame({
        "user_id": [1, 1, 2, 2, 3], "anchor_date": [date(2020, 1, 1)] * 5, "rank": [1, 2, 1, 2, 1],
        "advertiser_id": [10, 11, None, 20, 31], "advertiser_name": ["a", "b", "??", "c", "d"],
        "source": ["m"] * 5,
    }), schema.PREDICTIONS)
    assert label_ranks(predictions, labels).tolist() == [1, 2, 0, 0]
    row = score_method(predictions, labels, (1, 2))
    assert row["recall_at_1"] == 0.25 and row["recall_at_2"] == 0.5
    assert (row["recall_at_2_low"], row["recall_at_2_high"]) == pytest.approx(proportion_interval(2, 4))
    assert row["with_list_rate"] == 0.75 and row["unmapped_rate"] == 0.2


def test_results_show_the_parse_rate_of_generated_methods_only(tiny):
    world, _ = tiny
    test = held_out_labels(world.labels, "test")
    predictions = pl.concat([
        popularity_predictions(world.events, test, world.advertisers),
        popularity_predictions(world.events, test, world.advertisers).with_columns(pl.lit("llm").alias("source")),
    ])
    config = ResultsConfig()
    table = results_table(predictions, test, config,
                          conversion_rates={"llm": {"parse_rate": 0.875, "unmapped_rate": 0.125}})
    rows = {r["method"]: r for r in table.iter_rows(named=True)}
    assert rows["llm"]["parse_rate"] == 0.875 and rows["popularity"]["parse_rate"] is None
    assert rows["llm"]["unmapped_rate"] == 0.125 and rows["popularity"]["unmapped_rate"] == 0.0
    markdown = to_markdown(table, config.ks, "t", config.references)
    assert "| parsed |" in markdown and "| 0.8750 |" in markdown and "| — |" in markdown


def test_write_amazon_world_records_the_time_axis_and_skips_when_complete(tmp_path):
    data = write_dataset(tmp_path / "data", TINY_ITEMS, TINY_SEQUENCES)
    run = tmp_path / "run"
    world = write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    manifest = json.loads((run / "manifest.json").read_text())
    assert "order stands in for time" in manifest["stages"]["world"]["config"]["notes"]["time_axis"]
    record = (run / "world" / "stage.json").stat().st_mtime_ns
    again = write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    assert (run / "world" / "stage.json").stat().st_mtime_ns == record
    assert again.labels.equals(world.labels)
    baselines = write_baselines(run)
    test_anchor = world.labels.filter(pl.col("role") == "test")["anchor_date"].max()
    (run / "other").mkdir()
    baselines.filter(pl.col("anchor_date") == test_anchor).with_columns(
        pl.lit("test_only").alias("source")).write_parquet(run / "other" / "predictions.parquet")
    baselines.filter(pl.col("source") == "popularity").write_parquet(run / "other" / "predictions_2.parquet")
    (run / "again").mkdir()
    baselines.filter(pl.col("source") == "popularity").write_parquet(run / "again" / "predictions.parquet")
    table = write_results(run, ResultsConfig())
    methods = {role: set(table.filter(pl.col("role") == role)["method"]) for role in ("test", "validation")}
    popularity = {"popularity (baselines)", "popularity (other)", "popularity (again)"}
    assert methods == {"test": {"most_recent_no_fill", "test_only"} | popularity,
                       "validation": {"most_recent_no_fill"} | popularity}
    assert "Recall@20" in (run / "results" / "next_brand.md").read_text()


def test_a_sampled_stage_is_scored_on_its_sample_beside_the_full_methods(tmp_path):
    data = write_dataset(tmp_path / "data", TINY_ITEMS, TINY_SEQUENCES)
    run = tmp_path / "run"
    world = write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    baselines = write_baselines(run)
    test = held_out_labels(world.labels, "test")
    sampled = test.head(2).select("user_id", "anchor_date")
    (run / "llm_sampled").mkdir()
    sampled.write_parquet(run / "llm_sampled" / "requests.parquet")
    baselines.filter(pl.col("source") == "popularity").join(sampled, on=["user_id", "anchor_date"], how="semi") \
        .with_columns(pl.lit("llm").alias("source")).write_parquet(run / "llm_sampled" / "predictions.parquet")
    table = write_results(run, ResultsConfig())
    full = table.filter(pl.col("sample").is_null(), pl.col("role") == "test")
    on_sample = table.filter(pl.col("sample") == "llm_sampled")
    assert "llm" not in set(full["method"]) and (full["users"] == test.height).all()
    assert set(on_sample["method"]) == {"llm", "popularity", "most_recent_no_fill"}
    assert (on_sample["users"] == 2).all()
    rows = {r["method"]: r for r in on_sample.iter_rows(named=True)}
    assert rows["llm"]["recall_at_20"] == rows["popularity"]["recall_at_20"]  # the same lists
    assert "sampled by llm_sampled (2 users)" in (run / "results" / "next_brand.md").read_text()


@st.composite
def random_datasets(draw):
    brands = draw(st.lists(st.sampled_from(["Acme", "Beta", ""]), min_size=2, max_size=6))
    sequences = draw(st.lists(
        st.lists(st.integers(0, len(brands) - 1), min_size=1, max_size=6, unique=True),
        min_size=1, max_size=8))
    return brands, sequences


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_datasets())
def test_labels_hold_the_leave_one_out_rules_on_random_datasets(tmp_path_factory, drawn):
    brands, sequences = drawn
    items = {str(i): _item(f"item number {i}", brand=b) for i, b in enumerate(brands)}
    directory = write_dataset(tmp_path_factory.mktemp("random"), items,
                              {str(u): seq for u, seq in enumerate(sequences)})
    world, _ = build_world(load_dataset(directory), AmazonConfig(end_date="2020-03-01", embedding_dim=2))
    assert world.events.height == sum(map(len, sequences))
    names = dict(world.brands.select("name", "brand_id").iter_rows())
    expected = {}
    for user, sequence in enumerate(sequences):
        for position in range(1, len(sequence)):
            brand = brands[sequence[position]]
            if brand:
                from_end = len(sequence) - 1 - position
                role = "test" if from_end == 0 else "validation" if from_end == 1 else "train"
                expected[(user, position)] = (role, names[brand], date(2020, 2, 29) - timedelta(days=from_end))
    got = {(u, i): (r, a, d) for u, i, r, a, d in world.labels.join(
        world.events.select("user_id", "item_id", "position"), on=["user_id", "item_id"]
    ).select("user_id", "position", "role", "advertiser_id", "anchor_date").iter_rows()}
    assert got == expected


# --- the full dataset ---------------------------------------------------------------------------

def test_full_dataset_loads_into_valid_world_tables(amazon):
    dataset, world, summary = amazon
    assert world.users.height == 8317 and world.events.height == 58492
    assert world.items.height == 4344
    assert summary["brands"] == world.advertisers.height == world.brands.height
    assert world.items["embedding"].dtype == pl.Array(pl.Float32, 64)
    for name in schema.WORLD_TABLES:
        if name.endswith("_truth"):
            assert getattr(world, name).is_empty()


def test_full_dataset_brand_spellings_and_placeholders(amazon):
    dataset, world, summary = amazon
    # 1,544 spellings that name a brand; case variants and 6 brands spelled twice merge into 1,531.
    assert summary["brand_spellings"] == 1544 and summary["brands"] == 1531
    names = set(world.brands["name"])
    merged = {"B&C Eagle", "Oral B", "Reprap Guru", "Shop-Vac", "Taulman 3D", "Weld-on"}
    assert merged <= names
    assert not names & {"B & C Eagle", "Oral-B", "REPRAPGURU", "Shop Vac", "taulman3D", "Weldon", "Generic", "Unknown"}
    assert len({normalise_name(name) for name in names}) == len(names)  # no two advertisers share a key
    merged_ids = world.brands.filter(pl.col("name").is_in(merged))["brand_id"]
    assert world.labels.filter(pl.col("role") == "test", pl.col("advertiser_id").is_in(merged_ids.implode())).height == 50
    # 16 "Generic"/"Unknown" items: 6 take their title's brand, 10 stay unbranded; of the 9 test,
    # 18 validation and 94 train labels they gave, 4, 12 and 40 keep a (title) brand.
    assert summary["items_brand_placeholder"] == 16
    assert summary["items_brand_from_title"] == 8 + 6 and summary["items_without_brand"] == 4 + 10
    assert summary["labels"] == {"train": 33470, "validation": 8306, "test": 8307}
    assert summary["labels_dropped_unbranded"] == {"test": 5 + 5, "validation": 5 + 6, "train": 17 + 54}


def test_full_dataset_split_rules(amazon):
    dataset, world, summary = amazon
    lengths = dataset.purchases.group_by("user_id").len()
    brand_of_item = world.items.select("item_id", "brand_id")
    held_out = (
        dataset.purchases.join(lengths, on="user_id").join(brand_of_item, on="item_id")
        .filter(pl.col("len") >= 3, pl.col("position") >= pl.col("len") - 2)
    )
    branded = held_out.filter(pl.col("brand_id").is_not_null())
    per_user_role = world.labels.filter(pl.col("role") != "train").group_by("user_id", "role").len()
    assert (per_user_role["len"] == 1).all()
    assert per_user_role.height == branded.height  # one label per branded held-out purchase
    assert summary["labels_dropped_unbranded"]["test"] + summary["labels_dropped_unbranded"][
        "validation"] == held_out.height - branded.height
    assert world.labels.filter(pl.col("role") == "test")["anchor_date"].unique().to_list() == [date(2018, 9, 30)]
    assert world.labels.filter(pl.col("role") == "validation")["anchor_date"].unique().to_list() == [date(2018, 9, 29)]


def test_full_dataset_history_never_holds_the_held_out_items(amazon):
    dataset, world, _ = amazon
    lengths = dataset.purchases.group_by("user_id").len()
    for role, offset in (("test", 1), ("validation", 2)):
        labels = world.labels.filter(pl.col("role") == role)
        history = labels.select("user_id", "anchor_date", pl.col("item_id").alias("label_item")).join(
            world.events.select("user_id", "ts", "item_id"), on="user_id"
        ).filter(pl.col("ts").dt.date() <= pl.col("anchor_date"))
        assert history.filter(pl.col("item_id") == pl.col("label_item")).is_empty()
        sizes = history.group_by("user_id").len().join(lengths, on="user_id", suffix="_all")
        assert (sizes["len"] == sizes["len_all"] - offset).all()
    train = world.labels.filter(pl.col("role") == "train").group_by("user_id").agg(pl.col("ts").max())
    validation = world.labels.filter(pl.col("role") == "validation").select("user_id", "ts")
    assert (train.join(validation, on="user_id", suffix="_v").select(pl.col("ts") < pl.col("ts_v"))
            .to_series().all())


def _reference_recalls(dataset, world, ks=(1, 5, 20)) -> dict[str, dict[int, float]]:
    """Popularity and most-recent recall on test labels, recomputed with plain Python from the raw
    sequences (independent of the polars implementation)."""
    brand = dict(world.items.select("item_id", "brand_id").iter_rows())
    sequences = dataset.purchases.group_by("user_id", maintain_order=True).agg("item_id").rows()
    counts = Counter(brand[i] for _, seq in sequences for i in seq[:-1] if brand[i] is not None)
    popular = [b for b, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))]
    hits = {"popularity": Counter(), "most_recent_no_fill": Counter()}
    users = 0
    for _, seq in sequences:
        target = brand[seq[-1]]
        if len(seq) < 2 or target is None:
            continue
        users += 1
        recent = list(dict.fromkeys(brand[i] for i in reversed(seq[:-1]) if brand[i] is not None))
        for name, ranked in (("popularity", popular), ("most_recent_no_fill", recent)):
            for k in ks:
                hits[name][k] += target in ranked[:k]
    return {name: {k: hits[name][k] / users for k in ks} for name in hits}


def test_full_dataset_baselines_match_an_independent_computation(amazon):
    dataset, world, _ = amazon
    test = held_out_labels(world.labels, "test")
    predictions = pl.concat([
        popularity_predictions(world.events, test, world.advertisers),
        most_recent_predictions(world.events, test, world.advertisers),
    ])
    table = results_table(predictions, test, ResultsConfig())
    reference = _reference_recalls(dataset, world)
    for row in table.iter_rows(named=True):
        for k in (1, 5, 20):
            assert row[f"recall_at_{k}"] == pytest.approx(reference[row["method"]][k], abs=1e-12)


def test_full_dataset_sasrec_loss_goes_down(amazon):
    from llm_predictor.sasrec import SASRecConfig, SASRecPredictor

    _, world, _ = amazon
    users = world.users["user_id"].head(1500)
    events = world.events.filter(pl.col("user_id").is_in(users))
    validation = world.labels.filter(pl.col("role") == "validation", pl.col("user_id").is_in(users))
    predictor = SASRecPredictor(SASRecConfig(max_epochs=3, patience=3, hidden_dim=32)).fit(
        events, validation, world.advertisers, progress=False)
    losses = [row["train_loss"] for row in predictor.history_]
    assert losses[-1] < losses[0]


@pytest.mark.slow  # minutes on a shared 2-core CPU: tokenizer, CPT and SFT steps of the nano model
def test_full_dataset_llm_pipeline_trains_on_train_labels_and_evaluates_test_labels(amazon, tmp_path):
    from dataclasses import replace

    from llm_predictor.config import resolve_config
    from llm_predictor.stages import stage_behaviour, stage_pretrain, stage_sft
    from llm_predictor.evaluate import EvalConfig, evaluation_requests
    from synthetic_data.real.llm_sample import predict_test_sample

    _, world, _ = amazon
    users = world.users["user_id"].head(200).implode()
    sample = replace(world, **{name: getattr(world, name).filter(pl.col("user_id").is_in(users))
                               for name in ("users", "events", "labels", "splits")})
    run = tmp_path / "amazon_sample"
    sample.write(run / "world")
    config = resolve_config("nano", None, None)
    stage_pretrain(run, config, force=False, show_progress=False)
    stage_behaviour(run, config, force=False, show_progress=False)
    summary = stage_sft(run, config, "list", force=False, show_progress=False)
    assert summary["steps"] == config.sft.train.max_steps
    assert summary["examples"] == (sample.labels["role"] == "train").sum() > 0
    assert summary["rehearsal_documents"] > 0  # every user's purchases before the validation label
    requests = evaluation_requests(sample, EvalConfig())
    test = held_out_labels(sample.labels, "test")
    assert requests.sort("user_id").equals(test.select("user_id", "anchor_date").sort("user_id"))
    predicted = predict_test_sample(run, config, "sft_list", n_users=3, show_progress=False)
    assert predicted["users"] == predicted["outputs"] == 3
    stage = run / "llm_predict_sft_list_test_sample3"
    sampled = pl.read_parquet(stage / "requests.parquet")
    assert sampled.join(test, on=["user_id", "anchor_date"], how="anti").is_empty() and sampled.height == 3
    assert pl.read_parquet(stage / "predictions.parquet")["user_id"].is_in(sampled["user_id"].implode()).all()


def test_trained_baselines_predict_every_test_label_and_skip_when_complete(tmp_path):
    from dataclasses import replace

    from synthetic_data.real.trained_baselines import default_config, write_trained_baselines

    data = write_dataset(tmp_path / "data", TINY_ITEMS, TINY_SEQUENCES)
    run = tmp_path / "run"
    world = write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    config = replace(default_config(), n_estimators=5, min_child_samples=1)
    predictions = write_trained_baselines(run, config)
    test = held_out_labels(world.labels, "test").select("user_id", "anchor_date")
    for source in ("most_recent", "lightgbm_pairs"):
        listed = predictions.filter(pl.col("source") == source).select("user_id", "anchor_date").unique()
        assert listed.sort("user_id").equals(test.sort("user_id"))
    record = json.loads((run / "llm_baselines" / "stage.json").read_text())
    assert record["config"]["train_labels"] == "role == train"
    stamp = (run / "llm_baselines" / "stage.json").stat().st_mtime_ns
    write_trained_baselines(run, config)
    assert (run / "llm_baselines" / "stage.json").stat().st_mtime_ns == stamp


def test_results_command_pairs_every_method_with_each_reference_named(tmp_path):
    from typer.testing import CliRunner

    from synthetic_data.real.cli import app

    data = write_dataset(tmp_path / "data", TINY_ITEMS, TINY_SEQUENCES)
    run = tmp_path / "run"
    write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    write_baselines(run)
    result = CliRunner().invoke(app, ["results", "--run", str(run), "--reference", "most_recent_no_fill",
                                      "--reference", "sasrec"])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(run / "results" / "next_brand.parquet")
    assert "delta_vs_most_recent_no_fill_at_20" in table.columns and "Δ Recall@20 vs most_recent_no_fill" in (
        run / "results" / "next_brand.md").read_text()
    assert not any("sasrec" in column for column in table.columns)
    assert "no method ['sasrec']" in " ".join(result.output.split())  # named, though this run has no SASRec

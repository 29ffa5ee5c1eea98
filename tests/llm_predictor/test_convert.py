"""Tests of llm_predictor/convert.py: exact, normalised, fuzzy and unmapped names, and counts."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from synthetic_data.schema import ADVERTISERS, PREDICTED_INTERESTS, PREDICTIONS, conform, validate

from llm_predictor.convert import NameConverter, convert_predictions, interests_from_generations
from llm_predictor.prompts import list_target

ANCHOR = date(2026, 3, 1)


@pytest.fixture(scope="module")
def advertisers() -> pl.DataFrame:
    names = ["Acme Outdoor", "Bluebird Co.", "Cedar & Sons", "Délice Bakery", "Zephyr Labs", "Zephyr Lab"]
    return conform(pl.DataFrame({
        "advertiser_id": list(range(1, 7)), "name": names,
        "domain": ["acme.com", "bluebird.shop", "cedarsons.co", "delice.com", "zephyr.io", "zephyrlab.io"],
        "is_active": [True] * 6, "has_active_spend": [True] * 6, "campaign_type": ["OCPM"] * 6,
        "bid": [1.0] * 6, "target_roas": [None] * 6, "daily_budget": [10.0] * 6, "category_id": [1] * 6,
        "product_lines": [["x"]] * 6,
    }), ADVERTISERS, "advertisers")


@pytest.fixture(scope="module")
def converter(advertisers) -> NameConverter:
    return NameConverter(advertisers, threshold=0.75)


@pytest.mark.parametrize(("name", "advertiser_id", "kind"), [
    ("Acme Outdoor", 1, "exact"),
    ("acme outdoor", 1, "normalised"),
    ("  ACME-OUTDOOR!! ", 1, "normalised"),
    ("Cedar and Sons", 3, "normalised"),
    ("Cedar&Sons", 3, "normalised"),  # spacing around '&' does not split a name
    ("AcmeOutdoor™", 1, "normalised"),
    ("Delice Bakery", 4, "normalised"),
    ("bluebird.shop", 2, "normalised"),  # the advertiser's web domain
    ("Acme Outdoors", 1, "fuzzy"),
    ("Bluebird Company", 2, "fuzzy"),
    ("Totally Unknown Store", None, "unmapped"),
    ("", None, "unmapped"),
    ("Zephyr Labs", 5, "exact"),
    ("zephyr lab", 6, "normalised"),
])
def test_names_map_by_kind(converter, name, advertiser_id, kind):
    [converted] = converter.convert([name])
    assert (converted.advertiser_id, converted.kind) == (advertiser_id, kind)


def test_every_generated_advertiser_keeps_its_own_key(tiny_world):
    # A key shared by two advertisers would send both to fuzzy matching: the generated names and
    # domains must stay apart under `normalise_name`, so every respelling maps back to its owner.
    advertisers = tiny_world.advertisers.sort("advertiser_id")
    respelt = [name.upper().replace(" ", "-") for name in advertisers["name"]]
    converted = NameConverter(advertisers).convert(respelt)
    assert [c.kind for c in converted] == ["normalised"] * advertisers.height
    assert [c.advertiser_id for c in converted] == advertisers["advertiser_id"].to_list()


def test_threshold_controls_fuzzy_matches(advertisers):
    strict = NameConverter(advertisers, threshold=0.99)
    assert strict.convert(["Acme Outdoors"])[0].kind == "unmapped"
    with pytest.raises(ValueError, match="threshold"):
        NameConverter(advertisers, threshold=0.0)


def _generations(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": list(range(1, len(texts) + 1)), "anchor_date": [ANCHOR] * len(texts),
                         "text": texts})


def test_convert_predictions_counts_every_malformed_output(converter):
    texts = [
        list_target(["Acme Outdoor", "Unknown Shop", "Acme-Outdoor", "Bluebird Co.", "acme.com"], ["tents"]),
        "<answer><advertiser_names>Cedar and Sons|Cedar and Sons|Acme Outdoors</advertiser_names></answer>",
        "I cannot help with that.",
        None,
    ]
    predictions, counts = convert_predictions(_generations(texts), converter, source="llm")
    validate(predictions, PREDICTIONS, "predictions")
    rows = predictions.select("user_id", "rank", "advertiser_id").rows()
    # User 1: "Acme-Outdoor" repeats "Acme Outdoor" (one key); "acme.com" is another name of the
    # same advertiser, so it is dropped from the list; ranks stay compact.
    assert rows == [(1, 1, 1), (1, 2, 2), (2, 1, 3), (2, 2, 1)]
    assert predictions["source"].unique().to_list() == ["llm"]
    assert counts.outputs == 4 and counts.parsed == 2
    assert counts.names == 4 + 2 + 1  # user 3's text is salvaged as one (unmapped) name
    assert (counts.exact, counts.normalised, counts.fuzzy, counts.unmapped) == (2, 2, 1, 2)
    assert counts.duplicate_names == 2 and counts.duplicate_ids == 1
    assert counts.issues["missing_advertiser_tag"] == 2 and counts.issues["too_few_names"] == 4
    assert counts.parse_rate == 0.5 and counts.unmapped_rate == pytest.approx(2 / 7)
    assert counts.exact_count_outputs == 0


def test_single_name_rows_are_read_as_a_ranked_list(converter):
    beams = pl.DataFrame({
        "user_id": [1, 1, 1, 1, 2], "anchor_date": [ANCHOR] * 5, "rank": [2, 1, 3, 4, 1],
        "text": ["Bluebird Co.", "Acme Outdoor", "acme outdoor", "Nowhere", ""],
    })
    predictions, counts = convert_predictions(beams, converter, source="sft_beam")
    assert predictions.select("user_id", "rank", "advertiser_id").rows() == [(1, 1, 1), (1, 2, 2)]
    assert counts.outputs == 2 and counts.parsed == 1
    assert counts.unmapped == 1 and counts.duplicate_ids == 1


def test_predictions_are_capped_at_max_names(converter):
    text = list_target(["Acme Outdoor", "Bluebird Co.", "Cedar & Sons"], [])
    predictions, _ = convert_predictions(_generations([text]), converter, source="llm", max_names=2)
    assert predictions["rank"].to_list() == [1, 2]


def test_two_xml_outputs_for_one_user_are_rejected(converter):
    frame = _generations(["a", "b"]).with_columns(pl.lit(1).alias("user_id"))
    with pytest.raises(ValueError, match="two XML outputs"):
        convert_predictions(frame, converter, source="llm")


def test_interests_table(converter):
    table = interests_from_generations(_generations([list_target(["Acme Outdoor"], ["tents", "shoes"]), "junk"]))
    validate(table, PREDICTED_INTERESTS, "predicted_interests")
    assert table.select("user_id", "rank", "interest").rows() == [(1, 1, "tents"), (1, 2, "shoes")]

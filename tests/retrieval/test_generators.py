"""Candidate generators: one contract suite over every generator, then each one's own rules."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blending.blend import BlendConfig, blend
from retrieval.config import GeneratorConfig
from retrieval.evaluate import evaluation_anchor, evaluation_requests, window_start
from retrieval.generators import LlmAdvertiserGenerator, MainGenerator, PopularityGenerator
from retrieval.index import ItemIndex
from retrieval.requests import REQUESTS
from retrieval.train import SettledValues, TwoTowerRetriever
from synthetic_data.schema import CANDIDATES, PREDICTIONS, SchemaError, conform, validate

from tests.retrieval.conftest import small_config

QUOTA = 10


@pytest.fixture(scope="module")
def fitted(toy_tables):
    config = small_config("clicks", epochs=2)
    events = toy_tables["events"]
    anchor = evaluation_anchor(events, config.evaluation)
    start = window_start(anchor)
    train_users = toy_tables["splits"].filter(pl.col("split") == "train")["user_id"]
    retriever = TwoTowerRetriever(config).fit(events, toy_tables["users"], toy_tables["items"],
                                              train_users, start)
    index = ItemIndex(config.index).fit(retriever.item_vectors(), retriever.items_.advertiser_ids)
    history = retriever.history(events.filter(pl.col("ts") < start), toy_tables["users"])
    requests = evaluation_requests(toy_tables["splits"], anchor)
    return {"config": config, "retriever": retriever, "index": index, "history": history,
            "requests": requests, "anchor": anchor, "start": start, "tables": toy_tables}


def _predictions(rows: list[tuple]) -> pl.DataFrame:
    """(user, anchor_date, rank, advertiser or None) rows as a PREDICTIONS table."""
    user, anchor, rank, advertiser = zip(*rows)
    return conform(pl.DataFrame({
        "user_id": user, "anchor_date": anchor, "rank": rank, "advertiser_id": advertiser,
        "advertiser_name": [f"advertiser {a}" for a in advertiser], "source": ["hand"] * len(rows),
    }, schema_overrides={"advertiser_id": pl.Int32}), PREDICTIONS, "predictions")


def _ranked_predictions(fitted, users, advertisers_per_user: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(int(user), fitted["anchor"], rank + 1, int(advertiser))
            for user in users
            for rank, advertiser in enumerate(rng.choice(40, advertisers_per_user, replace=False) + 1)]
    return _predictions(rows)


def _generator(name: str, fitted, predictions: pl.DataFrame | None = None, **config):
    generator_config = GeneratorConfig(**{"main_top_n": 50, "l0_quota": QUOTA, "popularity_top_n": 50, **config})
    parts = (fitted["retriever"], fitted["index"], fitted["history"])
    if name == "main":
        return MainGenerator(*parts, generator_config)
    if name == "llm_advertiser":
        if predictions is None:
            predictions = _ranked_predictions(fitted, fitted["requests"]["user_id"][::2], 20)
        return LlmAdvertiserGenerator(*parts, predictions, generator_config)
    return PopularityGenerator(generator_config, fitted["history"]).fit(
        fitted["tables"]["events"], fitted["tables"]["items"], fitted["start"])


GENERATORS = ["main", "llm_advertiser", "popularity"]


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_contract(name, fitted):
    generator = _generator(name, fitted)
    requests = fitted["requests"]
    candidates = generator.generate(requests)
    validate(candidates, CANDIDATES, "candidates")
    assert candidates.height > 0
    assert set(candidates["source"].unique()) == {generator.source}
    assert set(candidates["request_id"]) <= set(requests["request_id"])
    assert candidates.select("request_id", "item_id").is_duplicated().sum() == 0
    catalog = fitted["tables"]["items"].select("item_id", pl.col("advertiser_id").alias("catalog_advertiser"))
    joined = candidates.join(catalog, on="item_id", how="left")
    assert (joined["advertiser_id"] == joined["catalog_advertiser"]).all()
    by_score = candidates.group_by("request_id", maintain_order=True).agg(
        (pl.col("score").diff().drop_nulls() <= 0).all().alias("descending"))
    assert by_score["descending"].all()


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_answers_no_requests_with_an_empty_table(name, fitted):
    candidates = _generator(name, fitted).generate(fitted["requests"].head(0))
    validate(candidates, CANDIDATES, "candidates")
    assert candidates.height == 0


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_rejects_malformed_requests(name, fitted):
    generator = _generator(name, fitted)
    with pytest.raises(SchemaError, match="user_id"):
        generator.generate(fitted["requests"].drop("user_id"))
    doubled = pl.concat([fitted["requests"].head(2), fitted["requests"].head(1)])
    with pytest.raises(SchemaError, match="request_id must be unique"):
        generator.generate(doubled)


def test_main_generator_is_the_exact_two_tower_top_n(fitted):
    requests = fitted["requests"].head(3)
    candidates = _generator("main", fitted).generate(requests)
    retriever = fitted["retriever"]
    users = retriever.user_vectors(fitted["history"], requests["user_id"].to_numpy(), requests["ts"])
    scores = users @ retriever.item_vectors().T
    for row, request_id in enumerate(requests["request_id"]):
        expected = set(retriever.items_.item_ids[np.argsort(-scores[row])[:50]])
        assert set(candidates.filter(pl.col("request_id") == request_id)["item_id"]) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(quota=st.integers(1, 40),
       lists=st.lists(st.lists(st.integers(1, 45), min_size=1, max_size=25), min_size=1, max_size=12))
@example(quota=1, lists=[[41]])  # only an advertiser without items: no candidate at all
def test_llm_generator_stays_inside_the_filter_and_the_quota(fitted, quota, lists):
    """Any predicted lists (repeats, advertisers without items: ids 41-45) and any quota."""
    requests = fitted["requests"].head(len(lists))
    predictions = _predictions([(user, fitted["anchor"], rank + 1, advertiser)
                                for user, advertisers in zip(requests["user_id"], lists)
                                for rank, advertiser in enumerate(advertisers)])
    generator = _generator("llm_advertiser", fitted, predictions, l0_quota=quota)
    candidates = generator.generate(requests)
    allowed = predictions.select(pl.col("user_id").alias("request_id"), "advertiser_id")
    assert candidates.join(allowed, on=["request_id", "advertiser_id"], how="anti").height == 0
    assert dict(candidates.schema) == CANDIDATES  # an empty result keeps the contract
    assert (candidates.group_by("request_id").len()["len"].max() or 0) <= quota
    has_items = [any(a <= 40 for a in advertisers) for advertisers in lists]
    assert candidates["request_id"].n_unique() == sum(has_items)


def test_users_without_a_usable_prediction_get_nothing(fitted):
    requests = fitted["requests"].head(5)
    users, anchor = requests["user_id"].to_list(), fitted["anchor"]
    predictions = _predictions([
        (users[0], anchor, 1, 1),  # usable
        (users[1], anchor - timedelta(days=8), 1, 1),  # 9 days before the request day: too old
        (users[2], anchor + timedelta(days=1), 1, 1),  # anchored on the request day: not yet available
        (users[3], anchor, 1, None),  # a name that did not resolve to an advertiser
    ])  # users[4] has no prediction at all
    generator = _generator("llm_advertiser", fitted, predictions)
    candidates = generator.generate(requests)
    assert set(candidates["request_id"]) == {requests["request_id"][0]}
    assert generator.stats_["unresolved_predictions"] == 1
    assert generator.stats_["requests"] == 5


def test_quota_is_spread_by_predicted_rank(fitted):
    """Priorities j * r: rank 1 -> 1,2,3; rank 2 -> 2; rank 3 -> 3 for a quota of 5 (ties kept by rank)."""
    request = fitted["requests"].head(1)
    user, anchor = request["user_id"][0], fitted["anchor"]
    predictions = _predictions([(user, anchor, 1, 3), (user, anchor, 2, 5), (user, anchor, 3, 7),
                                (user, anchor, 4, 3)])  # a repeated advertiser keeps its best rank
    generator = _generator("llm_advertiser", fitted, predictions, l0_quota=5)
    candidates = generator.generate(request)
    counts = dict(candidates.group_by("advertiser_id").len().iter_rows())
    assert counts == {3: 3, 5: 1, 7: 1}
    assert generator.stats_["duplicate_advertisers"] == 1
    retriever = fitted["retriever"]
    user_vector = retriever.user_vectors(fitted["history"], request["user_id"].to_numpy(), request["ts"])[0]
    vectors = retriever.item_vectors()
    rows = np.flatnonzero(retriever.items_.advertiser_ids == 3)
    best = retriever.items_.item_ids[rows[np.argsort(-(vectors[rows] @ user_vector))[:3]]]
    assert set(candidates.filter(pl.col("advertiser_id") == 3)["item_id"]) == set(best)


def test_small_advertisers_leave_their_share_to_the_others(fitted):
    request = fitted["requests"].head(1)
    user, anchor = request["user_id"][0], fitted["anchor"]
    predictions = _predictions([(user, anchor, 1, 2), (user, anchor, 2, 4)])
    generator = _generator("llm_advertiser", fitted, predictions, l0_quota=30)
    candidates = generator.generate(request)
    # Toy advertisers own 10 items each, so both run out and together fill 20 of the 30 slots.
    assert dict(candidates.group_by("advertiser_id").len().iter_rows()) == {2: 10, 4: 10}


def test_popularity_serves_the_same_recent_list_and_only_cold_users_when_asked(fitted):
    requests = fitted["requests"]
    everyone = _generator("popularity", fitted).generate(requests)
    lists = everyone.group_by("request_id").agg(pl.col("item_id").sort())["item_id"].to_list()
    assert all(items == lists[0] for items in lists)
    cold = _generator("popularity", fitted, popularity_max_user_events=25).generate(requests)
    history = fitted["history"].features(requests["user_id"].to_numpy(), requests["ts"]).history_events
    expected = set(requests.filter(pl.Series(history <= 25))["request_id"])
    assert set(cold["request_id"]) == expected and 0 < len(expected) < requests.height


def test_popularity_refuses_requests_before_its_snapshot(fitted):
    early = conform(fitted["requests"].head(2).with_columns(pl.col("ts") - timedelta(days=1)), REQUESTS)
    with pytest.raises(ValueError, match="precede the popularity snapshot"):
        _generator("popularity", fitted).generate(early)


def test_user_vectors_reuse_settled_users_and_equal_embedding_each_row(fitted):
    retriever, history = fitted["retriever"], fitted["history"]
    requests = fitted["requests"].head(40)
    # the same users again, later (settled: reused), and some before their last event (recomputed)
    earlier = requests["ts"] - timedelta(days=30)
    user_ids = np.concatenate([requests["user_id"].to_numpy()] * 3)
    as_of = pl.concat([requests["ts"], requests["ts"] + timedelta(days=1), earlier])
    assert not history.is_settled(requests["user_id"].to_numpy(), earlier).all()
    vectors = retriever.user_vectors(history, user_ids, as_of)
    np.testing.assert_allclose(vectors, retriever._embed(history, user_ids, as_of), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(vectors[:40], vectors[40:80])
    assert retriever.user_vectors(history, user_ids, as_of).tobytes() == vectors.tobytes()


def test_settled_values_compute_each_settled_user_once_and_the_others_at_their_own_time(fitted):
    history = fitted["history"]
    requests = fitted["requests"].head(40)
    user_ids, times = requests["user_id"].to_numpy(), requests["ts"]
    earlier = times - timedelta(days=30)
    assert history.is_settled(user_ids, times).all() and not history.is_settled(user_ids, earlier).all()
    calls = []

    def compute(users, as_of):  # a value that differs by time: a stale kept value would show
        calls.append(len(users))
        return users * 10**7 + as_of.dt.epoch("s").to_numpy() // 86400, users.astype(np.float32)[:, None]

    settled = SettledValues(history)
    first = settled.values(user_ids, times, compute)
    again = settled.values(np.concatenate([user_ids, user_ids]), pl.concat([times + timedelta(days=2), earlier]),
                           compute)
    is_changing = ~history.is_settled(user_ids, earlier)
    assert calls == [len(np.unique(user_ids)), int(is_changing.sum())]
    np.testing.assert_array_equal(again[0][:40], first[0])  # settled: the kept value, not day + 2
    expected_earlier = compute(user_ids, earlier)[0]
    np.testing.assert_array_equal(again[0][40:][is_changing], expected_earlier[is_changing])
    np.testing.assert_array_equal(again[0][40:][~is_changing], first[0][~is_changing])
    np.testing.assert_array_equal(again[1][:, 0], np.concatenate([user_ids, user_ids]).astype(np.float32))


def test_main_generator_keeps_settled_users_top_n_and_searches_the_others_afresh(fitted):
    generator = _generator("main", fitted)
    requests = fitted["requests"].head(30)
    earlier = requests.with_columns(pl.col("ts") - timedelta(days=30), pl.col("request_id") + 10**6)
    later = requests.with_columns(pl.col("ts") + timedelta(days=1), pl.col("request_id") + 2 * 10**6)
    mixed = pl.concat([later, earlier])
    generator.generate(requests)  # keeps the settled users' top-N
    fresh = _generator("main", fitted).generate(mixed)
    assert generator.generate(mixed).equals(fresh)
    lists = fresh.group_by(pl.col("request_id") % 10**6, (pl.col("request_id") // 10**6).alias("copy")).agg(
        pl.col("item_id").sort())
    assert (lists.group_by("request_id").agg(pl.col("item_id").n_unique())["item_id"] > 1).any()  # earlier != later
    retriever = fitted["retriever"]
    vectors = retriever._embed(fitted["history"], earlier["user_id"].to_numpy(), earlier["ts"])
    _, rows = fitted["index"].search(vectors, 50)
    expected = retriever.items_.item_ids[rows[0]]
    got = fresh.filter(pl.col("request_id") == earlier["request_id"][0])["item_id"].to_numpy()
    assert set(got) == set(expected)


def test_blending_a_smaller_quota_keeps_the_generators_own_first_items(fitted):
    """The generator is sized for the largest arm's quota; an arm with a smaller quota must get what
    the generator would emit at that quota (its priority order), not the two-tower's favourites."""
    predictions = _ranked_predictions(fitted, fitted["requests"]["user_id"][:30], 6)
    requests = fitted["requests"].head(30)
    large = _generator("llm_advertiser", fitted, predictions, l0_quota=40).generate(requests)
    small = _generator("llm_advertiser", fitted, predictions, l0_quota=7).generate(requests)
    assert (large.group_by("request_id").agg(pl.col("score").n_unique() == pl.len())["score"]).all()
    blended = blend(large, BlendConfig({"llm_advertiser": 7}, max_per_advertiser=40))
    assert blended.height == small.height > 0
    assert blended.select("request_id", "item_id").sort("request_id", "item_id").equals(
        small.select("request_id", "item_id").sort("request_id", "item_id"))


def test_a_retriever_with_cached_vectors_pickles_for_another_process(fitted):
    """Ray ships the trained stack to its workers by pickling: the per-process vector cache stays behind."""
    import pickle

    retriever, history = fitted["retriever"], fitted["history"]
    requests = fitted["requests"].head(10)
    vectors = retriever.user_vectors(history, requests["user_id"].to_numpy(), requests["ts"])
    assert history in retriever._settled_vectors
    copy = pickle.loads(pickle.dumps(retriever))
    assert len(copy._settled_vectors) == 0
    np.testing.assert_allclose(copy.user_vectors(history, requests["user_id"].to_numpy(), requests["ts"]), vectors,
                               rtol=1e-5, atol=1e-6)  # embedded afresh, in another batch: float rounding only
    settled = pickle.loads(pickle.dumps(retriever._settled_vectors[history]))  # Ray's copies are read-only
    assert not settled.is_known.any() and settled.columns == ()

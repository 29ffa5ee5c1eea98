import numpy as np
import polars as pl

from simulator.config import TrafficConfig
from simulator.engine import simulation_start
from simulator.traffic import day_requests, poisson_quantile, traffic_tables


def test_requests_are_keyed_per_user_so_arms_share_them(tiny_world):
    tables = traffic_tables(tiny_world)
    start = simulation_start(tiny_world)
    users = tiny_world.users["user_id"].to_numpy()
    everyone = day_requests(tables, users, start, 0, TrafficConfig(), seed=5)
    half = day_requests(tables, users[::2], start, 0, TrafficConfig(), seed=5)
    assert everyone.filter(pl.col("user_id").is_in(users[::2].tolist())).equals(half)
    assert everyone["request_id"].n_unique() == everyone.height
    assert (everyone["day"] == start).all()
    by_surface = {s: f for (s,), f in everyone.partition_by("surface", as_dict=True).items()}
    assert by_surface["search"]["query_category_id"].null_count() == 0
    assert by_surface["home_feed"]["query_category_id"].null_count() == by_surface["home_feed"].height
    assert by_surface["related_pins"]["context_item_id"].null_count() == 0
    other_day = day_requests(tables, users, start, 1, TrafficConfig(), seed=5)
    assert not set(other_day["request_id"]) & set(everyone["request_id"])


def test_volume_follows_sessions_and_activity(tiny_world):
    tables = traffic_tables(tiny_world)
    users = tiny_world.users["user_id"].to_numpy()
    start = simulation_start(tiny_world)
    low = day_requests(tables, users, start, 0, TrafficConfig(sessions_per_user_day=1.0), seed=1).height
    high = day_requests(tables, users, start, 0, TrafficConfig(sessions_per_user_day=3.0), seed=1).height
    assert 2.5 < high / low < 3.5


def test_poisson_quantile_matches_the_distribution():
    u = np.random.default_rng(0).random(200000)
    counts = poisson_quantile(u, np.full(u.size, 2.5))
    assert abs(counts.mean() - 2.5) < 0.02 and abs(counts.var() - 2.5) < 0.05
    assert poisson_quantile(np.array([0.0, 0.5]), np.array([2.5, 0.0])).tolist() == [0, 0]  # ppf(0) is -1 in scipy

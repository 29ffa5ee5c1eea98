import numpy as np
import polars as pl
import pytest

from blending.blend import BlendConfig
from simulator.config import ArmConfig, ExperimentConfig, SimulationConfig
from simulator.engine import simulate
from simulator.experiment import (aa_check, assign_arms, pre_period_covariates, run_ab, run_sweep,
                                  sweep_arms)
from simulator.report import ab_markdown, plot_sweep, sweep_markdown
from synthetic_data.config_io import ConfigError

CONTROL = ArmConfig("control", BlendConfig({"main": 30, "llm": 0}, max_candidates=30))
TREATMENT = ArmConfig("llm_on", BlendConfig({"main": 30, "llm": 10}, max_candidates=30))


def test_hash_assignment_is_stable_and_balanced():
    users = np.arange(100000)
    arms = assign_arms(users, 3, salt=7)
    assert np.array_equal(arms[:500], assign_arms(users[:500], 3, salt=7))  # independent of other users
    assert np.allclose(np.bincount(arms) / users.size, 1 / 3, atol=0.01)
    assert (assign_arms(users, 3, salt=8) != arms).mean() > 0.5


def test_pre_period_covariates_cover_every_user(tiny_world):
    covariates = pre_period_covariates(tiny_world, 28)
    assert covariates.height == tiny_world.users.height
    assert covariates["pre_engagements"].sum() > 0 and covariates["pre_conversion_value"].min() >= 0


def test_ab_split_runs_each_arm_on_its_users(tiny_world, tiny_stack):
    config = ExperimentConfig(arms=(CONTROL, TREATMENT), simulation=SimulationConfig(days=1, seed=2))
    result = run_ab(config, tiny_world, tiny_stack)
    users = {name: set(r.user_metrics["user_id"].to_list()) for name, r in result.results.items()}
    assert not users["control"] & users["llm_on"]
    assert len(users["control"] | users["llm_on"]) == tiny_world.users.height
    assert set(result.comparisons["metric"]) >= {"roas", "ctr", "cvr", "spend_per_user"}
    assert result.comparisons["p_value"].drop_nans().is_between(0, 1).all()
    # budgets are split by traffic share so arms cannot spend each other's money
    budgets = {name: r.advertiser_days["budget"].sum() for name, r in result.results.items()}
    assert budgets["control"] == pytest.approx(tiny_world.advertisers["daily_budget"].sum() / 2)
    control = result.arms.filter(pl.col("arm") == "control").row(0, named=True)
    assert control["llm_impressed_share"] == 0 and control["main_impressed_share"] == pytest.approx(1.0)
    text = ab_markdown(result.comparisons, result.arms, "A/B")
    assert "Return on ad spend" in text and "n/a" not in text.split("Per arm")[0].split("Return on ad spend")[1][:60]


def test_aa_resplits_are_not_significant_more_often_than_alpha(tiny_world, tiny_stack):
    config = ExperimentConfig(arms=(CONTROL, CONTROL.__class__("same", CONTROL.blend)),
                              simulation=SimulationConfig(days=2, seed=4))
    market = simulate(tiny_world, tiny_stack, CONTROL.blend, tiny_world.users["user_id"].to_numpy(),
                      config.simulation)
    p_values = aa_check(market, pre_period_covariates(tiny_world, 28), config, n_splits=40)
    rate = (p_values["p_value"].drop_nans() < 0.05).mean()
    assert rate <= 0.12, rate  # 240 correlated tests at alpha = 5%


def test_sweep_paired_replays_the_same_users(tiny_world, tiny_stack, tmp_path):
    config = ExperimentConfig(arms=(TREATMENT, CONTROL), design="paired", simulation=SimulationConfig(days=1, seed=5))
    table, result = run_sweep(config, tiny_world, tiny_stack, "llm", [0, 10, 30])
    assert table["quota"].to_list() == [0, 10, 30]
    requests = [r.user_metrics["requests"].to_list() for r in result.results.values()]
    assert requests[0] == requests[1] == requests[2]  # common random numbers: identical traffic
    shares = table["llm_impressed_share"].to_list()
    assert shares[0] == 0 and shares[1] < shares[2]  # a larger quota takes more of the impressions
    paths = plot_sweep(table, "llm", tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert "sweep_roas" in sweep_markdown(table, "llm", paths, tmp_path)


def test_bad_experiments_are_clear_errors():
    with pytest.raises(ConfigError, match="arms"):
        ExperimentConfig(arms=(CONTROL,))
    with pytest.raises(ConfigError, match="design"):
        ExperimentConfig(arms=(CONTROL, TREATMENT), design="crossover")
    with pytest.raises(ValueError, match="--source"):
        sweep_arms(CONTROL, "two_tower", [0, 10])


def _market(user_ids, advertiser_of_impression, user_of_impression):
    from blending.funnel import FunnelLedger
    from simulator.engine import SimulationResult

    return SimulationResult(
        impressions=pl.DataFrame({"user_id": np.asarray(user_of_impression, np.int64),
                                  "advertiser_id": np.asarray(advertiser_of_impression, np.int32)}),
        conversions=pl.DataFrame(), user_metrics=pl.DataFrame({"user_id": np.asarray(user_ids, np.int64)}),
        advertiser_days=pl.DataFrame(), ledger=FunnelLedger(["main"], np.arange(10)), summary={})


def test_diversity_comparison_detects_concentration():
    from simulator.experiment import compare_diversity

    rng = np.random.default_rng(0)
    users = np.arange(400)
    spread_users = rng.integers(0, 400, 4000)
    control = _market(users, rng.integers(0, 10, 4000), spread_users)
    concentrated = _market(users, np.where(rng.random(4000) < 0.7, 0, rng.integers(0, 10, 4000)), spread_users)
    rows = {c.metric: c for c in compare_diversity(control, concentrated, paired=False, alpha=0.05, samples=200,
                                                   rng=rng)}
    assert rows["advertiser_entropy"].relative_change < 0 and rows["advertiser_entropy"].p_value < 0.01
    assert rows["advertiser_gini"].relative_change > 0 and rows["advertiser_gini"].ci_low > 0
    same = {c.metric: c for c in compare_diversity(control, control, paired=True, alpha=0.05, samples=200, rng=rng)}
    assert same["advertiser_entropy"].relative_change == 0 and same["advertiser_entropy"].p_value == 1.0


@pytest.mark.slow
def test_aa_experiments_with_identical_arms_over_seeds(tiny_world, tiny_stack):
    """Whole A/A experiments (split design, identical arms): about 5% significant at the 5% level."""
    p_values = []
    for seed in range(20):
        config = ExperimentConfig(arms=(CONTROL, ArmConfig("same", CONTROL.blend)), salt=seed,
                                  simulation=SimulationConfig(days=1, seed=seed))
        comparisons = run_ab(config, tiny_world, tiny_stack).comparisons
        p_values += comparisons.filter(pl.col("metric") == "roas")["p_value"].to_list()
    assert np.mean(np.array(p_values) < 0.05) <= 0.15


def test_example_experiment_file_loads():
    from pathlib import Path

    from synthetic_data.config_io import load_config

    path = Path(__file__).parents[2] / "simulator" / "experiments" / "llm_generator.toml"
    config = load_config(ExperimentConfig, path=path)
    assert [arm.blend.quotas["llm_advertiser"] for arm in config.arms] == [0, 25]

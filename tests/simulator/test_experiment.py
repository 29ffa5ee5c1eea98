import numpy as np
import polars as pl
import pytest

from blending.blend import BlendConfig
from simulator.config import ArmConfig, ExperimentConfig, SimulationConfig
from simulator.engine import simulate
from simulator.experiment import (aa_check, aa_false_positive_rates, adjust_p_values, assign_arms, concentration_quota,
                                  concentration_tests, pre_period_covariates, run_ab, run_sweep, sweep_arms)
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
    config = ExperimentConfig(arms=(CONTROL, TREATMENT), simulation=SimulationConfig(days=1, seed=2), design="split")
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
    # the hash split gives each arm its share: the SRM test sees the arms' analysed users and passes
    assert result.srm.design == "split" and sum(result.srm.users) == tiny_world.users.height
    assert result.srm.users == tuple(r.user_metrics.height for r in result.results.values())
    assert not result.srm.is_mismatch and result.srm.p_value > 0.001
    # RoAS is the only primary row; the eight secondaries of the arm are one Holm family
    assert result.comparisons.filter(pl.col("is_primary"))["metric"].to_list() == ["roas"]
    assert (result.comparisons["p_value_adjusted"].fill_nan(1.0) >= result.comparisons["p_value"].fill_nan(1.0)).all()
    text = ab_markdown(result.comparisons, result.arms, result.srm, "A/B")
    assert text.index("Sample-ratio check (SRM)") < text.index("| Arm | Metric")
    assert "Return on ad spend (primary)" in text and "CTR (secondary)" in text and "Holm" in text
    assert "n/a" not in text.split("Per arm")[0].split("Return on ad spend")[1][:60]
    # exposure of the raised `llm` source agrees with the funnel ledger's impressed count
    treated = result.arms.filter(pl.col("arm") == "llm_on").row(0, named=True)
    ledger = result.results["llm_on"].ledger.table()
    impressed = ledger.filter((pl.col("source") == "llm") & (pl.col("stage") == "impressed"))["count"].item()
    assert (control["treatment_sources"], control["treatment_impressions"], control["treatment_users"]) == ("llm", 0, 0)
    assert treated["treatment_sources"] == "llm" and treated["treatment_impressions"] == impressed > 0
    assert treated["treatment_impression_share"] == pytest.approx(treated["llm_impressed_share"])
    assert 0 < treated["treatment_users"] <= treated["users"] and 0 < treated["treatment_spend_share"] < 1


def test_arm_whose_treatment_spend_is_below_its_mde_is_not_measuring(tiny_world, tiny_stack):
    """300 users a day per arm: the planned MDE on RoAS is about +100%, the LLM source takes about half
    of the treatment arm's spend, so even doubling RoAS on that spend could not be seen."""
    config = ExperimentConfig(arms=(CONTROL, TREATMENT), simulation=SimulationConfig(days=1, seed=2), design="split")
    result = run_ab(config, tiny_world, tiny_stack)
    treated = result.arms.filter(pl.col("arm") == "llm_on").row(0, named=True)
    roas = result.comparisons.filter(pl.col("metric") == "roas").row(0, named=True)
    assert treated["treatment_impressions"] > 0
    # planned (before the arm ran, from the control's variance) and achieved MDE agree in the split design
    assert 0.5 < treated["planned_roas_mde"] < 2 and roas["mde"] == pytest.approx(treated["planned_roas_mde"], rel=0.2)
    assert treated["treatment_spend_share"] < min(treated["planned_roas_mde"], roas["mde"])
    assert treated["is_treatment_measured"] is False and "below its MDE on RoAS" in treated["treatment_check"]
    assert not result.comparisons["is_treatment_measured"].any() and not result.comparisons["is_significant"].any()
    text = ab_markdown(result.comparisons, result.arms, result.srm, "A/B")
    assert "**Arm `llm_on` is not measuring the treatment**" in text
    assert text.count("| not measuring the treatment |") == result.comparisons.height


def test_arm_whose_treatment_source_serves_nothing_is_flagged_in_the_stage_summary_and_the_report(
        tiny_world, tiny_stack, tmp_path):
    """The LLM quota is raised, but the generator has no predictions to serve (the demo's A/B of 29dfd80:
    0 LLM impressions): the stage summary and the report flag the arm, never a result."""
    import json
    from dataclasses import replace

    from simulator.baselines import AdvertiserFilterGenerator, history_predictions
    from simulator.stages import ab_stage
    from synthetic_data.run_folder import RunFolder

    no_predictions = history_predictions(tiny_world.events, user_ids=np.array([], dtype=np.int64))
    stack = replace(tiny_stack, generators=(tiny_stack.generators[0],
                                            AdvertiserFilterGenerator(tiny_world, no_predictions)))
    config = ExperimentConfig(arms=(CONTROL, TREATMENT), simulation=SimulationConfig(days=1, seed=2))
    run = RunFolder(tmp_path)
    summary = ab_stage(run, config, tiny_world, stack, "baseline, no LLM predictions", progress=False)
    exposure = summary["exposure"]["llm_on"]
    assert (exposure["treatment_users"], exposure["treatment_impressions"]) == (0, 0)
    assert exposure["is_treatment_measured"] is False
    assert exposure["treatment_check"] == "its treatment source(s) `llm` reached 0 users and 0 impressions"
    assert summary["roas_change"]["llm_on"]["is_treatment_measured"] is False
    assert summary["roas_change"]["llm_on"]["is_significant"] is False
    assert summary["exposure"]["control"]["is_treatment_measured"] is None
    record = json.loads((tmp_path / "ab" / "stage.json").read_text())  # the "summary.json"
    assert record["summary"]["exposure"]["llm_on"]["is_treatment_measured"] is False
    text = (tmp_path / "ab" / "report.md").read_text()
    flag = text.index("**Arm `llm_on` is not measuring the treatment**: its treatment source(s) `llm` reached 0 users")
    assert flag < text.index("| Arm | Metric")
    metric_table = text.split("| Arm | Metric")[1].split("Per arm")[0]
    rows = [line for line in metric_table.splitlines() if line.startswith("| llm_on | ")]
    assert len(rows) == 9 and all(row.endswith("| not measuring the treatment |") for row in rows)
    assert text.index("minimum detectable effect (MDE) on RoAS of arm `llm_on`: planned +") < flag
    assert "| MDE (80% power) |" in text
    comparisons = pl.read_parquet(tmp_path / "ab" / "comparisons.parquet")
    assert comparisons["is_treatment_measured"].to_list() == [False] * 9
    # the funnel says why: the LLM source retrieved nothing, in either arm
    assert summary["funnel_losses"]["llm_on"]["llm"] == {
        "retrieved": 0, "impressed": 0, "stage": None, "parent_stage": None, "survival": None, "other_survival": None}
    funnel = text.split("#### Funnel per source")[1]
    assert "| llm | 0 | 0 (n/a) |" in funnel.split("Arm `llm_on`:")[1]
    assert "retrieved nothing (quota 0, or no candidates)" in funnel and (tmp_path / "plots" / "ab_funnel.png").exists()


@pytest.mark.parametrize("design", ["split", "paired"])
def test_aa_rerandomisations_are_not_significant_more_often_than_alpha(tiny_world, tiny_stack, design):
    """Split: re-splits of the control arm's users; paired: sign flips between the control arm and its replay
    with another seed. Either way the changes are noise (p-values spread over (0, 1)), rejected about alpha."""
    config = ExperimentConfig(arms=(CONTROL, CONTROL.__class__("same", CONTROL.blend)),
                              simulation=SimulationConfig(days=2, seed=4), design=design)
    market = simulate(tiny_world, tiny_stack, CONTROL.blend, tiny_world.users["user_id"].to_numpy(),
                      config.simulation)
    p_values = aa_check(config, tiny_world, tiny_stack, market, pre_period_covariates(tiny_world, 28), n_splits=40)
    tested = p_values["p_value"].drop_nans()
    assert (p_values["relative_change"].drop_nans() != 0).mean() > 0.9  # a replay with the same draws gives 0
    assert tested.len() == 240 and 0.35 < tested.mean() < 0.65, tested.mean()
    rate = (tested < 0.05).mean()
    assert rate <= 0.12, rate  # 240 correlated tests at alpha = 5%
    rates = aa_false_positive_rates(p_values, 0.05)
    assert rates["all"]["rate"] == pytest.approx(rate) and rates["roas"]["tests"] == 40
    assert rates["roas"]["low"] <= rates["roas"]["rate"] <= rates["roas"]["high"]


def test_sweep_replays_the_same_users_in_every_quota_by_default(tiny_world, tiny_stack, tmp_path):
    config = ExperimentConfig(arms=(TREATMENT, CONTROL), simulation=SimulationConfig(days=1, seed=5), design="split")
    assert config.design == "split"  # the A/B's design; the sweep's is its own and paired unless told
    table, result = run_sweep(config, tiny_world, tiny_stack, "llm", [0, 10, 30])
    assert table["quota"].to_list() == [0, 10, 30]
    user_ids = [r.user_metrics["user_id"].to_list() for r in result.results.values()]
    assert user_ids[0] == user_ids[1] == user_ids[2] == sorted(tiny_world.users["user_id"].to_list())
    requests = [r.user_metrics["requests"].to_list() for r in result.results.values()]
    assert requests[0] == requests[1] == requests[2]  # common random numbers: identical traffic
    # the comparisons are paired: every comparison counts all users as the smaller arm
    assert (result.comparisons["arm_users"] == tiny_world.users.height).all()
    shares = table["llm_impressed_share"].to_list()
    assert shares[0] == 0 and shares[1] < shares[2]  # a larger quota takes more of the impressions
    assert table["main_impressed_share"].to_numpy() + table["llm_impressed_share"].to_numpy() == pytest.approx(1.0)
    assert table["treatment_impression_share"].to_list() == pytest.approx(shares)
    # real exposure, measured: the spend share passes the achieved MDE, which common random numbers make
    # several times smaller than the planned one (an upper bound that takes the arms as uncorrelated)
    treated = table.filter(pl.col("quota") > 0)
    assert treated["is_treatment_measured"].to_list() == [True, True]
    assert (treated["treatment_spend_share"] >= treated["roas_mde"]).all()
    assert (treated["planned_roas_mde"] > 1.5 * treated["roas_mde"]).all()
    # every arm replays all users: no random share to test, but the counts must be equal
    assert (result.srm.design, result.srm.users, result.srm.is_mismatch) == ("paired", (tiny_world.users.height,) * 3,
                                                                             False)
    assert np.isnan(result.srm.p_value)
    # diversity per quota against the first: the table's changes are the comparisons' and their intervals hold them
    entropy = result.comparisons.filter(pl.col("metric") == "advertiser_entropy").sort("arm")
    assert treated.sort("arm")["advertiser_entropy_change"].to_list() == entropy["relative_change"].to_list()
    assert (treated["advertiser_entropy_ci_low"] <= treated["advertiser_entropy_change"]).all()
    assert (treated["advertiser_gini_change"] <= treated["advertiser_gini_ci_high"]).all()
    # the LLM lists spread impressions over more advertisers in the tiny world: entropy up, Gini down, no concentration
    assert (treated["advertiser_entropy_change"] > 0).all() and (treated["advertiser_gini_change"] < 0).all()
    assert treated["is_concentrated"].to_list() == [False, False] and concentration_quota(table) is None
    paths = plot_sweep(table, "llm", tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    text = sweep_markdown(table, "llm", paths, result.srm, tmp_path)
    assert "sweep_roas" in text and "the paired design replays every user" in text.split("| quota")[0]
    assert f"Design `paired`: every quota replayed the same {tiny_world.users.height:,} users" in text
    assert "Exposure of arm `llm_quota_30`: its treatment source(s) `llm` reached" in text
    assert "not measuring" not in text
    assert "No quota concentrated advertisers" in text.split("#### Over-concentration per quota")[1]


def test_sweep_stage_in_the_split_design_knob(tiny_world, tiny_stack, tmp_path):
    """`sweep_design = "split"` hashes the users into quotas; the stage writes the over-concentration and
    funnel sections and records the concentration quota and each source's largest loss."""
    from simulator.stages import sweep_stage
    from synthetic_data.run_folder import RunFolder

    config = ExperimentConfig(arms=(CONTROL, TREATMENT), sweep_design="split",
                              simulation=SimulationConfig(days=1, seed=5))
    summary = sweep_stage(RunFolder(tmp_path), config, tiny_world, tiny_stack, "baseline", "llm", [0, 10],
                          progress=False)
    assert summary["srm"]["design"] == "split" and sum(summary["srm"]["users"]) == tiny_world.users.height
    assert max(summary["srm"]["users"]) < tiny_world.users.height and not summary["srm"]["is_mismatch"]
    assert "concentration_quota" in summary
    assert summary["funnel_losses"]["llm_quota_0"]["llm"]["stage"] is None  # quota 0: never asked
    assert summary["funnel_losses"]["llm_quota_10"]["llm"]["retrieved"] > 0
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert "Design `split`: each quota ran on its own hash-assigned share" in text
    assert text.index("#### Over-concentration per quota") < text.index("#### Funnel per source")
    assert "![sweep_funnel](../plots/sweep_funnel.png)" in text  # relative to the stage's own folder
    assert (tmp_path / "sweep" / "../plots/sweep_funnel.png").exists()
    with pytest.raises(ConfigError, match="sweep_design"):
        ExperimentConfig(sweep_design="crossover")


def test_identical_arms_give_identical_markets_in_the_paired_design(tiny_world, tiny_stack):
    """Common random numbers: two arms with the same quotas replay the same users with the same draws,
    so every log and the funnel are equal and every change is exactly zero (the sweep runs this design)."""
    config = ExperimentConfig(arms=(CONTROL, ArmConfig("same", CONTROL.blend)), design="paired",
                              simulation=SimulationConfig(days=1, seed=3))
    result = run_ab(config, tiny_world, tiny_stack)
    control, same = result.results["control"], result.results["same"]
    assert control.impressions.height > 0
    assert control.impressions.equals(same.impressions) and control.user_metrics.equals(same.user_metrics)
    assert control.conversions.equals(same.conversions)
    assert np.array_equal(control.ledger.counts_, same.ledger.counts_)
    assert (result.comparisons["relative_change"] == 0).all()
    assert (result.comparisons["p_value"] == 1.0).all() and not result.comparisons["is_significant"].any()


def _diversity_rows(arm: str, entropy: tuple[float, float], gini: tuple[float, float], is_underpowered=False,
                    is_treatment_measured=True) -> list[dict]:
    """Comparisons rows of one arm's diversity tests: (relative change, p-value) for entropy and Gini."""
    return [{"arm": arm, "metric": metric, "relative_change": change, "ci_low": change - 0.1,
             "ci_high": change + 0.1, "p_value": p_value, "is_underpowered": is_underpowered,
             "is_treatment_measured": is_treatment_measured}
            for metric, (change, p_value) in (("advertiser_entropy", entropy), ("advertiser_gini", gini))]


def test_concentration_is_entropy_down_or_gini_up_holm_adjusted_over_the_sweep():
    comparisons = pl.DataFrame([
        {"arm": "q10", "metric": "roas", "relative_change": -0.5, "ci_low": -0.6, "ci_high": -0.4, "p_value": 1e-9,
         "is_underpowered": False, "is_treatment_measured": True},
        *_diversity_rows("q10", entropy=(+0.20, 0.001), gini=(-0.1, 0.002)),  # more diverse: not concentration
        *_diversity_rows("q30", entropy=(-0.05, 0.012), gini=(+0.02, 0.30)),
        *_diversity_rows("q60", entropy=(-0.30, 0.004), gini=(+0.20, 0.011)),
        *_diversity_rows("q90", entropy=(-0.40, 0.001), gini=(+0.30, 0.001), is_underpowered=True),
        *_diversity_rows("q99", entropy=(-0.40, 0.001), gini=(+0.30, 0.001), is_treatment_measured=False)])
    tests = concentration_tests(comparisons, alpha=0.05)
    assert tests["arm"].to_list() == ["q10", "q30", "q60", "q90", "q99"]
    # one Holm family of ten: p sorted 0.001 x5, 0.002, 0.004, 0.011, 0.012, 0.30 times 10, 9, ..., 1, made
    # monotone: 0.01 x6, 0.016, 0.033, max(0.024, 0.033), 0.30
    assert tests["advertiser_entropy_p_value_adjusted"].to_list() == pytest.approx([0.01, 0.033, 0.016, 0.01, 0.01])
    assert tests["advertiser_gini_p_value_adjusted"].to_list() == pytest.approx([0.01, 0.3, 0.033, 0.01, 0.01])
    assert tests["advertiser_entropy_change"].to_list() == [0.20, -0.05, -0.30, -0.40, -0.40]
    assert tests["advertiser_gini_ci_high"].to_list() == pytest.approx([0.0, 0.12, 0.30, 0.40, 0.40])
    # q30: entropy down, p 0.036 < 0.05; q60 both; q90 underpowered and q99 not measuring its treatment: never
    assert tests["is_concentrated"].to_list() == [False, True, True, False, False]
    table = tests.with_columns(pl.Series("quota", [10, 30, 60, 90, 99]))
    assert concentration_quota(table) == 30
    assert concentration_quota(table.filter(pl.col("quota") != 30)) == 60
    assert concentration_quota(table.with_columns(pl.lit(False).alias("is_concentrated"))) is None


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


def test_diversity_interval_is_unbounded_when_control_resamples_show_no_advertiser():
    """Two of 60 control users saw ads: about e^-2 = 13.5% of resamples have no control impression,
    so the upper bound is unbounded (once these resamples were dropped and a finite bound quoted)."""
    from simulator.experiment import compare_diversity

    rng = np.random.default_rng(5)
    users = np.arange(60)
    control = _market(users, [1, 2], [0, 1])
    treatment = _market(users, rng.integers(0, 10, 60), users)
    rows = {c.metric: c for c in compare_diversity(control, treatment, paired=False, alpha=0.05, samples=2000,
                                                   rng=rng)}
    unique = rows["unique_advertisers"]
    assert unique.relative_change == pytest.approx(4.0)  # 10 advertisers against 2
    assert unique.ci_high == np.inf and 200 < unique.undefined_resamples < 340  # 2000 * e^-2 = 271
    assert (unique.arm_users, unique.nonzero_users, unique.is_underpowered) == (60, 2, True)


def test_ab_report_says_unbounded_underpowered_and_a_flagged_srm_plainly():
    from simulator.stats import Comparison, sample_ratio_mismatch

    roas = Comparison("roas", 2.5, 5.0, 1.0, -0.5, np.inf, 0.3, undefined_resamples=104, arm_users=60,
                      nonzero_users=3, is_underpowered=True)
    comparisons = adjust_p_values(pl.DataFrame([{"arm": "b", "control_arm": "a", **roas.__dict__, "mde": np.inf,
                                                 "is_treatment_measured": True}]), alpha=0.05)
    columns = ["users", "days", "requests", "impressions", "spend", "conversion_value", "roas", "ctr", "cvr",
               "unique_advertisers", "advertiser_entropy", "advertiser_gini", "treatment_users",
               "treatment_impressions", "treatment_impression_share", "treatment_spend_share", "planned_roas_mde"]
    arms = pl.DataFrame({"arm": ["a", "b"], "is_control": [True, False], "treatment_sources": ["llm", "llm"],
                         "is_treatment_measured": [None, True], "treatment_check": ["control arm", "reached"],
                         **{column: [1, 1] for column in columns}})
    text = ab_markdown(comparisons, arms, sample_ratio_mismatch([5200, 4800], [1, 1]), "A/B")
    assert "| [-50.00%, unbounded] | unbounded |" in text  # the achieved MDE of an unbounded interval
    assert "underpowered (60 users in the smaller arm, 3 with a nonzero numerator)" in text
    assert text.index("**Sample-ratio mismatch (SRM)**") < text.index("| Arm |") and "not trustworthy" in text


def test_holm_families_are_the_primary_across_arms_and_each_arms_secondaries():
    comparisons = pl.DataFrame({
        "arm": ["b", "b", "b", "c", "c", "c"], "metric": ["roas", "ctr", "cvr", "roas", "ctr", "cvr"],
        "p_value": [0.02, 0.01, 0.04, 0.03, 0.2, float("nan")],
        "is_underpowered": [False, False, False, False, True, False],
        "is_treatment_measured": [None, None, None, True, True, True]}, schema_overrides={
        "is_treatment_measured": pl.Boolean})
    adjusted = adjust_p_values(comparisons, alpha=0.05)
    assert adjusted["is_primary"].to_list() == [True, False, False, True, False, False]
    # primary family {0.02, 0.03}: 2 * 0.02, max(0.04, 0.03); arm b's secondaries {0.01, 0.04}: 0.02, 0.04;
    # arm c's {0.2, NaN}: the untestable one is not counted, so 0.2 stays 0.2
    assert adjusted["p_value_adjusted"].to_list()[:5] == pytest.approx([0.04, 0.02, 0.04, 0.04, 0.2])
    assert np.isnan(adjusted["p_value_adjusted"][5])
    assert adjusted["is_significant"].to_list() == [True, True, True, True, False, False]
    # an arm flagged as not measuring its treatment stays in the primary family but is never significant
    flagged = adjust_p_values(comparisons.with_columns(pl.Series("is_treatment_measured", [False] * 3 + [True] * 3)),
                              alpha=0.05)
    assert flagged["p_value_adjusted"].to_list()[:5] == pytest.approx([0.04, 0.02, 0.04, 0.04, 0.2])
    assert flagged["is_significant"].to_list() == [False, False, False, True, False, False]


@pytest.mark.slow
def test_aa_experiments_with_identical_arms_over_seeds(tiny_world, tiny_stack):
    """Whole A/A experiments (split design, identical arms): about 5% significant at the 5% level."""
    p_values = []
    for seed in range(20):
        config = ExperimentConfig(arms=(CONTROL, ArmConfig("same", CONTROL.blend)), salt=seed, design="split",
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
    assert (config.design, config.sweep_design) == ("paired", "paired")


def test_treatment_check_prints_small_shares_and_mdes_apart():
    """A paired design's MDE is often under 1%: the check must not round 0.03% of spend and a 0.69% MDE to 0.0%."""
    from simulator.experiment import treatment_check

    exposure = {"treatment_sources": "llm", "treatment_users": 34, "treatment_impressions": 268,
                "treatment_spend_share": 0.0003}
    measured, check = treatment_check(exposure, planned_roas_mde=0.0788, achieved_roas_mde=0.0069)
    assert measured is False and "0.03% of the arm's spend, below its MDE on RoAS of +0.69%" in check


def test_served_slice_compares_the_listed_users_of_each_arm(tiny_world, tiny_stack, tmp_path):
    """Paper Table 6 reports its opt-in slice: the comparisons on the users whose serving lists the market started
    with are those of the arms' per-user metrics restricted to them, in the stage's table, report and summary."""
    from dataclasses import replace

    from simulator.stages import ab_stage
    from synthetic_data.run_folder import RunFolder

    served = np.sort(tiny_world.users["user_id"].to_numpy())[::3]
    stack = replace(tiny_stack, served_users=served)
    config = ExperimentConfig(arms=(CONTROL, TREATMENT), simulation=SimulationConfig(days=1, seed=2))
    result = run_ab(config, tiny_world, stack)
    assert result.served["metric"].to_list() == result.comparisons["metric"].to_list()[:6]  # ratio metrics only
    roas = result.served.filter(pl.col("metric") == "roas").row(0, named=True)
    for arm, column in ((CONTROL.name, "control"), (TREATMENT.name, "treatment")):
        users = result.results[arm].user_metrics.filter(pl.col("user_id").is_in(served))
        assert users.height == served.size
        assert roas[column] == pytest.approx(users["conversion_value"].sum() / users["spend"].sum())
    whole = result.comparisons.filter(pl.col("metric") == "roas").row(0, named=True)
    assert roas["control"] != whole["control"] and roas["arm_users"] == served.size < whole["arm_users"]
    summary = ab_stage(RunFolder(tmp_path), config, tiny_world, stack, "baseline, a third served", progress=False)
    assert summary["served_users"] == served.size
    assert summary["served_roas_change"][TREATMENT.name]["relative_change"] == pytest.approx(roas["relative_change"])
    assert pl.read_parquet(tmp_path / "ab" / "served.parquet").height == 6
    assert f"#### The served slice: {served.size:,} of {tiny_world.users.height:,} users" in (
        tmp_path / "ab" / "report.md").read_text()
    assert run_ab(config, tiny_world, tiny_stack).served.height == 0  # no lists: no slice

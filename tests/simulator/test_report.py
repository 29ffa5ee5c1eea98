"""Report pieces: the LLM-feature coverage line says plainly when the features are served where they were not learnt."""

from simulator.report import coverage_line


def test_coverage_line_flags_features_served_far_beyond_their_training_coverage():
    mismatch = {"trained_users_with_list_share": 0.0075, "served_users_with_list_share": 0.866,
                "coverage_ratio": 115.5, "is_mismatch": True}
    line = coverage_line(mismatch)
    assert line.startswith("**LLM-feature coverage mismatch**") and "0.8%" in line and "86.6%" in line
    assert "adsim rank train" in line
    matched = {**mismatch, "served_users_with_list_share": 0.01, "coverage_ratio": 1.3, "is_mismatch": False}
    assert coverage_line(matched) == ("LLM-feature coverage: the ranker's LLM features were trained with lists for "
                                      "0.8% of users; this market serves lists to 1.0%.")
    assert coverage_line({}) == ""


def test_a_row_of_an_arm_not_measuring_its_treatment_never_reads_as_a_result():
    from simulator.report import verdict

    row = {"is_treatment_measured": False, "p_value": 1e-6, "is_underpowered": False, "is_significant": True}
    assert verdict(row) == "not measuring the treatment"
    assert verdict({**row, "is_treatment_measured": True}) == "significant"
    assert verdict({**row, "is_treatment_measured": None}) == "significant"  # not checked (an A/A arm)


def test_power_and_exposure_lines_name_each_treatment_arm():
    import polars as pl

    from simulator.report import exposure_lines, power_lines

    arms = pl.DataFrame({
        "arm": ["control", "llm_on", "llm_off"], "is_control": [True, False, False], "users": [1000, 1000, 1000],
        "days": [3, 3, 3], "planned_roas_mde": [float("nan"), 0.0412, 0.0412],
        "is_treatment_measured": [None, True, False],
        "treatment_check": ["control arm", "its treatment source(s) `llm` reached 800 users",
                            "its treatment source(s) `llm` reached 0 users and 0 impressions"]})
    comparisons = pl.DataFrame({"arm": ["llm_on", "llm_on", "llm_off"], "metric": ["roas", "ctr", "roas"],
                                "mde": [0.0398, 0.2, float("inf")]})
    lines = power_lines(arms, comparisons, "paired", 0.05)
    assert lines[0] == ("Power (80%, alpha 0.05): minimum detectable effect (MDE) on RoAS of arm `llm_on`: planned "
                        "+4.12% before it ran (1,000 control and 1,000 treatment users over 3 simulated day(s), from "
                        "the control arm's per-user variance of log RoAS; paired design: the arms' per-user outcomes "
                        "taken as uncorrelated, so the planned MDE is an upper bound); achieved +3.98% (from the "
                        "result's interval).")
    assert "achieved unbounded" in lines[1] and lines[2] == ""
    assert exposure_lines(arms) == [
        "Exposure of arm `llm_on`: its treatment source(s) `llm` reached 800 users.", "",
        ("**Arm `llm_off` is not measuring the treatment**: its treatment source(s) `llm` reached 0 users and 0 "
         "impressions. Its rows read \"not measuring the treatment\", not a result."), ""]


def test_funnel_section_has_a_row_per_source_and_says_where_it_loses(tmp_path):
    import polars as pl

    from simulator.report import funnel_markdown, plot_funnel
    from tests.blending.test_funnel import demo_like_ledger

    funnels = pl.concat([demo_like_ledger(wins).table().with_columns(pl.lit(arm).alias("arm"))
                         for arm, wins in (("control", 0), ("llm_on", 340))])
    plot = plot_funnel(funnels, tmp_path / "plots" / "ab_funnel.png")
    assert plot.stat().st_size > 1000
    text = funnel_markdown(funnels, plot, relative_to=tmp_path)
    control = text.split("Arm `control`:")[1].split("Arm `llm_on`:")[0]
    assert ("| llm | 10,900 | 5,011 (46.0%) | 351 (7.0%) | 0 (0.0%) | 0 (n/a) | 0 (n/a) | 0 (n/a) | "
            "ranked -> won_auction: 0.0% survive (other sources 50.2%) |") in control
    assert "| main | 20,000 | 8,000 (40.0%) | 6,000 (75.0%) | 3,000 (50.0%) | 2,700 (90.0%) |" in control
    assert "| silent | 0 |" in control and "retrieved nothing (quota 0, or no candidates)" in control
    assert "| all | 31,000 |" in control and control.count("| ranked -> won_auction") == 1
    assert "blended -> ranked: 7.0% survive (other sources 74.8%)" in text.split("Arm `llm_on`:")[1]
    assert "ranked -> won_auction: the auction: eCPM below the reserve" in text
    assert text.rstrip().endswith("![ab_funnel](plots/ab_funnel.png)")


def test_concentration_section_names_the_first_concentrated_quota():
    import polars as pl

    from simulator.report import concentration_lines

    def tested(metric, changes, p_values):
        return {f"{metric}_change": changes, f"{metric}_ci_low": [None if c is None else c - 0.05 for c in changes],
                f"{metric}_ci_high": [None if c is None else c + 0.05 for c in changes],
                f"{metric}_p_value_adjusted": p_values}

    table = pl.DataFrame({
        "quota": [0, 25, 100], "is_control": [True, False, False], "is_concentrated": [None, False, True],
        "is_treatment_measured": [None, True, True],
        "main_impressed_share": [1.0, 0.8, 0.5], "llm_impressed_share": [0.0, 0.2, 0.5],
        "main_survival": [0.1, 0.08, 0.05], "llm_survival": [float("nan"), 0.02, 0.03],
        "unique_advertisers": [30, 31, 20], "advertiser_entropy": [2.5, 2.6, 2.0], "advertiser_gini": [0.7, 0.68, 0.8],
        **tested("advertiser_entropy", [None, 0.04, -0.2], [None, 0.3, 0.004]),
        **tested("advertiser_gini", [None, -0.03, 0.14], [None, 0.3, 0.02])})
    lines = concentration_lines(table, "llm", alpha=0.05)
    assert lines[2] == ("**Advertiser diversity first drops significantly at quota 100** of `llm`: entropy -20.00% "
                        "[-25.00%, -15.00%] (Holm p = 0.004), Gini +14.00% [+9.00%, +19.00%] (Holm p = 0.02).")
    assert lines[4].startswith("| quota | main share of impressions | llm share of impressions | advertisers |")
    assert lines[6] == "| 0 | 100.0% | 0.0% | 30 | 2.5 |  |  | 0.7 |  |  | 10.0% | n/a | control |"
    assert lines[8].endswith("| -20.00% [-25.00%, -15.00%] | 0.004 | 0.8 | +14.00% [+9.00%, +19.00%] | 0.02 | 5.0% | 3.0% "
                             "| concentrated |")
    assert "over all 4 entropy and Gini tests of the sweep" in lines[-2]
    calm = concentration_lines(table.with_columns(pl.lit(False).alias("is_concentrated")), "llm", alpha=0.05)
    assert calm[2] == ("No quota concentrated advertisers: no entropy drop or Gini rise against quota 0 was "
                       "significant in an arm measuring its treatment.")
    # an arm flagged as not measuring its treatment is named as left out, and its row says so
    flagged = concentration_lines(table.with_columns(pl.lit(False).alias("is_concentrated"),
                                                     pl.Series("is_treatment_measured", [None, False, True])),
                                  "llm", alpha=0.05)
    assert flagged[2].endswith("Quota(s) 25 are left out: their arms do not measure the treatment, so a change there "
                               "is the quota's displacement of other sources, not the source's concentration.")
    assert flagged[7].endswith("| not measuring the treatment |")


def test_counts_print_in_full_and_rates_to_four_significant_digits():
    from simulator.report import number_cell

    assert (number_cell(20000.0), number_cell(159_600), number_cell(2.5), number_cell(0.087891), number_cell(None)) == (
        "20,000", "159,600", "2.5", "0.08789", "n/a")

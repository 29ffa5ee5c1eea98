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

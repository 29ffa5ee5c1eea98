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

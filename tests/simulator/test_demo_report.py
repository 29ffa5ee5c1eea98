"""The report's verdict table on hand-made run folders: each use's verdict follows its flags, a missing stage
reads "not measured", and the LLM loss curves are a linked plot in the appendix, not a dump."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import polars as pl
import pytest

from llm_predictor.complementarity import complementarity
from llm_predictor.evaluate import EvalConfig, results_table, write_table
from ranking.lift import ARMS, summarize_lift
from simulator.demo import SERVED_METHOD
from tests.simulator.test_sensitivity import dose_response_rows
from simulator.demo_report import _nest_under_section, rebase_links, write_report
from simulator.sensitivity import check_dose_response
from synthetic_data.run_folder import RunFolder

ANCHOR = date(2026, 3, 23)


def verdicts(root) -> dict[str, str]:
    """{use: verdict} of the report's verdict table."""
    report = write_report(root, [("world", 1.0)]).read_text()
    section = report.split("## Verdict")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].removeprefix("| "): cells[-1].removesuffix(" |").strip("*") for cells in rows[1:]}


def verdict_of(root, use_start: str) -> str:
    (verdict,) = [text for use, text in verdicts(root).items() if use.startswith(use_start)]
    return verdict


def test_a_run_without_stages_reads_not_measured_in_every_row(tmp_path):
    found = verdicts(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "_not produced: ab/report.md is missing_" in report
    assert "sensitivity/report.md" not in report  # not a demo stage: no section without it
    assert [use.split(":")[0] for use in found] == ["Predictor", "Ranking features", "Ranking features",
                                                    "Generator A/B", "Dose-response against predictor quality (issue #15)",
                                                    "Quota sweep"]
    assert all(text.startswith("not measured (") for text in found.values()), found


# ---- the A/B (Table 6)

def _ab_stage(root, change: float, interval: tuple[float, float], mde: float, is_significant: bool,
              is_underpowered: bool = False, is_treatment_measured: bool | None = True,
              srm_mismatch: bool = False) -> None:
    """An `ab` stage record with the summary fields of simulator.stages (one treatment arm) and its
    comparisons.parquet's primary row."""
    arm = "llm_generator"
    exposure = {"treatment_sources": "llm_advertiser", "treatment_users": 900, "treatment_impressions": 5_000,
                "treatment_impression_share": 0.04, "treatment_spend_share": 0.05, "planned_roas_mde": mde,
                "is_treatment_measured": is_treatment_measured, "treatment_check": "reached enough"}
    summary = {"srm": {"design": "split", "users": [1000, 1000], "expected_shares": [0.5, 0.5],
                       "p_value": 1e-5 if srm_mismatch else 0.6, "is_mismatch": srm_mismatch},
               "roas_change": {arm: {"relative_change": change, "mde": mde, "p_value": 0.01 if is_significant else 0.5,
                                     "p_value_adjusted": 0.01 if is_significant else 0.5, "nonzero_users": 12,
                                     "is_underpowered": is_underpowered,
                                     "is_treatment_measured": is_treatment_measured,
                                     "is_significant": is_significant}},
               "exposure": {"control": {**exposure, "is_treatment_measured": None}, arm: exposure},
               "aa": {"all": {"rate": 0.06, "low": 0.04, "high": 0.09, "tests": 360, "untestable": 0},
                      "roas": {"rate": 0.05, "low": 0.014, "high": 0.165, "tests": 40, "untestable": 0}}}
    run = RunFolder(root)
    pl.DataFrame({"arm": [arm, arm], "metric": ["roas", "ctr"], "is_primary": [True, False],
                  "ci_low": [interval[0], -0.5], "ci_high": [interval[1], 0.5]}
                 ).write_parquet(run.stage_dir("ab") / "comparisons.parquet")
    run.complete("ab", {"stack": "trained (predictions: llm.parquet; nightly re-inference: history)"},
                 ["comparisons.parquet"], summary)


@pytest.mark.parametrize("flags, expected", [
    ({"is_significant": True}, "measured: +6.00% [+2.00%, +10.00%]"),
    ({"is_significant": False, "mde": 0.02}, "measured: +6.00% [+2.00%, +10.00%], no effect of the paper's size"),
    ({"is_significant": False}, "too thin to say (achieved MDE +13.00% > the paper's +4.94%)"),
    ({"is_significant": True, "is_underpowered": True}, "too thin to say (underpowered: 12 users with a conversion)"),
    ({"is_significant": True, "is_treatment_measured": False},
     "not measuring the treatment (its source reached 900 users, 5,000 impressions, 5.00% of spend)"),
    ({"is_significant": True, "srm_mismatch": True}, "not trustworthy (sample-ratio mismatch)"),
])
def test_ab_verdict_follows_its_flags(tmp_path, flags, expected):
    _ab_stage(tmp_path, **{"change": 0.06, "interval": (0.02, 0.10), "mde": 0.13, **flags})
    assert verdict_of(tmp_path, "Generator A/B") == expected


def test_ab_row_shows_mde_srm_and_exposure_beside_the_paper(tmp_path):
    _ab_stage(tmp_path, 0.06, (0.02, 0.10), 0.13, is_significant=True, is_treatment_measured=False)
    report = write_report(tmp_path, []).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| Generator A/B"))
    assert "Table 6 (US Shopping slice, p = 0.021): +4.94%" in row
    assert ("MDE planned +13.00%, achieved +13.00%; SRM p = 0.6 (ok); A/A rejects 5.0% [1.4%, 16.5%] on RoAS; "
            "exposure 900 users") in row
    assert "(**flagged**)" in row
    # the row names what the generator served: the predictions and the nightly re-inference
    assert row.startswith("| Generator A/B: RoAS (Table 6), arm `llm_generator` (stack: trained (predictions: "
                          "llm.parquet; nightly re-inference: history))")
    assert "Not measuring the treatment, so no result**: Generator A/B: RoAS (Table 6), arm `llm_generator`" in report


# ---- predictor recall (Table 3)

def _llm_eval(root, hits: dict[str, int], labels: int = 40) -> None:
    """llm_eval/results.parquet and complementarity.parquet by the real writers: each method ranks the label's
    advertiser first for its first `hits` users and names another advertiser for the rest."""
    users = pl.int_range(labels, eager=True).cast(pl.Int64)
    label_table = pl.DataFrame({"user_id": users, "anchor_date": ANCHOR, "advertiser_id": 1})
    predictions = {method: pl.DataFrame({"user_id": users, "anchor_date": ANCHOR, "rank": 1,
                                         "advertiser_id": (users >= count).cast(pl.Int32) + 1})
                   for method, count in hits.items()}
    table = results_table(predictions, {"v1": label_table}, EvalConfig())
    write_table(table, root / "llm_eval", "results", "Advertiser prediction")
    write_table(complementarity(predictions, label_table, "most_recent"), root / "llm_eval", "complementarity", "")


def test_recall_is_judged_by_the_paired_difference_from_the_most_recent_list(tmp_path):
    _llm_eval(tmp_path, {SERVED_METHOD: 4, "most_recent": 30, "popularity": 10})
    assert verdict_of(tmp_path, "Predictor") == ("measured: R@20 0.100 [0.040, 0.231], below the most-recent list's "
                                                 "on the same 40 labels: -0.650 [-0.779, -0.495]")
    # 26 against 30 hits: the two Wilson intervals overlap, the paired difference does not reach 0
    _llm_eval(tmp_path, {SERVED_METHOD: 26, "most_recent": 30, "popularity": 10})
    assert verdict_of(tmp_path, "Predictor") == ("measured: R@20 0.650 [0.495, 0.779], below the most-recent list's "
                                                 "on the same 40 labels: -0.100 [-0.231, -0.004]")
    _llm_eval(tmp_path, {SERVED_METHOD: 28, "most_recent": 30, "popularity": 10})
    assert verdict_of(tmp_path, "Predictor") == ("too thin to say (R@20 0.700 [0.546, 0.819], level with the "
                                                 "most-recent list's on the same 40 labels: -0.050 [-0.165, +0.042])")
    _llm_eval(tmp_path, {SERVED_METHOD: 36, "most_recent": 30, "popularity": 10})
    assert verdict_of(tmp_path, "Predictor").endswith("above the most-recent list's on the same 40 labels: "
                                                      "+0.150 [+0.049, +0.291]")
    (tmp_path / "llm_eval" / "complementarity.parquet").unlink()
    assert verdict_of(tmp_path, "Predictor").startswith("not measured (no paired comparison")


def test_the_served_method_is_the_one_the_run_chose_on_validation_users(tmp_path):
    RunFolder(tmp_path).complete("llm_choice", {}, [], {"method": "behaviour_ranked_open"})
    _llm_eval(tmp_path, {"behaviour_ranked_open": 28, SERVED_METHOD: 4, "most_recent": 30, "popularity": 10})
    assert verdict_of(tmp_path, "Predictor").startswith("too thin to say (R@20 0.700 [0.546, 0.819], level with")


# ---- ranking lift (Table 5)

def _lift(root, positives: int, has_signal: bool = True, users: int = 60) -> None:
    """ranking_eval/lift_summary.parquet by summarize_lift on hand-made scores (one impression per user, two
    seeds, DCN ctcvr): with the LLM lists the positives score highest (`has_signal`), otherwise every arm's
    scores are random."""
    rng = np.random.default_rng(0)
    label = (np.arange(users) < positives).astype(np.int8)
    frames = []
    for run_seed in (0, 1):
        for arm in ARMS:
            probability = (0.2 + 0.7 * label + 0.05 * rng.random(users) if has_signal and arm == "with_llm"
                           else rng.random(users))
            frames.append(pl.DataFrame({"seed": run_seed, "arm": arm, "model": "dcn", "task": "ctcvr",
                                        "row": np.arange(users, dtype=np.int32), "user_id": np.arange(users),
                                        "label": label, "probability": probability}))
    summary = summarize_lift(pl.concat(frames), replicates=200)
    summary.write_parquet(RunFolder(root).stage_dir("ranking_eval") / "lift_summary.parquet")


def test_lift_with_an_interval_above_zero_is_measured(tmp_path):
    _lift(tmp_path, positives=20)
    verdict = verdict_of(tmp_path, "Ranking features: ctcvr")
    assert re.fullmatch(r"measured: \+[\d.]+% \[\+[\d.]+%, \+[\d.]+%\]", verdict), verdict
    assert verdict_of(tmp_path, "Ranking features: vtcvr").startswith(
        "not measured (the lift ran for ctcvr only (the demo's held-out users have too few vtcvr positives")


def test_lift_without_a_positive_in_some_replicates_is_too_thin(tmp_path):
    _lift(tmp_path, positives=2)
    assert re.fullmatch(r"too thin to say \(2 test positives: \d+ bootstrap replicates without a positive\)",
                        verdict_of(tmp_path, "Ranking features: ctcvr"))


def test_lift_whose_interval_cannot_resolve_the_papers_effect_is_too_thin(tmp_path):
    _lift(tmp_path, positives=12, has_signal=False)
    assert re.fullmatch(r"too thin to say \(12 test positives: achieved MDE \+[\d.]+% > the paper's \+0\.71%\)",
                        verdict_of(tmp_path, "Ranking features: ctcvr"))


# ---- dose-response (issue #15) and the quota sweep

def _sensitivity(root, points: list[tuple[float, float, float, float]], control: tuple[float, float] | None) -> None:
    """A sensitivity stage whose summary holds check_dose_response's check of `ab_roas`, as the stage records it,
    and its report section."""
    check = check_dose_response(dose_response_rows(points, control), "ab_roas")
    run = RunFolder(root)
    (run.stage_dir("sensitivity") / "report.md").write_text("### Dose-response\n\nthe stage's findings\n")
    run.complete("sensitivity", {}, ["report.md"], {"checks": [{**check.__dict__, "violations": list(check.violations)}]})


@pytest.mark.parametrize("points, control, expected", [
    ([(0.2, 0.0, -1.0, 1.0), (0.9, 6.0, 3.0, 9.0)], (-1.0, 1.0),
     "measured: rises monotonically; best oracle point `oracle_q1` [+3.00%, +9.00%]"),
    ([(0.2, 8.0, 5.0, 11.0), (0.9, 6.0, 3.0, 9.0)], (-1.0, 1.0),  # overlapping intervals, falling estimates
     "measured: shows no rise (estimates do not rise); best oracle point `oracle_q1` [+3.00%, +9.00%]"),
    ([(0.2, 0.0, -1.0, 1.0), (0.9, 1.0, -1.0, 3.0)], (-1.0, 1.0),
     "too thin to say (the best oracle point's interval covers 0)"),
    ([(0.2, 0.0, -1.0, 1.0), (0.9, 6.0, 3.0, 9.0)], (0.5, 2.0),
     "not trustworthy (the random control's interval excludes 0)"),
    ([(0.2, 0.0, -1.0, 1.0), (0.9, 6.0, 3.0, 9.0)], None, "too thin to say (no random control)"),
])
def test_dose_response_verdict_needs_a_detected_oracle_and_a_null_control(tmp_path, points, control, expected):
    _sensitivity(tmp_path, points, control)
    assert verdict_of(tmp_path, "Dose-response: Return on ad spend") == expected
    assert "## Dose-response: how good must the predictor be? (issue #15)\n\nthe stage's " \
           "findings" in (tmp_path / "report.md").read_text()


def test_dose_response_against_random_lists_needs_no_control_interval(tmp_path):
    """`ab_info_roas` compares each source's arm with the random control's arm: the control is the reference, so
    a detected best oracle point is a measurement, not "no random control"."""
    table = pl.DataFrame([{"source": f"oracle_q{index}", "kind": "oracle", "q": recall, "status": "measured",
                           "recall_at_20": recall, "ab_info_roas": change, "ab_info_roas_low": low,
                           "ab_info_roas_high": high}
                          for index, (recall, change, low, high) in enumerate([(0.2, 0.5, -1.0, 2.0),
                                                                               (0.9, 6.0, 3.0, 9.0)])])
    check = check_dose_response(table, "ab_info_roas")
    RunFolder(tmp_path).complete("sensitivity", {}, [], {"checks": [{**check.__dict__,
                                                                     "violations": list(check.violations)}]})
    assert verdict_of(tmp_path, "Dose-response: Return on ad spend against random lists") == (
        "measured: rises monotonically; best oracle point `oracle_q1` [+3.00%, +9.00%]")


def test_a_check_recorded_before_estimates_rise_is_reread_from_the_sensitivity_table(tmp_path):
    """A run recorded before the check gained `estimates_rise` (make demo at bfc4471) must not read falling
    estimates as a rise: with `sensitivity/table.parquet` present the verdict re-reads the check from it."""
    table = dose_response_rows([(0.2, 8.0, 5.0, 11.0), (0.9, 6.0, 3.0, 9.0)], (-1.0, 1.0))  # overlapping, falling
    check = check_dose_response(table, "ab_roas").__dict__
    old = {key: value for key, value in check.items() if key not in ("estimates", "estimates_rise")}
    run = RunFolder(tmp_path)
    table.write_parquet(run.stage_dir("sensitivity") / "table.parquet")
    run.complete("sensitivity", {}, [], {"checks": [{**old, "violations": list(old["violations"])}]})
    assert verdict_of(tmp_path, "Dose-response: Return on ad spend") == (
        "measured: shows no rise (estimates do not rise); best oracle point `oracle_q1` [+3.00%, +9.00%]")


@pytest.mark.parametrize("flags, quota, expected", [
    ((True, True), 100, "measured: concentration quota 100"),
    ((False, True), None, "measured: no quota over-concentrates"),
    ((False, False), None, "not measuring the treatment (2 of 2 treatment arms flagged by exposure)"),
])
def test_sweep_verdict_reads_the_concentration_quota_unless_no_arm_measured_its_treatment(tmp_path, flags, quota,
                                                                                          expected):
    exposure = {"llm_advertiser_quota_0": {"treatment_users": 0, "is_treatment_measured": None},
                **{f"llm_advertiser_quota_{q}": {"treatment_users": 50, "is_treatment_measured": flag}
                   for q, flag in zip((25, 100), flags)}}
    srm = {"design": "paired", "users": [500] * 3, "expected_shares": [1.0] * 3, "p_value": None, "is_mismatch": False}
    RunFolder(tmp_path).complete("sweep", {"quotas": [0, 25, 100]}, [],
                                 {"srm": srm, "exposure": exposure, "concentration_quota": quota})
    assert verdict_of(tmp_path, "Quota sweep") == expected


# ---- the appendix

def test_llm_losses_are_a_linked_plot_and_a_table_in_the_appendix(tmp_path):
    run = RunFolder(tmp_path)
    run.complete("llm_pretrain", {}, [], {"steps": 150, "first_loss": 8.6, "last_loss": 1.9, "losses": [8.6, 4.0, 1.9],
                                          "tokens_per_second": 510.2, "share_of_bf16_ceiling": 0.3071,
                                          "seconds": 593.7})
    run.complete("llm_grpo", {}, [], {"steps": 10, "losses": [0.02, -0.1], "rewards": [-3.3, -3.4], "seconds": 236.1})
    report = write_report(tmp_path, [("llm", 830.0)]).read_text()
    assert (tmp_path / "plots" / "llm_training_loss.png").stat().st_size > 0
    appendix = report.split("## Appendix")[1]
    assert report.count("](plots/llm_training_loss.png)") == 1 and "](plots/llm_training_loss.png)" in appendix
    assert "| `llm_pretrain` | 150 | 8.600 | 1.900 | 510 | 30.7% | 593.7 |" in appendix
    assert "| `llm_grpo` | 10 | n/a | n/a | n/a | n/a | 236.1 |" in appendix
    assert "| **total** | 830.0 |" in appendix
    assert "8.6, 4.0" not in report and "'losses'" not in report  # no dumped lists or dicts
    assert report.index("## Verdict") < report.index("## The world") < report.index("## Appendix")


def test_stage_links_are_rebased_from_the_stage_folder_to_the_run_root(tmp_path):
    """A stage report links its plots relative to its own folder (so it renders where it is); embedded in the
    run's report.md the same links must resolve from the run's root. Absolute paths and URLs stay as they are."""
    stage = tmp_path / "sweep"
    text = ("![sweep_funnel](../plots/sweep_funnel.png) and ![local](table.png) "
            "![abs](/tmp/x.png) ![web](https://example.org/a.png) [a link](../plots/not_an_image.png)")
    assert rebase_links(text, stage, tmp_path) == (
        "![sweep_funnel](plots/sweep_funnel.png) and ![local](sweep/table.png) "
        "![abs](/tmp/x.png) ![web](https://example.org/a.png) [a link](../plots/not_an_image.png)")


def test_a_stage_report_nests_under_its_section_which_replaces_its_own_title():
    assert _nest_under_section("# Top\n\ntext\n## Sub\n### Deep") == "text\n### Sub\n#### Deep"
    assert _nest_under_section("### Top\n#### Sub") == "### Sub"
    assert _nest_under_section("text first\n# Heading") == "text first\n### Heading"
    assert _nest_under_section("no heading") == "no heading"

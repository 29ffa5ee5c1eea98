"""docs/results.md's generated part on a hand-made run folder: the page shows the figures its records hold, a
re-run replaces only the part between the markers, and a missing record names its file and its command."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from simulator.demo import SERVED_METHOD
from simulator.results_page import BEGIN, END, MissingRecordError, write_results_page
from simulator.sensitivity import check_dose_response
from synthetic_data.run_folder import RunFolder
from tests.simulator.test_demo_report import _lift, _llm_eval
from tests.simulator.test_sensitivity import dose_response_rows

SRM = {"design": "paired", "users": [5000, 5000], "expected_shares": [1.0, 1.0], "p_value": None,
       "is_mismatch": False}
EXPERIMENT = {"simulation": {"days": 2}, "design": "paired", "sweep_design": "paired", "method": "delta",
              "cuped": True, "alpha": 0.05, "aa_splits": 200}
CHECK = "reached 700 users and 4,321 impressions, 2.50% of the arm's spend, at least its MDE on RoAS of +1.10%"


def _ab(run: RunFolder) -> None:
    """An `ab` stage as simulator.stages records it: one treatment arm whose RoAS rose 1.23% [0.40%, 2.07%]."""
    folder = run.stage_dir("ab")
    pl.DataFrame({"arm": ["control", "llm_generator"], "is_control": [True, False], "users": [5000, 5000],
                  "days": [2, 2], "planned_roas_mde": [None, 0.0456], "is_treatment_measured": [None, True],
                  "treatment_check": ["control arm", CHECK]}).write_parquet(folder / "arms.parquet")
    pl.DataFrame({"arm": ["llm_generator"] * 2, "metric": ["roas", "ctr"], "control": [7.5, 0.08],
                  "treatment": [7.59, 0.0801], "relative_change": [0.0123, 0.001], "ci_low": [0.004, -0.01],
                  "ci_high": [0.0207, 0.012], "mde": [0.011, 0.02], "p_value": [0.003, 0.8],
                  "p_value_adjusted": [0.003, 0.8], "is_primary": [True, False], "is_treatment_measured": [True] * 2,
                  "is_underpowered": [False] * 2, "is_significant": [True, False], "arm_users": [5000] * 2,
                  "nonzero_users": [640, 900]}).write_parquet(folder / "comparisons.parquet")
    exposure = {"treatment_sources": "llm_advertiser", "treatment_users": 700, "treatment_impressions": 4321,
                "treatment_impression_share": 0.02, "treatment_spend_share": 0.025, "planned_roas_mde": 0.0456,
                "is_treatment_measured": True, "treatment_check": CHECK}
    run.complete("ab", {"experiment": EXPERIMENT, "stack": "trained (two-tower `clicks`)"},
                 ["arms.parquet", "comparisons.parquet"],
                 {"seconds": 161.0, "srm": SRM, "served_users": 300,
                  "aa": {"all": {"rate": 0.058, "low": 0.046, "high": 0.073, "tests": 1200},
                         "roas": {"rate": 0.06, "low": 0.035, "high": 0.102, "tests": 200}},
                  "roas_change": {"llm_generator": {"relative_change": 0.0123, "mde": 0.011, "p_value": 0.003,
                                                    "p_value_adjusted": 0.003, "nonzero_users": 640,
                                                    "is_underpowered": False, "is_treatment_measured": True,
                                                    "is_significant": True}},
                  "served_roas_change": {"llm_generator": {"relative_change": 0.052, "ci_low": 0.01,
                                                           "ci_high": 0.095}},
                  "exposure": {"control": {**exposure, "is_treatment_measured": None}, "llm_generator": exposure}})


def _sweep(run: RunFolder) -> None:
    """A two-quota `sweep` stage whose quota-25 arm lowered RoAS 0.07% [-0.33%, +0.18%]."""
    folder = run.stage_dir("sweep")
    pl.DataFrame({"quota": [0, 25], "is_control": [True, False], "roas_change": [None, -0.0007],
                  "roas_ci_low": [None, -0.0033], "roas_ci_high": [None, 0.0018], "roas_mde": [None, 0.0037],
                  "roas_p_value": [None, 0.57], "roas_is_underpowered": [None, False],
                  "roas_is_significant": [None, False], "roas_arm_users": [None, 5000],
                  "roas_nonzero_users": [None, 640], "treatment_users": [0, 54],
                  "treatment_spend_share": [0.0, 0.0009], "advertiser_entropy": [5.127, 5.126],
                  "is_treatment_measured": [None, False]}).write_parquet(folder / "sweep.parquet")
    run.complete("sweep", {"experiment": EXPERIMENT, "source": "llm_advertiser", "quotas": [0, 25]},
                 ["sweep.parquet"], {"seconds": 83.1, "srm": SRM, "concentration_quota": None,
                                     "exposure": {"llm_advertiser_quota_25": {"treatment_users": 54,
                                                                              "is_treatment_measured": False}}})


def _sensitivity(run: RunFolder) -> None:
    """A `sensitivity` stage: two oracle points and the random control on the A/B's RoAS."""
    table = dose_response_rows([(0.24, -0.54, -1.67, 0.59), (0.85, -6.18, -7.62, -4.72)], (-0.70, 0.11))
    table = table.with_columns(recall_labels=pl.lit(440.0), recall_at_20_low=pl.col("recall_at_20") - 0.04,
                               recall_at_20_high=pl.col("recall_at_20") + 0.04)
    table.write_parquet(run.stage_dir("sensitivity") / "table.parquet")
    check = check_dose_response(table, "ab_roas")
    run.complete("sensitivity", {}, ["table.parquet"],
                 {"seconds": 207.2, "checks": [{**check.__dict__, "violations": list(check.violations)}]})


@pytest.fixture
def run_folder(tmp_path):
    """A run folder holding every record the page requires (ranking_eval_recent, optional, is left out)."""
    root = tmp_path / "runs" / "demo"
    run = RunFolder(root)
    run.complete("world", {}, [], {"rows": {"users": 12_345, "advertisers": 67, "events": 890_123}, "seconds": 5.8})
    _llm_eval(root, {SERVED_METHOD: 4, "most_recent": 30, "popularity": 10})
    _lift(root, positives=20)
    run.complete("ranking_eval", {}, ["lift_summary.parquet"], {"prediction_source": "llm_grpo_constrained",
                                                                "seconds": 13.3})
    _ab(run)
    _sweep(run)
    _sensitivity(run)
    return root


def test_the_page_shows_the_figures_of_the_runs_records(run_folder, tmp_path):
    out = write_results_page(run_folder, tmp_path / "docs" / "results.md")
    page = out.read_text()
    revision = json.loads((run_folder / "manifest.json").read_text())["git_revision"]
    assert page.startswith(f"# Results\n\n{BEGIN}\n") and page.endswith(f"{END}\n")
    assert f"git revision `{revision}`" in page
    assert f"`adsim results --run {run_folder} --out {out}`" in page
    assert "The world: 12,345 users, 67 advertisers, 890,123 events." in page
    assert "| `ab` | 161.0 |" in page and "| **sum** | 470.4 |" in page  # world, ranking_eval, ab, sweep, sensitivity
    # Table 3: 4 of 40 labels hit, with its Wilson interval (the verdict and the recall table both read it)
    assert f"| `{SERVED_METHOD}` | 40 | 0.100 [0.040, 0.231] | 0.100 [0.040, 0.231] | 0.100 [0.040, 0.231] |" in page
    assert "| dcn | ctcvr | with_llm vs without_llm | 20 / 60 / 60 |" in page  # Table 5 from lift_summary.parquet
    assert ("_not in this run: `ranking_eval_recent/lift_summary.parquet` is missing (written by `adsim rank eval "
            f"--run {run_folder} --predictions {run_folder}/ranking_inputs_heldout/recent_advertisers.parquet "
            "--stage ranking_eval_recent`)_") in page
    assert ("| llm_generator | Return on ad spend (primary) | 7.5 | 7.59 | +1.23% | [+0.40%, +2.07%] | +1.10% | 0.003 "
            "| 0.003 | significant |") in page
    assert "**measured: +1.23% [+0.40%, +2.07%]**" in page  # the verdict row of the same record
    assert "6.0% [3.5%, 10.2%] of 200 tests on roas" in page
    assert "RoAS: arm `llm_generator` +5.20% [+1.00%, +9.50%]" in page
    assert "| 25 | -0.07% [-0.33%, +0.18%] | +0.37% | 54 | 0.09% | 5.126 | not measuring the treatment |" in page
    assert "oracle_q1 [-7.62, -4.72] lies entirely below oracle_q0 [-1.67, +0.59]" in page
    assert "| oracle_q1 | oracle | 0.850 [0.810, 0.890] (440 labels) | -6.18% [-7.62, -4.72] |" in page


def test_a_rerun_replaces_only_the_generated_part(run_folder, tmp_path):
    out = tmp_path / "results.md"
    before, after = "# Results\n\nHand-written opening.\n\n", "\n\n## History\n\nmeasured at `abc1234`: 42 s\n"
    out.write_text(f"{before}{BEGIN}\nstale figure 99.9\n{END}{after}")
    write_results_page(run_folder, out)
    page = out.read_text()
    assert page.startswith(before + BEGIN) and page.endswith(END + after)
    assert "stale figure" not in page and "+1.23%" in page
    write_results_page(run_folder, out)
    assert out.read_text() == page  # nothing in the part depends on when it was written


def test_a_missing_record_names_its_file_and_the_command_that_writes_it(run_folder, tmp_path):
    (run_folder / "ab" / "comparisons.parquet").unlink()
    (run_folder / "sensitivity" / "stage.json").unlink()
    out = tmp_path / "results.md"
    with pytest.raises(MissingRecordError) as error:
        write_results_page(run_folder, out)
    message = str(error.value)
    assert f"{run_folder}/ab/comparisons.parquet (written by `adsim ab --run {run_folder}`)" in message
    assert f"{run_folder}/sensitivity/stage.json (written by `adsim sensitivity --run {run_folder}`)" in message
    assert f"`adsim demo --run {run_folder}` writes them all" in message
    assert not out.exists()

    from simulator.cli import app

    result = CliRunner().invoke(app, ["results", "--run", str(run_folder), "--out", str(out)])
    assert result.exit_code == 2
    assert "adsim ab --run" in " ".join(result.output.split())


def test_a_page_without_its_markers_is_not_overwritten(run_folder, tmp_path):
    out = tmp_path / "README.md"
    out.write_text("# Someone's page\n")
    with pytest.raises(ValueError, match="needs exactly one generated part"):
        write_results_page(run_folder, out)
    assert out.read_text() == "# Someone's page\n"


def test_the_grpo_effect_is_shown_as_paired_differences(tmp_path):
    from llm_predictor.evaluate import write_table
    from simulator.results_page import grpo_effect_lines

    assert grpo_effect_lines(tmp_path) == []  # before GRPO has run
    row = _effect_row("grpo_ranked", "sft_single_ranked",
                      {1: (0.064, 0.027, 0.102), 5: (0.125, 0.082, 0.169), 20: (0.036, 0.006, 0.069)})
    write_table(pl.DataFrame([row]), tmp_path / "llm_eval", "grpo_effect", "t")
    assert ("| `grpo_ranked` | `sft_single_ranked` | evaluation | 440 | 440 | +0.064 [+0.027, +0.102] | "
            "+0.125 [+0.082, +0.169] | +0.036 [+0.006, +0.069] |") in grpo_effect_lines(tmp_path)


def test_the_ceiling_gap_is_shown_where_the_world_has_one(tmp_path):
    from llm_predictor.evaluate import write_table
    from simulator.results_page import ceiling_gap_lines

    assert ceiling_gap_lines(tmp_path) == []  # a world adsim did not generate has no ceiling
    row = _effect_row("lightgbm_pairs_prompt", "next_conversion_ceiling",
                      {1: (-0.018, -0.05, 0.01), 5: (-0.02, -0.06, 0.01), 20: (-0.089, -0.12, -0.06)})
    write_table(pl.DataFrame([row]), tmp_path / "llm_eval", "ceiling_gap", "t")
    assert ("| `lightgbm_pairs_prompt` | `next_conversion_ceiling` | evaluation | 440 | 440 | -0.018 [-0.050, +0.010] "
            "| -0.020 [-0.060, +0.010] | -0.089 [-0.120, -0.060] |") in ceiling_gap_lines(tmp_path)


def _effect_row(method: str, reference: str, deltas: dict) -> dict:
    """One `evaluate.paired_effects_table` row on 440 labels: deltas = {K: (difference, low, high)}."""
    row = {"anchors": "evaluation", "method": method, "reference": reference, "n_labels": 440, "n_users": 440,
           "interval": "Tango"}
    for k, (value, low, high) in deltas.items():
        row |= {f"delta_recall_at_{k}": value, f"delta_recall_at_{k}_low": low, f"delta_recall_at_{k}_high": high}
    return row

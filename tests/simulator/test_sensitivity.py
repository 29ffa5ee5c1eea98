import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from llm_predictor.config import resolve_config
from llm_predictor.stages import prediction_keys
from simulator import sensitivity
from simulator.oracle import ALL_USERS
from llm_predictor.metrics import recall_at_k
from simulator.cli import app
from simulator.sensitivity import (AB_METRICS, SensitivityConfig, check_dose_response, finding, method_overrides,
                                   sensitivity_stage)
from synthetic_data.config_io import ConfigError, load_config, to_dict
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES

# A world where a 20-advertiser list is a real choice (the tiny preset's 26 eligible advertisers are not:
# docs/oracle.md): 150 advertisers, 16 V1 eval labels, so Recall@20 moves in steps of 1/16.
WIDE = ["advertisers.n_advertisers=150"]
# A one-day market with a light bootstrap: seconds per source on the baseline stack
FAST_AB = ["--set", "tolerance=0.1", "--set", "experiment.simulation.days=1", "--set", "experiment.bootstrap_samples=100",
           "--set", "experiment.simulation.traffic.sessions_per_user_day=0.5"]


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A run folder with the wide tiny world, and most-recent-advertiser lists as a real method: held-out
    (every label anchor) and serving (the world's last day)."""
    from ranking.recency_predictions import recent_advertiser_predictions
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    config = preset("tiny", WIDE)
    world = generate_world(config, progress=False)
    root = tmp_path_factory.mktemp("sensitivity_run")
    world.write(root / "world")
    RunFolder(root).complete("world", to_dict(config), [f"{table}.parquet" for table in WORLD_TABLES])
    anchors = world.labels["anchor_date"].unique().to_list()
    last_day = world.events["ts"].max().date()
    recent = recent_advertiser_predictions(world.events, world.advertisers, [*anchors, last_day], 20)
    (root / "recent").mkdir()
    recent.filter(pl.col("anchor_date").is_in(anchors)).write_parquet(root / "recent" / "heldout.parquet")
    recent.filter(pl.col("anchor_date") == last_day).write_parquet(root / "recent" / "serving.parquet")
    return root, world


def _ab_arguments(root, grid: str) -> list[str]:
    return ["sensitivity", "--run", str(root), "--stack", "baseline", "--parts", "ab", "--q-grid", grid, "--quiet",
            "--method", f"recent={root / 'recent' / 'heldout.parquet'},{root / 'recent' / 'serving.parquet'}",
            *FAST_AB]


@pytest.fixture(scope="module")
def ab_stage(wide_run):
    """The A/B part run once through the CLI on q = 0.5 (reachable) and 1.0 (above the pure oracle)."""
    root, _ = wide_run
    result = CliRunner().invoke(app, _ab_arguments(root, "0.5,1.0"))
    assert result.exit_code == 0, result.output
    return (pl.read_parquet(root / "sensitivity" / "table.parquet"), (root / "sensitivity" / "report.md").read_text(),
            RunFolder(root).stage_record("sensitivity"))


def _v1_labels(world):
    from llm_predictor.evaluate import evaluation_labels

    return evaluation_labels(world, resolve_config("small", None, None).eval.evaluation)["v1"]


def test_stage_writes_one_row_per_source_and_q_with_recall_and_ab_changes(ab_stage, wide_run):
    table, report, record = ab_stage
    root, world = wide_run
    assert table["source"].to_list() == ["random_control", "oracle_q0.5", "oracle_q1", "recent"]
    assert table["kind"].to_list() == ["random", "oracle", "oracle", "method"] and table["q"].to_list()[1:3] == [0.5, 1]
    measured = table.filter(pl.col("status") == "measured")
    assert measured["source"].to_list() == ["random_control", "oracle_q0.5", "oracle_q1", "recent"]
    for metric in AB_METRICS:  # every A/B change with its interval, in percent
        assert measured[f"ab_{metric}"].is_finite().all()
        assert (measured[f"ab_{metric}_low"] <= measured[f"ab_{metric}_high"]).all()
    assert measured["ab_treatment_impressions"].min() > 0
    # Recall@20 measured the same way for each source: on the V1 eval labels its lists name
    labels = _v1_labels(world)
    rows = {row["source"]: row for row in measured.iter_rows(named=True)}
    oracle_lists = pl.read_parquet(root / "oracle_q0.5_heldout_all" / "predictions.parquet")
    assert rows["oracle_q0.5"]["recall_at_20"] == recall_at_k(oracle_lists, labels)[20]
    assert abs(rows["oracle_q0.5"]["recall_at_20"] - 0.5) <= 0.1
    random_lists = pl.read_parquet(root / "sensitivity" / "random_control" / "heldout.parquet")
    assert rows["random_control"]["recall_at_20"] == recall_at_k(random_lists, labels)[20]
    assert rows["random_control"]["recall_labels"] == labels.height and rows["random_control"]["recall_coverage"] == 1
    assert random_lists.group_by("user_id", "anchor_date").len()["len"].unique().to_list() == [20]
    recent = pl.read_parquet(root / "recent" / "heldout.parquet")
    assert rows["recent"]["recall_at_20"] == recall_at_k(recent, labels.join(recent, on=["user_id", "anchor_date"],
                                                                              how="semi"))[20]
    # q = 1 is above the pure oracle's Recall@20: measured at w = 1 (clamp, the default), saying so
    clamped = rows["oracle_q1"]
    ceiling = rows["oracle_q0.5"]["ceiling_recall_at_20"]
    assert ceiling < 0.9 and clamped["weight"] == 1.0 and clamped["recall_at_20"] == ceiling
    assert "outside the reachable Recall@20 range" in clamped["reason"] and "w = 1" in clamped["reason"]
    # the controls cover every serving user, not the LLM preset's sample of them
    serving = pl.read_parquet(root / "oracle_q0.5_serving_all" / "predictions.parquet")
    everyone = prediction_keys(world, resolve_config("small", None, ALL_USERS), "serving")
    assert serving["user_id"].n_unique() == everyone.height > prediction_keys(
        world, resolve_config("small", None, ["serving_max_users=50"]), "serving").height == 50
    # the report: findings, reachable range, the clamped q, the table and the plot
    assert (root / "plots" / "sensitivity_ab.png").stat().st_size > 10_000
    assert "![sensitivity_ab](../plots/sensitivity_ab.png)" in report  # resolves from sensitivity/report.md
    assert "- Return on ad spend (change, %): **" in report and "over 2 oracle points" in report
    assert f"to {ceiling:.3f} (lists ranked by the true response" in report and "`oracle_q1` (q = 1)" in report
    assert report.count("| oracle_q0.5 | oracle |") == 1 and "| recent | method |" in report
    assert record["summary"]["rows"] == {"measured": 4}
    checks = [check["metric"] for check in record["summary"]["checks"]]
    assert checks == ["ab_revenue_per_user", "ab_roas", "ab_info_revenue_per_user", "ab_info_roas"]
    # each source's arm against the random control's arm on the same users (information_columns)
    info = table.select("source", "ab_info_roas", "ab_info_roas_low", "ab_info_roas_high")
    assert info.filter(pl.col("source") == "random_control")["ab_info_roas"].is_null().all()
    oracles = info.filter(pl.col("source").str.starts_with("oracle"))  # the controls cover the same serving users
    assert oracles["ab_info_roas"].is_finite().all() and (oracles["ab_info_roas_low"] <= oracles["ab_info_roas_high"]).all()
    served = dict(table.select("source", "ab_serving_users").rows())
    recent = table.filter(pl.col("source") == "recent").row(0, named=True)
    assert served["oracle_q1"] == served["random_control"] != served["recent"]  # the method covers other users
    assert recent["ab_info_roas"] is None and f"cover {served['recent']:,} users" in recent["ab_info_reason"]
    reference = pl.read_parquet(root / "sensitivity" / "random_control" / "ab_users.parquet")
    oracle_arm = pl.read_parquet(root / "sensitivity" / "oracle_q1" / "ab_users.parquet")
    ratio = lambda frame: frame["conversion_value"].sum() / frame["spend"].sum()  # noqa: E731
    assert rows["oracle_q1"]["ab_roas"] is not None
    assert info.filter(pl.col("source") == "oracle_q1")["ab_info_roas"].item() == pytest.approx(
        (ratio(oracle_arm) / ratio(reference) - 1) * 100)


def test_rerun_measures_only_the_new_q(ab_stage, wide_run, monkeypatch):
    root, _ = wide_run
    run = RunFolder(root)
    finished = {stage: run.stage_record(f"sensitivity/{stage}")["finished_at"]
                for stage in ("random_control", "oracle_q0.5", "oracle_q1", "method_recent")}
    calls, run_ab = [], sensitivity.run_ab

    def counted_run_ab(*arguments, **keywords):
        calls.append(arguments)
        return run_ab(*arguments, **keywords)

    monkeypatch.setattr(sensitivity, "run_ab", counted_run_ab)
    result = CliRunner().invoke(app, _ab_arguments(root, "0.5,0.7,1.0"))
    assert result.exit_code == 0, result.output
    assert len(calls) == 1  # only q = 0.7's market ran
    assert {stage: run.stage_record(f"sensitivity/{stage}")["finished_at"] for stage in finished} == finished
    table = pl.read_parquet(root / "sensitivity" / "table.parquet")
    assert table["source"].to_list() == ["random_control", "oracle_q0.5", "oracle_q0.7", "oracle_q1", "recent"]
    assert abs(table.filter(pl.col("source") == "oracle_q0.7")["recall_at_20"].item() - 0.7) <= 0.1
    stage = run.stage_record("sensitivity")["finished_at"]
    again = CliRunner().invoke(app, _ab_arguments(root, "0.5,0.7,1.0"))
    assert again.exit_code == 0 and len(calls) == 1 and run.stage_record("sensitivity")["finished_at"] == stage


def dose_response_rows(points: list[tuple[float, float, float, float]], control: tuple[float, float] | None) -> pl.DataFrame:
    """Hand-made table rows: oracle points (Recall@20, change, low, high), then an optional random control."""
    rows = [{"source": f"oracle_q{index}", "kind": "oracle", "q": recall, "status": "measured",
             "recall_at_20": recall, "ab_roas": change, "ab_roas_low": low, "ab_roas_high": high}
            for index, (recall, change, low, high) in enumerate(points)]
    if control is not None:
        rows.append({"source": "random_control", "kind": "random", "q": None, "status": "measured",
                     "recall_at_20": 0.05, "ab_roas": sum(control) / 2, "ab_roas_low": control[0],
                     "ab_roas_high": control[1]})
    rows.append({"source": "oracle_q9", "kind": "oracle", "q": 1.0, "status": "skipped", "recall_at_20": None,
                 "ab_roas": None, "ab_roas_low": None, "ab_roas_high": None})
    return pl.DataFrame(rows, schema_overrides={"q": pl.Float64, "recall_at_20": pl.Float64})


def test_monotone_within_intervals_when_no_later_interval_lies_below_an_earlier_one():
    # given out of order; ordered by Recall@20 the estimates dip (4 -> 3) but the intervals overlap
    rows = dose_response_rows([(0.8, 3.0, 0.5, 6.0), (0.2, 0.0, -2.0, 2.0), (0.5, 4.0, 1.0, 7.0)], control=(-1.5, 1.0))
    check = check_dose_response(rows, "ab_roas")
    assert (check.points, check.is_monotone, check.violations) == (3, True, ())
    assert check.control_interval == (-1.5, 1.0) and check.control_covers_zero is True
    # no interval lies below an earlier one, but the estimates dip: that is no rise, and it says so
    assert check.estimates == (0.0, 4.0, 3.0) and check.estimates_rise is False
    assert "**shows no rise**" in finding(check) and "(+0.00%, +4.00%, +3.00%)" in finding(check)
    assert "[-1.50%, +1.00%] covers 0" in finding(check)
    rising = check_dose_response(dose_response_rows([(0.2, 0.0, -2.0, 2.0), (0.5, 3.0, 0.5, 6.0),
                                                     (0.8, 4.0, 1.0, 7.0)], control=(-1.5, 1.0)), "ab_roas")
    assert rising.estimates_rise is True
    assert "**rises monotonically within its 95% intervals** over 3 oracle points" in finding(rising)
    assert (check.top, check.top_interval) == ("oracle_q0", (0.5, 6.0))  # the point of highest Recall@20
    assert "`oracle_q0`, has [+0.50%, +6.00%], which lies above 0" in finding(check)


def test_not_monotone_names_each_point_whose_interval_lies_below_an_earlier_one():
    rows = dose_response_rows([(0.2, 0.0, -1.0, 1.0), (0.5, 5.0, 3.0, 7.0), (0.8, -4.0, -6.0, -2.0)], control=(0.5, 2.0))
    check = check_dose_response(rows, "ab_roas")
    assert check.is_monotone is False
    assert check.violations == ("oracle_q2 [-6.00, -2.00] lies entirely below oracle_q0 [-1.00, +1.00]",
                                "oracle_q2 [-6.00, -2.00] lies entirely below oracle_q1 [+3.00, +7.00]")
    assert check.control_covers_zero is False and "**excludes 0**" in finding(check)
    assert "**does not rise monotonically** over 3 oracle points" in finding(check)
    assert "`oracle_q2`, has [-6.00%, -2.00%], which lies below 0" in finding(check)


def test_check_without_enough_points_or_control_says_so():
    check = check_dose_response(dose_response_rows([(0.4, 1.0, -1.0, 3.0)], control=None), "ab_roas")
    assert (check.points, check.is_monotone, check.control_covers_zero) == (1, None, None)
    assert "too few to tell" in finding(check) and "the random control has no estimate" in finding(check)
    assert "[-1.00%, +3.00%], which covers 0: the positive control shows no effect" in finding(check)
    unmeasured = check_dose_response(dose_response_rows([], control=None), "lift_ctcvr_pr_auc")  # a part that did not run
    assert (unmeasured.points, unmeasured.is_monotone, unmeasured.top) == (0, None, None)


@pytest.mark.parametrize("overrides, field", [
    (["q_grid=[0.5, 1.5]"], "q_grid"), (["q_grid=[0.5, 0.5]"], "q_grid"), (["parts=['lift', 'auction']"], "parts"),
    (["stack=cloud"], "stack"), (["tolerance=0.0"], "tolerance"), (["methods.random_control.heldout='x'"], "methods"),
    (["stack=trained"], "experiment.arms"),  # the default arms name the baseline stack's sources
    (["lift_users=nobody"], "lift_users"),
])
def test_config_names_the_bad_field(overrides, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        load_config(SensitivityConfig, overrides=overrides)


def test_method_spec_becomes_overrides(tmp_path):
    (tmp_path / "interests.parquet").touch()  # picked up beside the held-out lists
    overrides = method_overrides(f"llm={tmp_path / 'predictions.parquet'},serving.parquet")
    config = load_config(SensitivityConfig, overrides=overrides)
    assert to_dict(config.methods["llm"]) == {"heldout": str(tmp_path / "predictions.parquet"),
                                              "serving": "serving.parquet",
                                              "interests": str(tmp_path / "interests.parquet")}
    assert method_overrides("solo=lists.parquet") == [f"methods.solo.heldout={json.dumps('lists.parquet')}"]
    for spec in ("no-paths", "x=", "x=a,b,c", "=a.parquet"):
        with pytest.raises(ConfigError, match="NAME=HELDOUT"):
            method_overrides(spec)


def test_cli_exits_2_on_a_bad_method_or_a_missing_world(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["sensitivity", "--run", str(tmp_path), "--method", "llm"])
    assert bad.exit_code == 2 and "NAME=HELDOUT" in bad.output
    missing = runner.invoke(app, ["sensitivity", "--run", str(tmp_path), "--parts", "ab", "--stack", "baseline"])
    assert missing.exit_code == 2 and "adsim world" in missing.output


@pytest.mark.slow
@pytest.mark.parametrize("lift_users", ["heldout", "everyone"])
def test_lift_part_measures_table5_per_source(wide_run, tmp_path, lift_users):
    """Table 5 per source on the wide tiny world (tens of seconds: 2 seeds x 3 arms of a small DCN per source), on
    the held-out users' impressions or on everyone's."""
    from datetime import date

    from ranking.config import DCNConfig, RankingConfig, TrainConfig
    from ranking.features import split_by_time
    from synthetic_data.impressions import ImpressionConfig, generate_impressions
    from synthetic_data.presets import preset
    from synthetic_data.response import build_response_state

    world = wide_run[1]
    root = tmp_path / "run"
    shutil.copytree(wide_run[0] / "world", root / "world")
    config = preset("tiny", WIDE)
    RunFolder(root).complete("world", to_dict(config), [f"{table}.parquet" for table in WORLD_TABLES])
    state = build_response_state(world, date.fromisoformat(config.start_date), config.users.drift_period_days)
    impressions, _ = generate_impressions(world, state, ImpressionConfig(n_days=20, requests_per_user_day=3.0))
    (root / "impressions").mkdir()
    impressions.write_parquet(root / "impressions" / "impressions.parquet")
    ranking = RankingConfig(tasks=("ctcvr",), seeds=(0, 1), reference_models=("logistic",), users="predicted",
                            bootstrap_replicates=200, train=TrainConfig(epochs=1),
                            dcn=DCNConfig(embedding_dim=4, cross_layers=1, cross_low_rank=4, deep_layers=(16,)))
    summary = sensitivity_stage(root, SensitivityConfig(q_grid=(0.6,), parts=("lift",), tolerance=0.1,
                                                        ranking=ranking, lift_users=lift_users), progress=False)
    table = pl.read_parquet(root / "sensitivity" / "table.parquet")
    assert table["source"].to_list() == ["random_control", "oracle_q0.6"] and summary["rows"] == {"measured": 2}
    for metric in ("log_loss", "auc", "pr_auc"):
        column = f"lift_ctcvr_{metric}"
        assert table[column].is_finite().all() and (table[f"{column}_low"] <= table[f"{column}_high"]).all()
    assert table["lift_ctcvr_test_positives"].min() > 0
    assert summary["checks"][0]["metric"] == "lift_ctcvr_pr_auc" and summary["plots"] == ["plots/sensitivity_lift.png"]
    assert (root / "sensitivity" / "oracle_q0.6" / "lift.parquet").exists()
    # Table 5 per ranker: the DCN and the reference logistic regression on the same rows, each with its MDE
    lift = pl.read_parquet(root / "sensitivity" / "oracle_q0.6" / "lift.parquet")
    # the rows: the held-out (eval-split) users' impressions, or every user's
    test = split_by_time(impressions, ranking.features)["test"]
    if lift_users == "heldout":
        test = test.join(world.splits.filter(pl.col("split") == "eval"), on="user_id", how="semi")
    assert (lift["test_users"] == test["user_id"].n_unique()).all()
    assert sorted(lift["model"].unique()) == ["dcn", "logistic"]
    report = (root / "sensitivity" / "report.md").read_text()
    for source in ("random_control", "oracle_q0.6"):
        assert f"| {source} | dcn | ctcvr |" in report and f"| {source} | logistic | ctcvr |" in report
    logistic = lift.filter((pl.col("model") == "logistic") & (pl.col("metric") == "pr_auc")
                           & (pl.col("comparison") == "with_llm vs without_llm")).row(0, named=True)
    assert f"{logistic['change_pct']:+.2f}% [{logistic['ci_low']:+.2f}, {logistic['ci_high']:+.2f}] (MDE +" in report


def test_recall_cell_says_how_many_v1_labels_a_method_covers():
    from simulator.sensitivity import _recall_cell

    row = {"recall_at_20": 0.207, "recall_at_20_low": 0.098, "recall_at_20_high": 0.384, "recall_labels": 29}
    assert _recall_cell({**row, "recall_coverage": 29 / 440}) == (
        "0.207 [0.098, 0.384] (29 of 440 V1 labels: those its held-out lists cover)")
    assert _recall_cell({**row, "recall_coverage": 1.0}) == "0.207 [0.098, 0.384] (29 labels)"

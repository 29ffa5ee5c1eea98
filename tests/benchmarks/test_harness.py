"""`adsim bench`'s baselines: tolerances from the measured spread, verdicts by direction, planted regressions."""

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.harness import MIN_QUALITY_TOLERANCE, MIN_SPEED_TOLERANCE, Measurement, check, record


def _run(**values):
    kinds = {"recall": ("quality", "higher"), "fpr": ("quality", "lower"), "roas_change": ("quality", "both"),
             "requests_per_second": ("speed", "higher")}
    return [Measurement(name, value, *kinds[name]) for name, value in values.items()]


def _runs(recalls, fprs, roas_changes, speeds):
    return [_run(recall=r, fpr=f, roas_change=c, requests_per_second=v)
            for r, f, c, v in zip(recalls, fprs, roas_changes, speeds)]


def test_tolerances_are_prediction_intervals_from_the_runs_spread_with_a_floor():
    recalls = [0.50, 0.54, 0.52, 0.52]
    baselines = record(_runs(recalls, [0.05] * 4, [0.10, 0.12, 0.11, 0.11], [100.0, 120.0, 110.0, 110.0]))
    # one more run falls within the interval with probability 1 - 0.05 / (2 x 4 metrics), Student t, 3 df
    multiple = stats.t.ppf(1 - 0.05 / 8, 3) * (1 + 1 / 4) ** 0.5
    assert baselines["recall"].value == pytest.approx(0.52)
    assert baselines["recall"].tolerance == pytest.approx(multiple * np.std(recalls, ddof=1))
    assert baselines["fpr"].tolerance == MIN_QUALITY_TOLERANCE  # no spread: the floor
    speed = baselines["requests_per_second"]
    assert speed.tolerance == pytest.approx(max(MIN_SPEED_TOLERANCE, multiple * np.std([100, 120, 110, 110],
                                                                                        ddof=1) / 110))
    with pytest.raises(ValueError, match=">= 4 runs"):
        record(_runs(recalls[:3], [0.05] * 3, [0.1] * 3, [100.0] * 3))
    with pytest.raises(ValueError, match="different metrics"):
        record([_run(recall=0.5)] * 3 + [_run(fpr=0.05)])


def test_a_measurement_may_raise_its_own_tolerance_floor():
    """A one-thread timing carries a tighter floor than the speed kind's; the spread still widens it."""
    steady = [[Measurement("dcn", value, "speed", "higher", min_tolerance=0.25)] for value in (100, 101, 99, 100)]
    assert record(steady)["dcn"].tolerance == 0.25 < MIN_SPEED_TOLERANCE
    assert not check(record(steady), [Measurement("dcn", 80.0, "speed", "higher")])[0].is_regression
    assert check(record(steady), [Measurement("dcn", 50.0, "speed", "higher")])[0].is_regression  # 2x slower
    noisy = [[Measurement("dcn", value, "speed", "higher", min_tolerance=0.25)] for value in (60, 140, 100, 100)]
    assert record(noisy)["dcn"].tolerance > 0.25


def test_a_regression_is_a_move_past_the_tolerance_in_the_worse_direction():
    baselines = record(_runs([0.50, 0.51, 0.52, 0.51], [0.05] * 4, [0.10] * 4, [100.0] * 4))
    verdicts = {v.name: v for v in check(baselines, _run(recall=0.60, fpr=0.20, roas_change=0.05,
                                                         requests_per_second=40.0))}
    assert not verdicts["recall"].is_regression  # better is never a regression
    assert verdicts["fpr"].is_regression and "rose by 0.15" in verdicts["fpr"].reason
    assert verdicts["roas_change"].is_regression  # `both`: a move either way
    assert verdicts["requests_per_second"].is_regression  # 60% slower, beyond the 45% floor
    fine = check(baselines, _run(recall=0.49, fpr=0.055, roas_change=0.105, requests_per_second=60.0))
    assert not any(v.is_regression for v in fine)
    missing = check(baselines, _run(recall=0.5, fpr=0.05, roas_change=0.1))
    assert [v.name for v in missing if v.is_regression] == ["requests_per_second"]
    undefined = {v.name: v for v in check(baselines, _run(recall=float("nan"), fpr=0.05, roas_change=0.1,
                                                          requests_per_second=100.0))}
    assert math.isnan(undefined["recall"].now) and undefined["recall"].is_regression  # a NaN never passes


class ShuffledScorer:
    """A planted regression: the stack's scores, shuffled across the batch's candidates."""

    def __init__(self, scorer):
        self.scorer = scorer

    def score(self, candidates):
        scores = self.scorer.score(candidates)
        order = np.random.default_rng(candidates.height).permutation(candidates.height)
        return scores.select(pl.all().gather(order))


def popularity_for_most_recent(method, table, predicted):
    """A planted regression: the most-recent predictor answers with popularity's lists."""
    return predicted["popularity"].with_columns(source=pl.lit(method)) if method == "most_recent" else table


def twice_as_slow(score):
    """A planted regression: DCN scoring that waits as long again as each call took (exactly 2x its time; calling
    it twice would not be, as the second call finds warm caches)."""
    import time

    def slowed(table):
        started = time.perf_counter()
        probabilities = score(table)
        time.sleep(time.perf_counter() - started)
        return probabilities

    return slowed


@pytest.mark.slow
def test_planted_regressions_fail_the_check_naming_their_metrics_and_another_seed_passes(tmp_path, monkeypatch):
    """Against the recorded baselines (benchmarks/baselines/ci.json, six market seeds), a seed they were not
    recorded with passes; on it a scorer whose scores are shuffled, a most-recent predictor that returns
    popularity and a DCN scoring twice as slow each make `adsim bench check` exit 1 naming the metric they
    moved, and the verdicts are written."""
    import benchmarks.suites as suites

    runner = CliRunner()
    passed = runner.invoke(app, ["check", "--seed", "6", "--out", str(tmp_path / "ok.json")])
    assert passed.exit_code == 0, passed.output
    measure = suites.measure
    twice = suites.SuiteHooks(dcn_scoring=twice_as_slow)
    for hooks, expected in ((suites.SuiteHooks(scorer=ShuffledScorer), "scorer_ctcvr_auc"),
                            (suites.SuiteHooks(predictions=popularity_for_most_recent), "predictor_most_recent_"),
                            (twice, "dcn_candidates_per_second")):
        monkeypatch.setattr(suites, "measure", lambda suite, seed, experiment=None, hooks=hooks:
                            measure(suite, seed, hooks, experiment))
        failed = runner.invoke(app, ["check", "--seed", "6", "--out", str(tmp_path / "bad.json")])
        assert failed.exit_code == 1 and "regression(s)" in failed.output, (failed.output, failed.exception)
        verdicts = json.loads((tmp_path / "bad.json").read_text())["verdicts"]
        regressed = {v["name"] for v in verdicts if v["is_regression"]}
        assert any(name.startswith(expected) for name in regressed), regressed
        print(*(f"{v['name']}: {v['reason']} (baseline {v['baseline']:.4g}, now {v['now']:.4g})"
                for v in verdicts if v["is_regression"]), sep="\n")  # the figures, with pytest -s
        assert not regressed & {"world_users_per_second", "predictor_popularity_recall_at_1"}


def test_each_check_joins_the_history_and_two_runs_draw_a_trend(tmp_path):
    from benchmarks.harness import append_history, plot_trend

    baselines = record(_runs([0.50, 0.51, 0.52, 0.51], [0.05] * 4, [0.10] * 4, [100.0] * 4))
    history = tmp_path / "bench_history.jsonl"
    first = append_history(history, 0, check(baselines, _run(recall=0.5, fpr=0.05, roas_change=0.1,
                                                             requests_per_second=90.0)))
    runs = append_history(history, 1, check(baselines, _run(recall=0.4, fpr=0.05, roas_change=0.1,
                                                            requests_per_second=95.0)))
    assert len(first) == 1 and [run["seed"] for run in runs] == [0, 1]
    assert runs[1]["values"]["recall"] == 0.4 and runs[1]["values"]["requests_per_second"] == 95.0
    png = plot_trend(runs, baselines, tmp_path / "bench_trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


EXPERIMENT = """
[plugins]
generators = ["examples.plugins.recent_advertisers:RecentAdvertiserGenerator"]

[[arms]]
name = "control"
blend = { quotas = { main = 60, llm = 0, recent_advertisers = 0 }, max_candidates = 60 }

[[arms]]
name = "recent_advertisers_on"
blend = { quotas = { main = 60, llm = 0, recent_advertisers = 25 }, max_candidates = 60 }
"""


def test_a_teams_plug_in_is_measured_by_the_suites_market(tiny_world, tmp_path, monkeypatch):
    """`adsim bench --config`: the example generator joins the market, its arm is the A/B's treatment and its
    funnel is measured; the rest of the suite's scenario (one day, the A/A splits) stays."""
    from pathlib import Path

    from benchmarks.cli import _experiment
    from synthetic_data.config_io import ConfigError
    from benchmarks.suites import AA_SPLITS, Clock, SuiteHooks, _market, market_stack
    from rich.console import Console
    from synthetic_data.presets import preset

    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # examples/ is importable from the repository root
    (tmp_path / "experiment.toml").write_text(EXPERIMENT)
    experiment = _experiment(tmp_path / "experiment.toml", None, Console())
    assert experiment.simulation.days == 1 and experiment.aa_splits == AA_SPLITS
    measured = {m.name: m.value for m in _market(
        tiny_world, experiment, market_stack(tiny_world, preset("tiny"), experiment, SuiteHooks()), Clock(1.0))}
    assert measured["funnel_recent_advertisers_impressed_per_retrieved"] > 0
    assert measured["funnel_llm_impressed_per_retrieved"] == 0  # off in both arms
    default_experiment = _experiment(None, None, Console())
    default = {m.name: m.value for m in _market(
        tiny_world, default_experiment, market_stack(tiny_world, preset("tiny"), default_experiment, SuiteHooks()),
        Clock(1.0))}
    assert "funnel_recent_advertisers_impressed_per_retrieved" not in default
    assert measured["ab_spend_per_user_change"] != default["ab_spend_per_user_change"]
    misspelt = EXPERIMENT.replace("recent_advertisers = 25", "recent_advertiser = 25")
    (tmp_path / "misspelt.toml").write_text(misspelt)
    with pytest.raises(ConfigError, match=r"arms\[recent_advertisers_on\].*\['recent_advertiser'\] name no source.*"
                                          r"\['recent_advertisers'\] have no quota"):
        market_stack(tiny_world, preset("tiny"), _experiment(tmp_path / "misspelt.toml", None, Console()),
                     SuiteHooks())


def test_a_check_against_baselines_of_another_experiment_stops_before_measuring(tmp_path):
    from benchmarks.harness import write_baselines
    from benchmarks.suites import ci_experiment
    from synthetic_data.config_io import to_dict

    baselines = record(_runs([0.50, 0.51, 0.52, 0.51], [0.05] * 4, [0.10] * 4, [100.0] * 4))
    path = write_baselines(tmp_path / "ci.json", "ci", baselines, to_dict(ci_experiment()))
    result = CliRunner().invoke(app, ["check", "--baselines", str(path), "--set", "simulation.days=2",
                                      "--out", str(tmp_path / "bench.json")])
    assert result.exit_code == 2
    assert "simulation.days: recorded 1, now 2" in " ".join(result.output.split())
    assert not (tmp_path / "bench.json").exists()

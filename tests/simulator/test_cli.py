import polars as pl
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from synthetic_data.config_io import to_dict
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES


@pytest.fixture(scope="module")
def run_dir(tiny_world, tmp_path_factory):
    from synthetic_data.presets import preset

    root = tmp_path_factory.mktemp("cli_run")
    tiny_world.write(root / "world")
    RunFolder(root).complete("world", to_dict(preset("tiny")), [f"{t}.parquet" for t in WORLD_TABLES])
    return root


def test_ab_writes_its_stage_and_skips_when_complete(run_dir):
    runner = CliRunner()
    arguments = ["ab", "--run", str(run_dir), "--stack", "baseline", "--set", "simulation.days=1", "--quiet"]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    assert "Return on ad spend (primary)" in first.output
    # the SRM line comes before the metric table; the paired design replays the tiny world's 600 users per arm
    assert first.output.index("Sample-ratio check (SRM): users per arm 600 / 600") < first.output.index("| Arm | Metric")
    assert "A/A check (200 re-randomisations of the control arm replayed with another seed" in first.output
    comparisons = pl.read_parquet(run_dir / "ab" / "comparisons.parquet")
    assert set(comparisons["arm"]) == {"llm_generator"}
    record = RunFolder(run_dir).stage_record("ab")
    srm = record["summary"]["srm"]
    assert srm["users"] == [600, 600] and srm["design"] == "paired" and srm["is_mismatch"] is False
    assert record["summary"]["aa"]["roas"]["tests"] == 200
    assert set(record["summary"]["roas_change"]["llm_generator"]) >= {"p_value_adjusted", "is_underpowered"}
    again = runner.invoke(app, arguments)
    assert again.exit_code == 0 and RunFolder(run_dir).stage_record("ab")["finished_at"] == record["finished_at"]


def test_sweep_writes_plots(run_dir):
    result = CliRunner().invoke(app, ["sweep", "--quota", "0,10", "--run", str(run_dir), "--stack", "baseline",
                                      "--set", "simulation.days=1", "--set", "design=paired", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Sample-ratio check (SRM): users per arm 600 / 600; the paired design" in result.output
    assert RunFolder(run_dir).stage_record("sweep")["summary"]["srm"]["users"] == [600, 600]
    assert pl.read_parquet(run_dir / "sweep" / "sweep.parquet")["quota"].to_list() == [0, 10]
    assert (run_dir / "plots" / "sweep_roas.png").exists()


def test_bad_input_names_the_field_and_the_fix(run_dir, tmp_path):
    runner = CliRunner()
    wrong = runner.invoke(app, ["ab", "--run", str(run_dir), "--stack", "baseline", "--set", "design=crossover"])
    assert wrong.exit_code == 2 and "design" in wrong.output
    missing = runner.invoke(app, ["ab", "--run", str(tmp_path)])
    assert missing.exit_code == 2 and "adsim world" in missing.output
    untrained = runner.invoke(app, ["ab", "--run", str(run_dir), "--stack", "trained"])
    assert untrained.exit_code == 2 and "adsim retrieval train" in untrained.output

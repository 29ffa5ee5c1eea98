"""`--engine ray` (issue #17): the sweep, the A/B with its A/A replay and the sensitivity grid give the same
tables and the same stage records as the sequential run, on tiny worlds and a 2-CPU local Ray cluster."""

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from simulator.cli import app
from synthetic_data.config_io import to_dict
from synthetic_data.ray_cluster import map_tasks
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES

ray = pytest.importorskip("ray")
ONE_DAY = ["--stack", "baseline", "--set", "simulation.days=1", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray cluster of 2 CPUs for the module (starting one takes seconds)."""
    from synthetic_data.ray_cluster import connect

    connect(num_cpus=2)
    yield
    ray.shutdown()


def _run_folders(world, config, tmp_path) -> dict:
    """Two run folders holding the same world, one per engine."""
    folders = {}
    for engine in ("local", "ray"):
        root = tmp_path / engine
        world.write(root / "world")
        RunFolder(root).complete("world", to_dict(config), [f"{table}.parquet" for table in WORLD_TABLES])
        folders[engine] = root
    return folders


def _invoke(arguments: list[str]) -> str:
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return result.output


def _assert_same_stage(folders: dict, stage: str, files: list[str], drop: tuple[str, ...] = ()) -> None:
    """The stage's tables and report are equal in both folders, and so is its record's config."""
    for name in files:
        if name.endswith(".parquet"):
            local, ray_ = (pl.read_parquet(folders[engine] / stage / name) for engine in ("local", "ray"))
            assert_frame_equal(local.drop(drop, strict=False), ray_.drop(drop, strict=False))
        else:
            assert (folders["local"] / stage / name).read_text() == (folders["ray"] / stage / name).read_text()
    records = [RunFolder(folders[engine]).stage_record(stage) for engine in ("local", "ray")]
    assert records[0]["config_hash"] == records[1]["config_hash"]


def _square_or_fail(item: int, offset: int) -> int:
    if item < 0:
        raise KeyError(f"item {item}")
    return item * item + offset


def test_map_tasks_returns_results_in_order_and_raises_a_task_error():
    items = [5, 1, 4, 2, 3]
    assert list(map_tasks(_square_or_fail, items, (10,), engine="ray")) == [35, 11, 26, 14, 19]
    assert list(map_tasks(_square_or_fail, items, (10,))) == [35, 11, 26, 14, 19]
    with pytest.raises(KeyError, match="item -1"):
        list(map_tasks(_square_or_fail, [2, -1], (0,), engine="ray"))
    with pytest.raises(ValueError, match="--engine 'spark' is unknown"):
        list(map_tasks(_square_or_fail, items, (0,), engine="spark"))


def test_sweep_on_ray_equals_the_sequential_sweep_and_shares_its_record(tiny_world, tmp_path):
    from synthetic_data.presets import preset

    folders = _run_folders(tiny_world, preset("tiny"), tmp_path)
    sweep = ["sweep", "--quota", "0,10,30", *ONE_DAY]
    for engine, root in folders.items():
        _invoke([*sweep, "--run", str(root), "--engine", engine])
    _assert_same_stage(folders, "sweep", ["sweep.parquet", "funnels.parquet", "report.md"])
    table = pl.read_parquet(folders["ray"] / "sweep" / "sweep.parquet")
    assert table["quota"].to_list() == [0, 10, 30] and table["llm_impressed_share"].to_list()[2] > 0
    # the engine is no part of the record: the local engine reuses the stage the ray engine completed
    finished = RunFolder(folders["ray"]).stage_record("sweep")["finished_at"]
    _invoke([*sweep, "--run", str(folders["ray"])])
    assert RunFolder(folders["ray"]).stage_record("sweep")["finished_at"] == finished


def test_ab_and_its_aa_replay_on_ray_equal_the_sequential_ab(tiny_world, tmp_path):
    from synthetic_data.presets import preset

    folders = _run_folders(tiny_world, preset("tiny"), tmp_path)
    for engine, root in folders.items():
        _invoke(["ab", "--run", str(root), *ONE_DAY, "--set", "aa_splits=20", "--engine", engine])
    _assert_same_stage(folders, "ab", ["comparisons.parquet", "arms.parquet", "funnels.parquet", "aa.parquet",
                                       "report.md"])
    aa = pl.read_parquet(folders["ray"] / "ab" / "aa.parquet")
    assert aa.height == 20 * 6 and aa["relative_change"].abs().max() > 0  # the replay drew other numbers


def test_sensitivity_grid_on_ray_equals_the_sequential_grid(tmp_path):
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    config = preset("tiny", ["advertisers.n_advertisers=150"])  # a 20-advertiser list is a choice (docs/oracle.md)
    folders = _run_folders(generate_world(config, progress=False), config, tmp_path)
    for engine, root in folders.items():  # a one-day market with a light bootstrap
        _invoke(["sensitivity", "--run", str(root), "--stack", "baseline", "--parts", "ab", "--q-grid", "0.5",
                 "--engine", engine, "--quiet", "--set", "tolerance=0.1", "--set", "experiment.simulation.days=1",
                 "--set", "experiment.bootstrap_samples=100",
                 "--set", "experiment.simulation.traffic.sessions_per_user_day=0.5"])
    _assert_same_stage(folders, "sensitivity", ["table.parquet"], drop=("seconds",))
    for source in ("random_control", "oracle_q0.5"):
        _assert_same_stage(folders, f"sensitivity/{source}", ["row.parquet", "ab.parquet", "ab_users.parquet"],
                           drop=("seconds",))
    table = pl.read_parquet(folders["ray"] / "sensitivity" / "table.parquet")
    assert table["source"].to_list() == ["random_control", "oracle_q0.5"] and table["ab_roas"].is_finite().all()


def test_engine_and_address_are_checked(tiny_world, tmp_path):
    from synthetic_data.presets import preset

    root = _run_folders(tiny_world, preset("tiny"), tmp_path)["local"]
    unknown = CliRunner().invoke(app, ["sweep", "--run", str(root), *ONE_DAY, "--engine", "spark"])
    assert unknown.exit_code == 2 and "--engine 'spark' is unknown" in unknown.output
    address = CliRunner().invoke(app, ["ab", "--run", str(root), *ONE_DAY, "--address", "auto"])
    assert address.exit_code == 2 and "give it with --engine ray" in address.output

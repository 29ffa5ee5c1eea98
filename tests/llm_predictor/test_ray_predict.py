"""Batch inference as a Ray Dataset (`adsim llm predict --engine ray`): the same tables as the local engine,
and a job that fails midway resumes to every request exactly once, equal to an uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from llm_predictor.config import resolve_config
from llm_predictor.predict import KEYS
from llm_predictor.stages import prediction_keys, predict_users, run_world, stage_behaviour, stage_pretrain
from synthetic_data.run_folder import RunFolder

ray = pytest.importorskip("ray", reason="the ray engine needs Ray (the dev extra installs it)")

from llm_predictor.ray_predict import REQUEST_ID, RayEngine, predict_with_ray, read_rows, with_request_ids  # noqa: E402

METHOD = "behaviour_ranked_open"  # the demo's served form: the behaviour model ranking every advertiser


@pytest.fixture(scope="module")
def cluster():
    RayEngine().connect()  # a local cluster with the CPUs the engine reserves
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tiny_world_dir, tmp_path_factory):
    """A run folder with the nano behaviour model, the config (fp32: bit-comparable runs) and eval keys."""
    root = tmp_path_factory.mktemp("ray_run")
    shutil.copytree(tiny_world_dir, root / "world")
    config = resolve_config("nano", None, ["predict.is_bf16=false"])
    stage_pretrain(root, config, False, False)
    stage_behaviour(root, config, False, False)
    world = run_world(root)
    return root, config, world, prediction_keys(world, config, "eval")


def _local(trained, directory: Path):
    root, config, world, keys = trained
    return predict_users(RunFolder(root), world, config, METHOD, keys, directory, False)


def test_ray_engine_writes_the_local_engines_tables(trained, cluster, tmp_path):
    root, config, world, keys = trained
    local = _local(trained, tmp_path / "local")
    engine = RayEngine(block_size=5)
    remote = predict_users(RunFolder(root), world, config, METHOD, keys, tmp_path / "ray", False, ray_engine=engine)
    assert keys.height > 10 and remote[0].height == keys.height * 20  # several blocks; 20 names a request
    assert remote[0].equals(local[0].sort(*KEYS, "rank"))
    assert remote[1].equals(local[1].sort(*KEYS, "rank"))
    assert remote[2] == local[2]
    assert not (tmp_path / "ray" / "ray").exists()  # the job's rows and checkpoint are cleared once read


class FailOnce:
    """A backend factory whose backend, while `flag` exists, raises in a block after the first block's rows
    are committed to `rows` (then removes `flag`)."""

    def __init__(self, flag: Path, rows: Path):
        self.flag, self.rows = flag, rows

    def __call__(self, model_dir, config):
        import time

        from llm_predictor.predict import predict_backend

        backend, flag, rows = predict_backend(model_dir, config), self.flag, self.rows

        class Failing:
            calls = 0

            def generate(self, prompts, params, allowed_names=None):
                Failing.calls += 1
                if Failing.calls > 1 and flag.exists():
                    deadline = time.monotonic() + 120
                    while not any(rows.glob("*.parquet")) and time.monotonic() < deadline:
                        time.sleep(0.2)
                    time.sleep(1.0)  # the block's checkpoint commits after its file
                    flag.unlink()
                    raise RuntimeError("injected failure after the first block")
                return backend.generate(prompts, params, allowed_names)

        return Failing()


def test_a_failed_job_resumes_to_every_request_exactly_once(trained, cluster, tmp_path):
    root, config, world, keys = trained
    flag = tmp_path / "fail"
    flag.touch()
    engine = RayEngine(block_size=4)
    directory = tmp_path / "stage"
    failing = FailOnce(flag, directory / "ray" / "rows")
    with pytest.raises(Exception, match="injected failure"):
        predict_with_ray(root, world, config, METHOD, keys, directory, engine, False, failing)
    committed = pl.read_parquet(directory / "ray" / "rows" / "*.parquet")[REQUEST_ID]
    assert 0 < committed.len() < keys.height and committed.is_unique().all()  # some blocks, each once
    ray.shutdown()  # the failed job's driver is gone with its cluster (its actors linger in a live driver)
    resumed = predict_with_ray(root, world, config, METHOD, keys, directory, engine, False, failing)
    uninterrupted = _local(trained, tmp_path / "local")
    for got, want in zip(resumed, uninterrupted):
        assert got == want if not isinstance(got, pl.DataFrame) else got.equals(want.sort(got.columns[:3]))


def test_rows_that_miss_or_repeat_a_request_are_refused(tmp_path):
    requests = with_request_ids(pl.DataFrame({"user_id": [1, 2, 3], "anchor_date": ["2026-01-01"] * 3})
                                .with_columns(pl.col("anchor_date").str.to_date()))
    folder = tmp_path / "rows"
    folder.mkdir()
    requests.head(2).write_parquet(folder / "a.parquet")
    requests.slice(1, 1).write_parquet(folder / "b.parquet")
    with pytest.raises(RuntimeError, match="1 requests more than once .* miss 1"):
        read_rows(folder, requests)
    requests.slice(2, 1).write_parquet(folder / "b.parquet")
    assert read_rows(folder, requests)[REQUEST_ID].to_list() == ["1|2026-01-01", "2|2026-01-01", "3|2026-01-01"]


def test_incremental_serving_reinfers_only_users_with_new_activity(trained, tiny_world, cluster, tmp_path):
    from dataclasses import replace
    from datetime import datetime

    from llm_predictor.stages import stage_predict

    root, config, _, _ = trained
    config = replace(config, serving_max_users=None)  # every serving user: some act on the last day, some not
    for stage in ("llm_base", "llm_pretrain", "llm_behaviour"):
        if (root / stage).exists():
            shutil.copytree(root / stage, tmp_path / stage)
    cutoff = tiny_world.events["ts"].max() - pl.duration(days=1)
    replace(tiny_world, events=tiny_world.events.filter(pl.col("ts") < cutoff)).write(tmp_path / "world")
    first = stage_predict(tmp_path, config, METHOD, "serving", False, False)
    stage = tmp_path / f"llm_predict_{METHOD}_serving"
    before = pl.read_parquet(stage / "predictions.parquet")
    shutil.rmtree(tmp_path / "world")
    tiny_world.write(tmp_path / "world")  # the last day's events arrive

    update = stage_predict(tmp_path, config, METHOD, "serving", False, False, RayEngine(block_size=4), True)
    after = pl.read_parquet(stage / "predictions.parquet")
    full = stage_predict(root, config, METHOD, "serving", False, False)  # everyone, on the grown world
    everyone = pl.read_parquet(root / f"llm_predict_{METHOD}_serving" / "predictions.parquet")
    acted = tiny_world.events.filter(pl.col("ts") > datetime.fromisoformat(first["predicted_through"]))["user_id"]
    fresh = after.filter(pl.col("anchor_date") > before["anchor_date"].max())["user_id"].unique()
    assert update["users"] == full["users"] == after["user_id"].n_unique()  # every serving user has a list
    assert 0 < update["reinferred_users"] < update["users"] and fresh.len() == update["reinferred_users"]
    assert set(fresh) == set(acted.filter(acted.is_in(everyone["user_id"].implode()))) | (
        set(everyone["user_id"]) - set(before["user_id"]))
    assert after.join(fresh.to_frame(), on="user_id", how="semi").equals(
        everyone.join(fresh.to_frame(), on="user_id", how="semi"))  # re-inferred as a full run infers them
    kept = after.join(fresh.to_frame(), on="user_id", how="anti")
    assert kept.equals(before.join(kept.select("user_id").unique(), on="user_id", how="semi"))  # lists kept as were
    assert not (tmp_path / f"llm_predict_{METHOD}_serving.previous").exists()


def test_cli_ray_engine_takes_a_relative_run_and_an_incremental_update(trained, cluster, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llm_predictor.cli import app

    root = trained[0]
    run = tmp_path / "run"
    run.mkdir()
    for stage in ("world", "llm_base", "llm_pretrain", "llm_behaviour"):
        if (root / stage).exists():
            shutil.copytree(root / stage, run / stage)
    monkeypatch.chdir(tmp_path)  # `--run run`: Ray's checkpoint path must still be absolute
    args = ["predict", "--run", "run", "--method", METHOD, "--users", "serving", "--preset", "nano", "--quiet",
            "--engine", "ray", "--set", "predict.is_bf16=false", "--set", "serving_max_users=null"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    stage = run / f"llm_predict_{METHOD}_serving"
    before = pl.read_parquet(stage / "predictions.parquet")
    assert before["user_id"].n_unique() > 10  # `null` unset the nano preset's sample of 10 serving users
    again = CliRunner().invoke(app, [*args, "--incremental"])  # no event since: every list is kept
    assert again.exit_code == 0, again.output
    record = json.loads((stage / "stage.json").read_text())["summary"]
    assert (record["reinferred_users"], record["kept_users"]) == (0, before["user_id"].n_unique())
    assert pl.read_parquet(stage / "predictions.parquet").equals(before)
    eval_users = CliRunner().invoke(app, [*args[:6], "eval", *args[7:], "--incremental"])
    assert eval_users.exit_code == 2 and "--incremental" in eval_users.output

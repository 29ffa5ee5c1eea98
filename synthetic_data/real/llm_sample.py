"""LLM predictions for a seeded sample of the test users of a leave-one-out world (issue 4).

Generating 20-advertiser lists for every test user takes hours on a CPU, so this runs the work of
`adsim llm predict` (same prompts, model, decoding and name conversion) on `n_users` test users
drawn with a seed, and writes the sample as `requests.parquet`: the results table scores such a
stage on its sample only, beside every full-coverage method on the same users.
"""

from __future__ import annotations

from pathlib import Path

from synthetic_data.config_io import to_dict
from synthetic_data.run_folder import RunFolder


def sample_stage(method_name: str, n_users: int) -> str:
    return f"llm_predict_{method_name}_test_sample{n_users}"


def predict_test_sample(run_dir: Path, config, method_name: str, n_users: int, seed: int = 0,
                        show_progress: bool = True) -> dict:
    """Generate, convert and record one LLM method's lists for `n_users` sampled test users; skips
    when complete with the same config; returns the stage summary (users, parse and unmapped rates)."""
    from llm_predictor import evaluate
    from llm_predictor.config import METHODS, MODEL_STAGES
    from llm_predictor.stages import predict_users, run_world, upstream_hash

    run = RunFolder(run_dir)
    method = METHODS[method_name]
    stage = sample_stage(method_name, n_users)
    stage_config = {"upstream": upstream_hash(run, MODEL_STAGES[method.model]), "predict": to_dict(config.predict),
                    "features": to_dict(config.features), "preset_pool_size": config.preset_pool_size,
                    "requests": {"role": "test", "n_users": n_users, "seed": seed}}
    if run.is_complete(stage, stage_config):
        return run.stage_record(stage)["summary"]
    world = run_world(run.root)
    if "role" not in world.labels.columns:
        raise ValueError(f"{run.root}/world: labels have no 'role' column; this sample needs a leave-one-out world")
    requests = evaluate.evaluation_requests(world, config.eval.evaluation)
    if n_users > requests.height:
        raise ValueError(f"n_users={n_users} exceeds the {requests.height} test users; lower it")
    keys = requests.sample(n_users, seed=seed).sort("user_id", "anchor_date")
    directory = run.stage_dir(stage)
    generations, predictions, counts = predict_users(run, world, config, method_name, keys, directory,
                                                     show_progress)
    keys.write_parquet(directory / "requests.parquet")
    generations.write_parquet(directory / "generations.parquet")
    predictions.write_parquet(directory / "predictions.parquet")
    summary = {"users": keys.height, **counts.as_dict()}
    run.complete(stage, stage_config, ["requests.parquet", "generations.parquet", "predictions.parquet"], summary)
    return summary

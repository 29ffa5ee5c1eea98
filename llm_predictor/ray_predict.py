"""Batch inference as a Ray Dataset (paper 3.7, figure 2): requests -> prompts -> model -> parse and
conversion, streamed over a Ray cluster, with job-level checkpointing keyed by request id.

Each (user_id, anchor_date) request is one row throughout, keyed by `request_id` ("user_id|anchor_date").
The output rows are written with Ray Data's checkpointing (`ray.data.checkpoint.CheckpointConfig`): a file
of rows and the ids it holds are committed together (two-phase), and a rerun reads the requests minus the
committed ids. So a killed or failed job resumes where it stopped and, on completion, holds every request
exactly once (checked here, not assumed). A block's rows may be prompted, decoded or batched differently
after a resume than in an uninterrupted run; each request's output depends only on its own prompt, except
for bf16 rounding that padding can change (run fp32, `predict.is_bf16 = false`, to compare runs bit for bit).

On a cluster (`address`), every node must see the run folder at the same path (a shared file system): the
prompt stage reads the world from it, the model stage the trained model, and the output and checkpoint
are written into it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from llm_predictor.convert import COUNT_COLUMNS, ConversionCounts, total_counts
from llm_predictor.predict import KEYS

REQUEST_ID = "request_id"
ROW_FOLDER = "rows"
CHECKPOINT_FOLDER = "checkpoint"
LIGHT_STAGE_CPUS = 0.25  # what the read, prompt, conversion and write stages reserve each: they mostly wait
LIGHT_STAGES = 4
FIXED_CPUS = 2.0  # Ray Data 2.60's file-listing task and checkpoint-filter actor: one CPU each, not settable


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide: `address` of an existing cluster (None: a local one over this machine's cores),
    `workers` model replicas (actors) with `threads_per_worker` torch threads each, and the requests per
    block (`block_size`: a batch of every stage and the unit of checkpointing)."""

    address: str | None = None
    workers: int = 1
    threads_per_worker: int = 1
    block_size: int = 256

    def __post_init__(self) -> None:
        for name in ("workers", "threads_per_worker", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ray engine {name} must be >= 1, got {getattr(self, name)}")

    @property
    def cpus(self) -> float:
        """The logical CPUs the job reserves: every model replica's threads, the light stages' share and Ray
        Data's file listing and checkpoint filter. Ray starts the actors first; with fewer CPUs the listing or
        the filter would wait for one forever."""
        return self.workers * self.threads_per_worker + LIGHT_STAGES * LIGHT_STAGE_CPUS + FIXED_CPUS

    def connect(self) -> None:
        """Join `address`, or start a local cluster with at least `cpus` logical CPUs (more than the cores
        over-subscribes them, as the light stages mostly wait). Raises ValueError when the cluster has fewer
        CPUs than the actors reserve: Ray would wait forever to place the last actor."""
        import math
        import os

        import ray

        from synthetic_data.ray_cluster import connect

        connect(self.address, max(os.cpu_count() or 1, math.ceil(self.cpus)))
        available = ray.cluster_resources().get("CPU", 0)
        if available < self.cpus:
            raise ValueError(f"the Ray cluster has {available:g} CPUs; {self.workers} model workers x "
                             f"{self.threads_per_worker} threads, Ray Data's listing and checkpoint filter and the "
                             f"read, prompt, conversion and write stages reserve {self.cpus:g}: lower --workers or "
                             "--threads")


def with_request_ids(keys: pl.DataFrame) -> pl.DataFrame:
    """KEYS plus their `request_id` string, one row per request (raises ValueError on a repeated request)."""
    if keys.select(KEYS).is_duplicated().any():
        raise ValueError("two requests for one (user_id, anchor_date); keep one per user and date")
    return keys.select(pl.format("{}|{}", "user_id", "anchor_date").alias(REQUEST_ID), *KEYS)


class PromptStage:
    """Ray Data stage: a block of requests -> their prompts and allowed names (the run's world, read once
    per worker from the run folder)."""

    def __init__(self, run_root: str, config, method_name: str):
        from synthetic_data.run_folder import RunFolder

        from llm_predictor.config import METHODS
        from llm_predictor.stages import run_world

        self.run, self.world = RunFolder(Path(run_root)), run_world(Path(run_root))
        self.config, self.method = config, METHODS[method_name]

    def __call__(self, batch):
        from llm_predictor.stages import method_prompts

        requests = pl.from_arrow(batch)
        prompts = method_prompts(self.run, self.world, self.config, self.method, requests.select(KEYS),
                                 self.config.features)
        return requests.join(prompts.select(*KEYS, "prompt", "allowed_names"), on=KEYS, how="left",
                             maintain_order="left").to_arrow()


class ModelStage:
    """Ray Data stage (an actor: the model loads once): a block of prompts -> its generations, nested per
    request as `generations` (List of struct rank, text, num_tokens). `backend_factory(model_dir, config)`
    builds the backend (default: `predict.predict_backend`)."""

    def __init__(self, model_dir: str, predict_config, threads: int, backend_factory: Callable | None = None):
        import torch

        from llm_predictor.predict import predict_backend

        torch.set_num_threads(threads)
        self.config = predict_config
        self.backend = (backend_factory or predict_backend)(Path(model_dir), predict_config)

    def __call__(self, batch):
        from llm_predictor.predict import generate_rows

        requests = pl.from_arrow(batch)
        generated = generate_rows(self.backend, requests, self.config.decoding)
        if "rank" not in generated.columns:
            generated = generated.with_columns(pl.lit(1, pl.Int32).alias("rank"))
        nested = generated.group_by(KEYS, maintain_order=True).agg(
            pl.struct("rank", "text", "num_tokens").alias("generations"))
        return (requests.select(REQUEST_ID, *KEYS).join(nested, on=KEYS, how="left", maintain_order="left")
                .to_arrow())


class ConvertStage:
    """Ray Data stage: a block of generations -> parse and name-to-ID conversion, each request's
    `predictions` (List of struct rank, advertiser_id, advertiser_name) and its conversion counts."""

    def __init__(self, advertisers: pl.DataFrame, threshold: float, source: str, has_rank: bool):
        from llm_predictor.convert import NameConverter

        self.converter = NameConverter(advertisers, threshold)
        self.source, self.has_rank = source, has_rank

    def __call__(self, batch):
        from llm_predictor.convert import convert_per_request

        requests = pl.from_arrow(batch)
        generations = generations_of(requests, self.has_rank)
        predictions, counts = convert_per_request(generations, self.converter, self.source)
        nested = predictions.group_by(KEYS, maintain_order=True).agg(
            pl.struct("rank", "advertiser_id", "advertiser_name").alias("predictions"))
        return (requests.join(nested, on=KEYS, how="left", maintain_order="left")
                .join(counts, on=KEYS, how="left", maintain_order="left")
                .with_columns(pl.col("predictions").fill_null(pl.lit([], dtype=nested.schema["predictions"])))
                .to_arrow())


def generations_of(rows: pl.DataFrame, has_rank: bool) -> pl.DataFrame:
    """The generations table (KEYS[, rank], text, num_tokens) of rows with a nested `generations` column."""
    table = rows.select(*KEYS, "generations").explode("generations").drop_nulls("generations").unnest("generations")
    return table.select(*KEYS, *(["rank"] if has_rank else []), "text", "num_tokens")


def predict_with_ray(run_root: Path, world, config, method_name: str, keys: pl.DataFrame, directory: Path,
                     engine: RayEngine, show_progress: bool = True, backend_factory: Callable | None = None
                     ) -> tuple[pl.DataFrame, pl.DataFrame, ConversionCounts]:
    """`stages.predict_users` as a Ray Dataset over `keys` (requests), checkpointed under `directory`/ray:
    a rerun after a failure or a kill predicts only the requests not yet committed. Returns (generations,
    PREDICTIONS table, conversion counts) as the local engine does.

    Raises RuntimeError when the committed rows do not hold every request exactly once.
    """
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy
    from ray.data.checkpoint import CheckpointConfig

    from llm_predictor.config import METHODS
    from llm_predictor.stages import method_decoding, model_dir
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import PREDICTIONS, conform

    run_root, directory = Path(run_root).resolve(), Path(directory).resolve()  # Ray's checkpoint needs absolute paths
    method = METHODS[method_name]
    decoding = method_decoding(method, config.predict.decoding)
    predict_config = replace(config.predict, decoding=decoding)
    has_rank = decoding.num_return_sequences > 1
    requests = with_request_ids(keys)
    folder = directory / "ray"
    folder.mkdir(parents=True, exist_ok=True)
    requests_path = folder / "requests.parquet"
    if requests_path.exists() and not pl.read_parquet(requests_path).equals(requests):
        raise ValueError(f"{folder} holds a job over other requests; delete it to start over")
    requests.write_parquet(requests_path)
    engine.connect()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_progress
    context.checkpoint_config = CheckpointConfig(id_column=REQUEST_ID, checkpoint_path=str(folder / CHECKPOINT_FOLDER),
                                                 delete_checkpoint_on_success=False)
    try:
        dataset = (
            ray.data.read_parquet(str(requests_path), num_cpus=LIGHT_STAGE_CPUS)
            .repartition(target_num_rows_per_block=engine.block_size)  # blocks stream (and commit) one by one
            .map_batches(PromptStage, fn_constructor_args=(str(run_root), config, method_name),
                         batch_size=engine.block_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=1),
                         num_cpus=LIGHT_STAGE_CPUS)
            .map_batches(ModelStage, fn_constructor_args=(str(model_dir(RunFolder(run_root), method_name)),
                                                          predict_config, engine.threads_per_worker, backend_factory),
                         batch_size=engine.block_size, batch_format="pyarrow",
                         compute=ActorPoolStrategy(size=engine.workers),
                         num_cpus=engine.threads_per_worker)
            .map_batches(ConvertStage, fn_constructor_args=(world.advertisers,
                                                            config.eval.evaluation.name_match_threshold,
                                                            f"llm_{method_name}", has_rank),
                         batch_size=engine.block_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=1),
                         num_cpus=LIGHT_STAGE_CPUS)
        )
        dataset.write_parquet(str(folder / ROW_FOLDER), ray_remote_args={"num_cpus": LIGHT_STAGE_CPUS})
    finally:
        context.checkpoint_config = None
    rows = read_rows(folder / ROW_FOLDER, requests)
    generations = generations_of(rows, has_rank).sort(KEYS + (["rank"] if has_rank else []))
    predictions = conform(rows.select(*KEYS, "predictions").explode("predictions").drop_nulls("predictions")
                          .unnest("predictions").with_columns(pl.lit(f"llm_{method_name}").alias("source"))
                          .sort(*KEYS, "rank"), PREDICTIONS, "predictions")
    counts = total_counts(rows.select(*COUNT_COLUMNS, "issues"))
    shutil.rmtree(folder)  # the stage's outputs hold it all now
    return generations, predictions, counts


def read_rows(folder: Path, requests: pl.DataFrame) -> pl.DataFrame:
    """Every committed output row of a job, checked to hold each request of `requests` exactly once."""
    rows = pl.read_parquet(folder / "*.parquet") if any(folder.glob("*.parquet")) else None
    found = pl.DataFrame(schema={REQUEST_ID: pl.String}) if rows is None else rows.select(REQUEST_ID)
    repeated = found.filter(pl.col(REQUEST_ID).is_duplicated())[REQUEST_ID].unique().to_list()
    missing = requests.join(found, on=REQUEST_ID, how="anti")[REQUEST_ID].to_list()
    if repeated or missing:
        raise RuntimeError(f"{folder}: the job's rows hold {len(repeated)} requests more than once "
                           f"(e.g. {repeated[:3]}) and miss {len(missing)} (e.g. {missing[:3]}); delete "
                           f"{folder.parent} and rerun")
    return rows.sort(KEYS)

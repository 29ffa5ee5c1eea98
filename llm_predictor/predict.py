"""Batch inference over users (paper 3.7): prompts for (user, anchor date) pairs, generation in
virtual epochs with a checkpoint per epoch (an interrupted job resumes and predicts every user
exactly once), and incremental re-inference of users with new activity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl

from llm_predictor.decoding import DecodingConfig
from synthetic_data.config_io import require, to_dict
from synthetic_data.run_folder import config_hash

KEYS = ["user_id", "anchor_date"]


@dataclass(frozen=True)
class PredictConfig:
    """Decoding, backend, mini-batch size and users per checkpointed virtual epoch."""

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    backend: Literal["transformers", "vllm"] = "transformers"
    batch_size: int = 16
    virtual_epoch_size: int = 256
    is_bf16: bool = True

    def __post_init__(self) -> None:
        require(self.backend in ("transformers", "vllm"), "backend", "must be 'transformers' or 'vllm'")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.virtual_epoch_size >= 1, "virtual_epoch_size", "must be >= 1")


def predict_backend(model_dir: Path, config: PredictConfig):
    """The backend `config` names (backend, batch size, dtype) over the model in `model_dir`."""
    from llm_predictor.backends import make_backend

    return make_backend(config.backend, model_dir, config.batch_size, config.is_bf16)


def build_prompts(world_tables, keys: pl.DataFrame, feature_config, preset_pool_size: int, template: str,
                  reasoning: bool = False, sids: pl.DataFrame | None = None, sid_config=None) -> pl.DataFrame:
    """Prompts for each (user_id, anchor_date) of `keys`: user_id, anchor_date, prompt and
    allowed_names (the preset pool plus the user's active advertisers, for constrained decoding).
    SID templates need `sids` (item_id, sid) and `sid_config` for the users' SID sequences."""
    from llm_predictor import features, prompts
    from llm_predictor.semantic_ids import sid_sequences

    is_sid = template.endswith("_sid")
    if is_sid and (sids is None or sid_config is None):
        raise ValueError(f"template {template!r} needs the item SIDs: run `adsim llm sid` first")
    frames = []
    for (anchor_date,), group in keys.select(KEYS).unique(maintain_order=True).group_by(
            "anchor_date", maintain_order=True):
        compiled = features.compile_features(world_tables, anchor_date, group["user_id"], feature_config)
        if is_sid:
            compiled = compiled.join(sid_sequences(world_tables.events, sids, anchor_date, group["user_id"],
                                                   sid_config), on="user_id", how="left", maintain_order="left")
        pool = features.preset_pool_names(world_tables, anchor_date, preset_pool_size)
        rendered = prompts.render(compiled, pool, template, reasoning=reasoning, groups=feature_config.groups)
        active = compiled["active_advertisers_with_past_conversions"].str.split(features.ITEM_SEPARATOR)
        frames.append(compiled.select(KEYS).with_columns(
            rendered.alias("prompt"),
            active.list.concat(pl.lit(pool, dtype=pl.List(pl.String)))
            .list.eval(pl.element().filter(pl.element() != "")).list.unique(maintain_order=True)
            .alias("allowed_names"),
        ))
    if not frames:
        return pl.DataFrame(schema={"user_id": pl.Int64, "anchor_date": pl.Date, "prompt": pl.String,
                                    "allowed_names": pl.List(pl.String)})
    return pl.concat(frames)


def _epoch_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / f"epoch_{epoch:05d}.parquet"


def read_generations(out_dir: Path) -> pl.DataFrame:
    """The generations that `generate_predictions(out_dir=...)` wrote there: every virtual epoch its plan
    (`epochs.json`) names. Raises FileNotFoundError when there is no plan or an epoch is missing (an interrupted
    run: rerun its stage, which resumes)."""
    out_dir = Path(out_dir)
    plan = out_dir / "epochs.json"
    if not plan.exists():
        raise FileNotFoundError(f"{out_dir} holds no generations (no epochs.json)")
    paths = [_epoch_path(out_dir, epoch) for epoch in range(json.loads(plan.read_text())["epochs"])]
    missing = [path.name for path in paths if not path.exists()]
    if missing:
        raise FileNotFoundError(f"{out_dir} lacks {len(missing)} of its {len(paths)} epochs ({missing[0]}, ...): the "
                                "run that writes them was interrupted; rerun it to resume")
    return pl.concat([pl.read_parquet(path) for path in paths])


def _check_or_write_plan(out_dir: Path, plan: dict) -> None:
    """Refuse to resume epochs written for other prompts or another decoding config."""
    path = out_dir / "epochs.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != plan:
            raise ValueError(
                f"{out_dir} holds epochs of other prompts or another decoding config "
                f"(recorded {recorded['hash']}, now {plan['hash']}); delete the folder to start over"
            )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plan, indent=2))


def generate_predictions(model_dir: Path, prompts_df: pl.DataFrame, decoding_config: DecodingConfig,
                         out_dir: Path | None = None, backend=None, config: PredictConfig | None = None,
                         show_progress: bool = True) -> pl.DataFrame:
    """Generations table (user_id, anchor_date, text, num_tokens; plus rank when several sequences
    are returned per prompt) for every row of `prompts_df`. With `out_dir`, each virtual epoch is
    written there as it finishes and a rerun skips finished epochs."""
    from tqdm.auto import tqdm

    config = config or PredictConfig(decoding=decoding_config)
    if prompts_df.select(KEYS).is_duplicated().any():
        raise ValueError("prompts_df has two prompts for one (user_id, anchor_date); keep one per user and date")
    ordered = prompts_df.sort(KEYS)
    has_rank = decoding_config.num_return_sequences > 1
    n_epochs = -(-ordered.height // config.virtual_epoch_size)
    if out_dir is not None:
        out_dir = Path(out_dir)
        keys_hash = config_hash({"keys": ordered.select(pl.col("user_id"), pl.col("anchor_date").cast(pl.String))
                                 .to_dict(as_series=False), "prompts": ordered["prompt"].hash().sum()})
        _check_or_write_plan(out_dir, {"hash": keys_hash, "decoding": to_dict(decoding_config),
                                       "model_dir": str(model_dir), "epochs": n_epochs})
    frames = []
    for epoch in tqdm(range(n_epochs), desc="virtual epochs", disable=not show_progress):
        if out_dir is not None and _epoch_path(out_dir, epoch).exists():
            frames.append(pl.read_parquet(_epoch_path(out_dir, epoch)))
            continue
        rows = ordered.slice(epoch * config.virtual_epoch_size, config.virtual_epoch_size)
        if backend is None:
            backend = predict_backend(model_dir, config)
        frame = generate_rows(backend, rows, decoding_config)
        if out_dir is not None:
            tmp = _epoch_path(out_dir, epoch).with_suffix(".tmp")
            frame.write_parquet(tmp)
            tmp.rename(_epoch_path(out_dir, epoch))  # atomic: a killed job never leaves half an epoch
        frames.append(frame)
    result = pl.concat(frames) if frames else pl.DataFrame(
        schema={"user_id": pl.Int64, "anchor_date": pl.Date, "text": pl.String, "num_tokens": pl.Int32})
    unique_keys = [*KEYS, "rank"] if has_rank else KEYS
    if result.select(unique_keys).is_duplicated().any() or result.select(KEYS).n_unique() != ordered.height:
        raise RuntimeError(f"{out_dir}: epochs do not cover each prompt exactly once; delete the folder and rerun")
    return result


def generate_rows(backend, rows: pl.DataFrame, decoding_config: DecodingConfig) -> pl.DataFrame:
    """One batch of prompts (KEYS, prompt, allowed_names) through `backend`: KEYS[, rank], text, num_tokens,
    in the rows' order (rank 1..n within a prompt when several sequences are returned per prompt)."""
    allowed = rows["allowed_names"].to_list() if decoding_config.is_name_constrained else None
    generations = backend.generate(rows["prompt"].to_list(), decoding_config, allowed)
    index = pl.DataFrame({
        "row": [g.prompt_index for g in generations], "rank": [g.rank for g in generations],
        "text": [g.text for g in generations], "num_tokens": [g.num_tokens for g in generations],
    }, schema={"row": pl.UInt32, "rank": pl.Int32, "text": pl.String, "num_tokens": pl.Int32})
    has_rank = decoding_config.num_return_sequences > 1
    return (rows.select(KEYS).with_row_index("row").join(index, on="row", how="inner")
            .sort("row", "rank").select(*KEYS, *(["rank"] if has_rank else []), "text", "num_tokens"))


def users_with_new_activity(events: pl.DataFrame, since: datetime) -> pl.Series:
    """Users with an event after `since` (the last event the last inference run saw): the ones to re-infer."""
    return events.filter(pl.col("ts") > since)["user_id"].unique().sort()


def merge_generations(previous: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """Replace the previous generations of every user in `fresh`; keep the others as they were."""
    kept = previous.join(fresh.select("user_id").unique(), on="user_id", how="anti")
    return pl.concat([kept, fresh.select(previous.columns)]).sort([*KEYS, *(["rank"] if "rank" in previous.columns
                                                                          else [])])

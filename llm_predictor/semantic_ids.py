"""Semantic IDs (paper 3.5): hierarchical codes for items from their content embeddings, SID tokens
in the vocabulary, users' recent SID sequences for the SID prompts (appendix A.2, A.4), and the
first two training phases (phase 3 is the ordinary task SFT on the SID prompts).

Codes come from residual k-means (RQ-KMeans): each level clusters what the previous levels left
unexplained. It is the quantiser of an RQ-VAE without the learned encoder/decoder, a deliberate
simplification for a small world (the paper's RQ-VAE has 5 levels of 20,248 codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data.config_io import require

LEVEL_LETTERS = "abcdefgh"


@dataclass(frozen=True)
class SemanticIDConfig:
    """Levels and codes per level of the residual quantiser, k-means iterations, sequence length."""

    levels: int = 3
    codebook_size: int = 32
    iterations: int = 25
    max_sequence_items: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        require(1 <= self.levels <= len(LEVEL_LETTERS), "levels", f"must be in 1..{len(LEVEL_LETTERS)}")
        require(self.codebook_size >= 2, "codebook_size", "must be >= 2")
        require(self.iterations >= 1, "iterations", "must be >= 1")
        require(self.max_sequence_items >= 1, "max_sequence_items", "must be >= 1")


def _kmeans(points: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means (vectorised); an emptied cluster is re-seeded at the worst-fit point."""
    centroids = points[rng.choice(len(points), size=k, replace=len(points) < k)].copy()
    for _ in range(iterations):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        assignment = distances.argmin(1)
        counts = np.bincount(assignment, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, points)
        is_used = counts > 0
        centroids[is_used] = sums[is_used] / counts[is_used, None]
        if not is_used.all():
            worst = distances[np.arange(len(points)), assignment].argsort()[::-1]
            centroids[~is_used] = points[worst[: (~is_used).sum()]]
    return centroids


def fit_codebooks(embeddings: np.ndarray, config: SemanticIDConfig) -> list[np.ndarray]:
    """One codebook per level, each fitted on the residuals the previous levels leave."""
    rng = np.random.default_rng(config.seed)
    residual = np.asarray(embeddings, dtype=np.float64)
    codebooks = []
    for _ in range(config.levels):
        centroids = _kmeans(residual, config.codebook_size, config.iterations, rng)
        codes = ((residual[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        residual = residual - centroids[codes]
        codebooks.append(centroids)
    return codebooks


def assign_codes(embeddings: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """(n_items, levels) integer codes: the nearest centroid of each level on the running residual."""
    residual = np.asarray(embeddings, dtype=np.float64)
    columns = []
    for centroids in codebooks:
        codes = ((residual[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        residual = residual - centroids[codes]
        columns.append(codes)
    return np.stack(columns, axis=1)


def sid_tokens(config: SemanticIDConfig) -> list[str]:
    """Every SID token, e.g. `<a_0>` ... `<c_31>` (one vocabulary entry per level and code)."""
    return [f"<{LEVEL_LETTERS[level]}_{code}>" for level in range(config.levels)
            for code in range(config.codebook_size)]


def item_sids(items: pl.DataFrame, config: SemanticIDConfig) -> pl.DataFrame:
    """(item_id, sid) with sid the concatenated tokens of the item's codes, from `items.embedding`."""
    embeddings = items["embedding"].to_numpy()
    codes = assign_codes(embeddings, fit_codebooks(embeddings, config))
    tokens = [pl.lit(f"<{LEVEL_LETTERS[level]}_") + pl.Series(codes[:, level]).cast(pl.String) + pl.lit(">")
              for level in range(config.levels)]
    return items.select("item_id").with_columns(pl.concat_str(tokens).alias("sid"))


def sid_sequences(events: pl.DataFrame, sids: pl.DataFrame, anchor_date, user_ids, config: SemanticIDConfig,
                  separator: str = "|") -> pl.DataFrame:
    """(user_id, sid_sequences): the SIDs of each user's most recent items up to the anchor date,
    newest first — the `{sid_sequences}` field of the SID prompts."""
    from datetime import datetime, timedelta, timezone

    end = datetime(anchor_date.year, anchor_date.month, anchor_date.day, tzinfo=timezone.utc) + timedelta(days=1)
    users = pl.Series("user_id", user_ids, dtype=pl.Int64).to_frame()
    recent = (
        events.filter(pl.col("item_id").is_not_null(), pl.col("ts") < end)
        .join(users, on="user_id", how="semi")
        .join(sids, on="item_id")
        .sort(["user_id", "ts"], descending=[False, True])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("sid").head(config.max_sequence_items).str.join(separator).alias("sid_sequences"))
    )
    return users.join(recent, on="user_id", how="left", maintain_order="left").with_columns(
        pl.col("sid_sequences").fill_null(""))


def sid_documents(items: pl.DataFrame, sids: pl.DataFrame, advertisers: pl.DataFrame) -> list[str]:
    """Phase 1/2 text aligning SIDs with item titles and advertiser names (paper 3.5: SID + Pin
    title + taxonomy)."""
    frame = (items.select("item_id", "title", "advertiser_id").join(sids, on="item_id")
             .join(advertisers.select("advertiser_id", pl.col("name").alias("advertiser")), on="advertiser_id"))
    return frame.select(pl.concat_str([pl.col("sid"), pl.lit(" is "), pl.col("title"), pl.lit(" from "),
                                       pl.col("advertiser"), pl.lit(".")])).to_series().to_list()


def add_sid_tokens(model_dir: Path, config: SemanticIDConfig, out_dir: Path) -> int:
    """Copy the model with the SID tokens added to its vocabulary (new embedding rows initialised
    at the mean embedding); returns the id of the first new token."""
    import torch

    from llm_predictor.model import load_model
    from llm_predictor.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    first_new = len(tokenizer)
    tokenizer.add_tokens(sid_tokens(config))
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[first_new:] = embedding[:first_new].mean(0)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return first_new


def train_phases(model_dir: Path, documents: list[str], general_texts: list[str], pretrain_config,
                 out_dir: Path, first_new_token: int, show_progress: bool = True) -> dict:
    """Phase 1: only the new SID embeddings learn (text tokens and transformer frozen); phase 2:
    the whole model, with the general corpus mixed in against forgetting (paper 3.5)."""
    from llm_predictor.pretrain import pretrain

    phase_1 = pretrain(model_dir, documents, pretrain_config, Path(out_dir) / "phase_1", show_progress,
                       trainable_from_token=first_new_token)
    phase_2 = pretrain(Path(phase_1["model_dir"]), documents + general_texts, pretrain_config,
                       Path(out_dir) / "phase_2", show_progress)
    return {"phase_1": phase_1, "phase_2": phase_2}

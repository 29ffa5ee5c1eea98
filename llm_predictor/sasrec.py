"""SASRec-style self-attentive sequence model over advertiser (brand) IDs: the ID-only baseline
that the LLM predictor is compared with (issue 4; Kang & McAuley 2018, "Self-Attentive
Sequential Recommendation").

It reads a world's conversion events as per-user advertiser sequences, learns next-advertiser
prediction (causal transformer, tied output embedding, full softmax) on the events dated on or
before the validation anchor, early-stops on the validation labels and writes a PREDICTIONS table
of the top-k advertisers for each requested (user, anchor date) from the events up to that date.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from synthetic_data import schema
from synthetic_data.config_io import require, to_dict
from synthetic_data.run_folder import RunFolder

SASREC_STAGE = "sasrec"
SOURCE = "sasrec"


@dataclass(frozen=True)
class SASRecConfig:
    """Model size, optimisation and early stopping of the SASRec baseline."""

    max_length: int = 50  # most recent conversions seen per sequence
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.5  # SASRec paper: 0.5 on sparse Amazon data (confirmed on validation here)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation NDCG@top_k before stopping
    top_k: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.max_length >= 2, "max_length", "must be at least 2")
        require(self.hidden_dim >= 1 and self.hidden_dim % max(self.num_heads, 1) == 0,
                "hidden_dim", "must be a positive multiple of num_heads")
        require(self.num_layers >= 1, "num_layers", "must be at least 1")
        require(self.num_heads >= 1, "num_heads", "must be at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.max_epochs >= 1, "max_epochs", "must be at least 1")
        require(self.patience >= 1, "patience", "must be at least 1")
        require(self.top_k >= 1, "top_k", "must be at least 1")


def padded_histories(events: pl.DataFrame, requests: pl.DataFrame, token_of: pl.DataFrame,
                     length: int) -> np.ndarray:
    """Left-padded token matrix (requests x length): each request's latest conversions dated on or
    before its anchor date, oldest first; 0 pads. `token_of` maps advertiser_id -> token (>= 1)."""
    conversions = (
        events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS)
                      & pl.col("advertiser_id").is_not_null())
        .join(token_of, on="advertiser_id", how="inner")
        .select("user_id", "ts", "event_id", "token")
    )
    placed = (
        requests.select("user_id", "anchor_date").with_row_index("request")
        .join(conversions, on="user_id", how="inner")
        .filter(pl.col("ts").dt.date() <= pl.col("anchor_date"))
        .sort("request", "ts", "event_id", descending=[False, True, True])
        .with_columns(pl.int_range(pl.len()).over("request").alias("from_end"))
        .filter(pl.col("from_end") < length)
    )
    tokens = np.zeros((requests.height, length), dtype=np.int64)
    tokens[placed["request"].to_numpy(), length - 1 - placed["from_end"].to_numpy()] = (
        placed["token"].to_numpy()
    )
    return tokens


class SASRec(nn.Module):
    """Causal self-attention over token and recency-position embeddings; output tied to tokens."""

    def __init__(self, num_tokens: int, config: SASRecConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(num_tokens, config.hidden_dim, padding_idx=0)
        nn.init.normal_(self.token_embedding.weight, std=config.hidden_dim ** -0.5)
        with torch.no_grad():
            self.token_embedding.weight[0].zero_()
        # Position 0 = the latest conversion, so trimming leading pads never shifts positions.
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden_dim, config.num_heads, dim_feedforward=config.hidden_dim,
            dropout=config.dropout, batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.hidden_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (batch x length x hidden) of left-padded `tokens`."""
        length = tokens.shape[1]
        recency = torch.arange(length - 1, -1, -1, device=tokens.device)
        is_real = (tokens > 0).unsqueeze(-1)
        hidden = self.token_embedding(tokens) * math.sqrt(self.token_embedding.embedding_dim)
        hidden = self.dropout(hidden + self.position_embedding(recency)) * is_real
        # A causal mask only: pads are zeroed (as in SASRec) rather than key-masked, which would
        # leave the pad rows with nothing to attend to.
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        return self.final_norm(self.encoder(hidden, mask=causal, is_causal=True)) * is_real

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits of hidden states (... x num_tokens); the pad token can never win."""
        logits = hidden @ self.token_embedding.weight.T
        logits[..., 0] = float("-inf")
        return logits


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row of a left-padded batch."""
    has_token = (tokens > 0).any(dim=0)
    first = int(has_token.nonzero()[0]) if bool(has_token.any()) else tokens.shape[1] - 1
    return tokens[:, first:]


def bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of row indices, each drawn from rows of similar length so that trimming
    the padding leaves little wasted attention (64 batches per sorted pool)."""
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    pool_size = batch_size * 64
    for start in range(0, len(order), pool_size):
        pool = order[start:start + pool_size]
        pool = pool[torch.argsort(lengths[pool], stable=True)]
        batches.extend(pool.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _training_pairs(sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs = every sequence without its last token, targets = shifted by one; rows with at
    least one (input, target) pair are kept."""
    inputs, targets = sequences[:, :-1], sequences[:, 1:]
    keep = ((inputs > 0) & (targets > 0)).any(axis=1)
    return inputs[keep], np.where(inputs[keep] > 0, targets[keep], 0)


class SASRecPredictor:
    """fit on a world's events and validation labels, then predict top-k advertisers per request."""

    def __init__(self, config: SASRecConfig | None = None):
        self.config = config or SASRecConfig()

    def fit(self, events: pl.DataFrame, validation_labels: pl.DataFrame, advertisers: pl.DataFrame,
            progress: bool = True) -> SASRecPredictor:
        """Train on conversions dated on or before the earliest validation anchor; keep the epoch
        with the best validation NDCG@top_k."""
        config = self.config
        if validation_labels.is_empty():
            raise ValueError("validation_labels is empty: SASRec early-stops on them; pass the "
                             "held-out validation labels (role 'validation')")
        self.token_of_ = advertisers.select("advertiser_id").unique().sort("advertiser_id").with_row_index(
            "token", offset=1).with_columns(pl.col("token").cast(pl.Int64))
        self.advertisers_ = advertisers.select("advertiser_id", "name")
        cutoff = validation_labels["anchor_date"].min()
        users = events.select("user_id").unique().sort("user_id").with_columns(
            pl.lit(cutoff).alias("anchor_date"))
        inputs, targets = _training_pairs(
            padded_histories(events, users, self.token_of_, config.max_length + 1))
        if len(inputs) == 0:
            raise ValueError(f"no user has two conversions on or before {cutoff}: nothing to train on")
        validation_tokens = padded_histories(events, validation_labels, self.token_of_, config.max_length)
        validation_targets = validation_labels.join(
            self.token_of_, on="advertiser_id", how="left", maintain_order="left")["token"].fill_null(0).to_numpy()
        # torch draws initial weights and dropout masks from its global generator; forking it
        # keeps training reproducible from config.seed without touching the caller's state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model_ = SASRec(self.token_of_.height + 1, config)
            self.history_ = self._train(inputs, targets, validation_tokens, validation_targets, progress)
        return self

    def _train(self, inputs: np.ndarray, targets: np.ndarray, validation_tokens: np.ndarray,
               validation_targets: np.ndarray, progress: bool) -> list[dict]:
        config = self.config
        optimizer = torch.optim.AdamW(self.model_.parameters(), lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        inputs_t, targets_t = torch.from_numpy(inputs), torch.from_numpy(targets)
        lengths = (inputs_t > 0).sum(dim=1)
        history, best, best_state, since_best = [], -1.0, None, 0
        epochs = tqdm(range(config.max_epochs), desc="sasrec", disable=not progress)
        for epoch in epochs:
            self.model_.train()
            total, count = 0.0, 0
            for batch in bucketed_batches(lengths, config.batch_size, generator):
                batch_inputs = trim_padding(inputs_t[batch])
                batch_targets = targets_t[batch][:, -batch_inputs.shape[1]:]
                has_target = batch_targets > 0
                hidden = self.model_(batch_inputs)[has_target]
                loss = nn.functional.cross_entropy(self.model_.logits(hidden), batch_targets[has_target])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                targets_seen = int(has_target.sum())
                total, count = total + loss.item() * targets_seen, count + targets_seen
            ranks = self._target_ranks(validation_tokens, validation_targets)
            ndcg = float(((ranks >= 1) / np.log2(np.maximum(ranks, 1) + 1.0)).mean())
            history.append({"epoch": epoch + 1, "train_loss": total / count, "validation_ndcg": ndcg,
                            "validation_recall": float((ranks >= 1).mean())})
            epochs.set_postfix(loss=f"{total / count:.3f}", val_ndcg=f"{ndcg:.4f}")
            if ndcg > best:
                best, best_state, since_best = ndcg, copy.deepcopy(self.model_.state_dict()), 0
            else:
                since_best += 1
                if since_best >= config.patience:
                    break
        self.model_.load_state_dict(best_state)
        self.model_.eval()
        return history

    @torch.no_grad()
    def _top_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Top-k tokens at the last position of each left-padded row (requests x top_k)."""
        self.model_.eval()
        k = min(self.config.top_k, self.token_of_.height)
        top = np.zeros((len(tokens), k), dtype=np.int64)
        by_length = np.argsort((tokens > 0).sum(axis=1), kind="stable")
        for start in range(0, len(tokens), 512):
            rows = by_length[start:start + 512]
            chunk = trim_padding(torch.from_numpy(tokens[rows]))
            logits = self.model_.logits(self.model_(chunk)[:, -1])
            top[rows] = torch.topk(logits, k, dim=-1).indices.numpy()
        return top

    def _target_ranks(self, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """1-based rank of each target among the top-k predictions (0 where absent)."""
        top = self._top_tokens(tokens)
        found = top == targets[:, None]
        return np.where(found.any(axis=1), found.argmax(axis=1) + 1, 0)

    def predict(self, events: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
        """PREDICTIONS: the top-k advertisers for each (user_id, anchor_date) request."""
        requests = requests.select("user_id", "anchor_date").unique(maintain_order=True)
        top = self._top_tokens(padded_histories(events, requests, self.token_of_, self.config.max_length))
        k = top.shape[1]
        ranked = pl.DataFrame({
            "user_id": np.repeat(requests["user_id"].to_numpy(), k),
            "anchor_date": np.repeat(requests["anchor_date"].to_numpy(), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), requests.height),
            "token": top.reshape(-1),
        })
        return schema.conform(
            ranked.join(self.token_of_, on="token", how="left", maintain_order="left")
            .join(self.advertisers_, on="advertiser_id", how="left", maintain_order="left")
            .select("user_id", "anchor_date", "rank", "advertiser_id",
                    pl.col("name").alias("advertiser_name"), pl.lit(SOURCE).alias("source")),
            schema.PREDICTIONS, "sasrec predictions",
        )


def run_sasrec(world_dir: Path, run_dir: Path, config: SASRecConfig | None = None,
               progress: bool = True) -> pl.DataFrame:
    """Fit on a leave-one-out world (labels with a `role` column), predict the validation and
    test anchors, write `<run>/sasrec/predictions.parquet` (stage "sasrec")."""
    config = config or SASRecConfig()
    labels = schema.load_table(world_dir, "labels")
    if "role" not in labels.columns:
        raise ValueError(f"{world_dir}/labels.parquet has no 'role' column: run_sasrec needs "
                         f"validation/test labels of a leave-one-out world (synthetic_data.real)")
    events = schema.load_table(world_dir, "events")
    advertisers = schema.load_table(world_dir, "advertisers")
    run = RunFolder(run_dir)
    world_record = Path(world_dir) / "stage.json"  # the world's config hash: a new world re-fits
    stage_config = to_dict(config) | {
        "world": str(Path(world_dir).resolve()),
        "world_config_hash": json.loads(world_record.read_text())["config_hash"] if world_record.exists() else None,
    }
    out = run.stage_dir(SASREC_STAGE) / "predictions.parquet"
    if run.is_complete(SASREC_STAGE, stage_config):
        return pl.read_parquet(out)
    predictor = SASRecPredictor(config).fit(
        events, labels.filter(pl.col("role") == "validation"), advertisers, progress)
    predictions = predictor.predict(events, labels.filter(pl.col("role").is_in(["validation", "test"])))
    predictions.write_parquet(out)
    best = max(predictor.history_, key=lambda row: row["validation_ndcg"])
    run.complete(SASREC_STAGE, stage_config, ["predictions.parquet"],
                 {"epochs": len(predictor.history_), "best": best, "history": predictor.history_})
    if progress:
        tqdm.write(f"sasrec: {len(predictor.history_)} epochs, best epoch {best['epoch']} "
                   f"(validation NDCG@{config.top_k} {best['validation_ndcg']:.4f}, "
                   f"Recall@{config.top_k} {best['validation_recall']:.4f}); wrote {out}")
    return predictions

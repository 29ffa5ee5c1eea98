"""Fit the two-tower on one objective's positives and embed users and items (paper 3.6.1, 4.5.1).

Each positive (user, ts, item) is a training example whose user features are computed from the
events strictly before ts, so a model never sees the engagement it is asked to predict. Users
and time are held out by the caller: pass the train-split users and a cutoff.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable
from weakref import WeakKeyDictionary

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from retrieval.config import RetrievalConfig
from retrieval.features import (UserHistory, Vocabulary, bag_starts, build_vocabulary,
                                item_features, take_rows)
from retrieval.objectives import training_positives
from retrieval.two_tower import TwoTower, sampled_softmax_loss
from synthetic_data.config_io import from_dict, to_dict

EMBED_BATCH = 8192


@dataclass(frozen=True)
class TrainingSummary:
    """What a fit did: example counts, speed and the loss per epoch."""

    objective: str
    examples: int
    positives_without_catalog_item: int  # positives naming an item outside the catalog (skipped)
    mean_weight: float  # mean example weight (1.0 = unweighted; clicks: the dwell weights)
    epochs: int
    seconds: float
    examples_per_second: float
    epoch_losses: tuple[float, ...]


class TwoTowerRetriever:
    """A two-tower model with its vocabulary: `fit` learns, then embeds users and items."""

    def __init__(self, config: RetrievalConfig):
        self.config = config
        self._settled_vectors: WeakKeyDictionary[UserHistory, SettledValues] = WeakKeyDictionary()

    def __getstate__(self) -> dict:  # the cache of settled vectors is per process (and a weak mapping cannot pickle)
        return {name: value for name, value in self.__dict__.items() if name != "_settled_vectors"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _settled_vectors=WeakKeyDictionary())

    def fit(self, events: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
            train_user_ids: pl.Series, before: datetime, impressions: pl.DataFrame | None = None,
            progress: bool = False) -> TwoTowerRetriever:
        """Train on the positives of `train_user_ids` strictly before `before`."""
        config = self.config
        self._settled_vectors = WeakKeyDictionary()  # vectors of a previous fit are stale
        history_events = events.filter(pl.col("ts") < before)
        self.vocabulary_ = build_vocabulary(items, users, history_events, config.features)
        self.items_ = item_features(items, self.vocabulary_)
        generator = torch.Generator().manual_seed(config.training.seed)
        self.model_ = TwoTower(config.model, self.vocabulary_.sizes(), self.items_.content.shape[1],
                               generator)
        positives = training_positives(events, config.training, before, train_user_ids, impressions)
        catalog_row = _catalog_rows(self.items_.item_ids, positives["item_id"].to_numpy())
        in_catalog = catalog_row >= 0
        positives, catalog_row = positives.filter(pl.Series(in_catalog)), catalog_row[in_catalog]
        if positives.height < config.training.batch_size:
            raise ValueError(
                f"objective '{config.training.objective}' has {positives.height} positives before "
                f"{before:%Y-%m-%d}, fewer than training.batch_size={config.training.batch_size}; "
                f"lower the batch size or use a larger world"
            )
        history = self.history(history_events, users)
        user_features = history.features(positives["user_id"].to_numpy(), positives["ts"])
        started = time.perf_counter()
        losses = self._train(user_features.sparse, user_features.content, catalog_row,
                             positives["weight"].to_numpy(), generator, progress)
        seconds = time.perf_counter() - started
        examples = positives.height * config.training.epochs
        self.summary_ = TrainingSummary(
            objective=config.training.objective, examples=positives.height,
            positives_without_catalog_item=int((~in_catalog).sum()),
            mean_weight=float(positives["weight"].mean()), epochs=config.training.epochs,
            seconds=seconds, examples_per_second=examples / seconds, epoch_losses=tuple(losses),
        )
        return self

    def _train(self, sparse, content, catalog_row, weights, generator, progress) -> list[float]:
        training = self.config.training
        items, model = self.items_, self.model_
        # logQ: expected count of each item in a batch's candidate set (positives + uniform draws).
        frequency = np.bincount(catalog_row, minlength=len(items)) / len(catalog_row)
        log_q = torch.from_numpy(np.log(training.batch_size * frequency
                                        + training.uniform_negatives / len(items))).float()
        optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
        batches = len(catalog_row) // training.batch_size  # drop the ragged last batch
        starts = bag_starts(sparse)
        epoch_losses = []
        model.train()
        for epoch in range(training.epochs):
            order = torch.randperm(len(catalog_row), generator=generator).numpy()
            total = 0.0
            for batch in tqdm(range(batches), desc=f"two-tower epoch {epoch + 1}",
                              disable=not progress, leave=False):
                rows = order[batch * training.batch_size:(batch + 1) * training.batch_size]
                negatives = torch.randint(len(items), (training.uniform_negatives,),
                                          generator=generator).numpy()
                candidates = np.concatenate([catalog_row[rows], negatives])
                user = model.user_embedding(take_rows(sparse, rows, starts), content[rows])
                item = model.item_embedding(*items.take(candidates))
                loss = sampled_softmax_loss(
                    user, item, torch.from_numpy(candidates), log_q[candidates],
                    torch.from_numpy(weights[rows]).float(), training.temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            epoch_losses.append(total / batches)
        model.eval()
        return epoch_losses

    def history(self, events: pl.DataFrame, users: pl.DataFrame) -> UserHistory:
        """Index an observable event history for computing user features with this vocabulary."""
        return UserHistory(events, users, self.items_, self.vocabulary_, self.config.features)

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """Embeddings of the whole catalog (rows of `items_`), float32 and L2-normalised."""
        rows = np.arange(len(self.items_))
        return np.concatenate([
            self.model_.item_embedding(*self.items_.take(rows[start:start + EMBED_BATCH])).numpy()
            for start in range(0, len(rows), EMBED_BATCH)
        ]).astype(np.float32)

    def user_vectors(self, history: UserHistory, user_ids: np.ndarray, as_of: pl.Series) -> np.ndarray:
        """Embeddings of (user, as_of) pairs from the history strictly before as_of.

        A user's vector after their last event no longer changes, so it is kept per history: every
        generator and every simulated request of that user reuses it instead of embedding again.
        """
        settled = self._settled_vectors.setdefault(history, SettledValues(history))
        vectors, = settled.values(user_ids, as_of, lambda users, times: (self._embed(history, users, times),))
        return vectors

    @torch.no_grad()
    def _embed(self, history: UserHistory, user_ids: np.ndarray, as_of: pl.Series) -> np.ndarray:
        vectors = [np.zeros((0, self.config.model.output_dim), np.float32)]
        for start in range(0, len(user_ids), EMBED_BATCH):
            features = history.features(user_ids[start:start + EMBED_BATCH],
                                        as_of[start:start + EMBED_BATCH])
            vectors.append(self.model_.user_embedding(features.sparse, features.content).numpy())
        return np.concatenate(vectors).astype(np.float32)

    def save(self, path: Path) -> Path:
        """Write config, vocabulary, weights and training summary to one `torch.save` file."""
        torch.save({
            "config": to_dict(self.config),
            "vocabulary": self.vocabulary_.to_state(),
            "content_dim": int(self.items_.content.shape[1]),
            "state": self.model_.state_dict(),
            "summary": to_dict(self.summary_),
        }, path)
        return Path(path)

    @classmethod
    def load(cls, path: Path, items: pl.DataFrame) -> TwoTowerRetriever:
        """A fitted retriever from `save`, over the catalog `items` (the same world's items)."""
        saved = torch.load(path, weights_only=True)
        retriever = cls(from_dict(RetrievalConfig, saved["config"]))
        retriever.vocabulary_ = Vocabulary.from_state(saved["vocabulary"])
        retriever.items_ = item_features(items, retriever.vocabulary_)
        if retriever.items_.content.shape[1] != saved["content_dim"]:
            raise ValueError(f"{path}: model expects content embeddings of width "
                             f"{saved['content_dim']}, items have {retriever.items_.content.shape[1]}")
        retriever.model_ = TwoTower(retriever.config.model, retriever.vocabulary_.sizes(),
                                    saved["content_dim"], torch.Generator())
        retriever.model_.load_state_dict(saved["state"])
        retriever.model_.eval()
        summary = dict(saved["summary"])
        summary["epoch_losses"] = tuple(summary["epoch_losses"])
        retriever.summary_ = TrainingSummary(**summary)
        return retriever


class SettledValues:
    """Per-user values computed from one history that no longer change once the user is past their
    last event in it (a user vector, its top items): each is computed once per user and kept, by the
    user's row in the history's sorted users; pairs of users with later events are computed afresh."""

    def __init__(self, history: UserHistory):
        self.history = history
        self.is_known = np.zeros(len(history.user_ids), dtype=bool)
        self.columns: tuple[np.ndarray, ...] = ()  # [users, ...] per value, allocated on the first store

    def __getstate__(self) -> dict:  # a per-process cache: another process (a Ray worker) fills its own
        return {"history": self.history}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["history"])

    def values(self, user_ids: np.ndarray, as_of: pl.Series,
               compute: Callable[[np.ndarray, pl.Series], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        """`compute(user_ids, as_of)` for every pair, calling it only for settled users not yet kept
        (once each) and for pairs that are not settled. `compute` returns arrays with one row per pair."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        row = self._row(user_ids)
        is_settled = self.history.is_settled(user_ids, as_of) & (row >= 0)
        is_new = np.flatnonzero(is_settled & ~self.is_known[np.maximum(row, 0)])
        missing, first = np.unique(row[is_new], return_index=True)  # compute each new user once
        changing = np.flatnonzero(~is_settled)
        compute_for = np.concatenate([is_new[first], changing])
        computed = compute(user_ids[compute_for], as_of.gather(compute_for))
        if not self.columns:
            self.columns = tuple(np.zeros((len(self.is_known), *column.shape[1:]), column.dtype) for column in computed)
        for column, values in zip(self.columns, computed):
            column[missing] = values[:len(missing)]
        self.is_known[missing] = True
        result = []
        for column, values in zip(self.columns, computed):
            taken = np.empty((len(user_ids), *column.shape[1:]), column.dtype)
            taken[is_settled] = column[row[is_settled]]
            taken[changing] = values[len(missing):]
            result.append(taken)
        return tuple(result)

    def _row(self, user_ids: np.ndarray) -> np.ndarray:
        """Each user's row, -1 for a user the history does not know."""
        known = self.history.user_ids
        if len(known) == 0:
            return np.full(len(user_ids), -1, dtype=np.int64)
        position = np.minimum(np.searchsorted(known, user_ids), len(known) - 1)
        return np.where(known[position] == user_ids, position, -1)


def _catalog_rows(catalog_item_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Catalog row of each item ID, -1 where the item is not in the catalog."""
    order = np.argsort(catalog_item_ids)
    sorted_ids = catalog_item_ids[order]
    position = np.clip(np.searchsorted(sorted_ids, item_ids), 0, max(len(sorted_ids) - 1, 0))
    return np.where(sorted_ids[position] == item_ids, order[position], -1)

"""The two-tower model and its loss (paper 3.6.1; Yang et al. 2020, mixed negative sampling).

Sparse IDs go through one TorchRec `EmbeddingBagCollection` (item, advertiser and category
tables are shared by the item tower's IDs and the user tower's histories); each tower is an MLP
over its pooled bags and a content vector, ending in an L2-normalised embedding so that faiss
inner-product search is cosine search. The loss is an in-batch sampled softmax over the batch's
positives plus uniformly sampled items, with logQ correction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from retrieval.config import ModelConfig
from retrieval.features import ITEM_SPARSE, PROFILE_FIELDS, USER_SPARSE, Sparse

# Embedding table -> the sparse features that look it up.
TABLES = {
    "item": ("item_id", "recent_items"),
    "advertiser": ("advertiser_id", "recent_advertisers"),
    "category": ("category_id", "recent_categories"),
    "search_token": ("search_tokens",),
    **{name: (name,) for name in PROFILE_FIELDS},
}
FEATURE_KEYS = tuple(key for keys in TABLES.values() for key in keys)


def keyed_jagged(features: dict[str, Sparse], batch_size: int) -> KeyedJaggedTensor:
    """One KJT over every feature key; keys absent from `features` get empty bags."""
    values, lengths = [], []
    for key in FEATURE_KEYS:
        if key in features:
            key_values, key_lengths = features[key]
        else:
            key_values, key_lengths = np.zeros(0, np.int64), np.zeros(batch_size, np.int64)
        if len(key_lengths) != batch_size:
            raise ValueError(f"feature '{key}' has {len(key_lengths)} rows, expected {batch_size}")
        values.append(key_values)
        lengths.append(key_lengths)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(FEATURE_KEYS),
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int64)),
    )


def _mlp(inputs: int, config: ModelConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, config.hidden_dim), nn.ReLU(),
                         nn.Linear(config.hidden_dim, config.output_dim))


class TwoTower(nn.Module):
    """User and item towers mapping into one normalised `output_dim` space."""

    def __init__(self, config: ModelConfig, table_sizes: dict[str, int], content_dim: int,
                 generator: torch.Generator):
        super().__init__()
        self.config = config
        self.embeddings = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=name, embedding_dim=config.embedding_dim,
                                   num_embeddings=table_sizes[name], feature_names=list(keys),
                                   pooling=PoolingType.MEAN)
                for name, keys in TABLES.items()
            ],
            device=torch.device("cpu"),
        )
        self.user_mlp = _mlp(len(USER_SPARSE) * config.embedding_dim + content_dim, config)
        self.item_mlp = _mlp(len(ITEM_SPARSE) * config.embedding_dim + content_dim, config)
        self._initialise(generator)

    def _initialise(self, generator: torch.Generator) -> None:
        """Seeded initialisation (the library defaults draw from global random state)."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.startswith("embeddings."):
                    parameter.uniform_(-0.05, 0.05, generator=generator)
                elif parameter.dim() == 2:
                    nn.init.kaiming_uniform_(parameter, a=math.sqrt(5), generator=generator)
                else:
                    parameter.zero_()

    def _tower(self, features: dict[str, Sparse], content: np.ndarray, keys: tuple[str, ...],
               mlp: nn.Module) -> torch.Tensor:
        pooled = self.embeddings(keyed_jagged(features, len(content))).to_dict()
        inputs = torch.cat([pooled[key] for key in keys] + [torch.from_numpy(content)], dim=1)
        return F.normalize(mlp(inputs), dim=1)

    def user_embedding(self, features: dict[str, Sparse], content: np.ndarray) -> torch.Tensor:
        return self._tower(features, content, USER_SPARSE, self.user_mlp)

    def item_embedding(self, features: dict[str, Sparse], content: np.ndarray) -> torch.Tensor:
        return self._tower(features, content, ITEM_SPARSE, self.item_mlp)


def sampled_softmax_loss(user: torch.Tensor, candidates: torch.Tensor, candidate_ids: torch.Tensor,
                         candidate_log_q: torch.Tensor, weights: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """Weighted in-batch softmax with logQ correction; row i's positive is candidate i.

    `candidates` holds the batch's B positives followed by any uniformly sampled negatives;
    `candidate_log_q` is the log of each candidate item's expected count in a batch's candidate
    set (the logQ correction, Yi et al. 2019). Other copies of row i's positive item are masked,
    not counted as negatives.
    """
    batch = user.shape[0]
    logits = user @ candidates.T / temperature - candidate_log_q[None, :]
    positive_ids = candidate_ids[:batch]
    is_copy = positive_ids[:, None] == candidate_ids[None, :]
    is_copy[torch.arange(batch), torch.arange(batch)] = False
    logits = logits.masked_fill(is_copy, float("-inf"))
    losses = F.cross_entropy(logits, torch.arange(batch), reduction="none")
    return (losses * weights).sum() / weights.sum()

"""DCN-v2 conversion model (paper 3.6.2; Wang et al. 2021): TorchRec embedding bags, low-rank cross net, MLP.

One logit per task: a single-task model has one head (ctcvr or vtcvr), a multi-task model shares
the embeddings, cross and deep layers across heads.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.crossnet import LowRankCrossNet

from ranking.config import DCNConfig
from ranking.scaling import DenseScaler


class DCNv2(nn.Module):
    """Sparse IDs -> embedding bags; with bounded, scaled dense features -> cross net -> MLP -> task logits."""

    def __init__(self, vocab_sizes: dict[str, int], n_dense: int, n_tasks: int, config: DCNConfig):
        super().__init__()
        self.sparse_names = list(vocab_sizes)
        self.embeddings = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"table_{name}", embedding_dim=config.embedding_dim,
                               num_embeddings=size, feature_names=[name])
            for name, size in vocab_sizes.items()], device=torch.device("cpu"))
        width = len(vocab_sizes) * config.embedding_dim + n_dense
        for name, value in (("offset", 0.0), ("scale", 1.0), ("low", -torch.inf), ("high", torch.inf)):
            self.register_buffer(f"dense_{name}", torch.full((n_dense,), value))
        self.cross = LowRankCrossNet(in_features=width, num_layers=config.cross_layers,
                                     low_rank=config.cross_low_rank)
        layers: list[nn.Module] = []
        for hidden in config.deep_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.deep = nn.Sequential(*layers)
        self.heads = nn.Linear(width, n_tasks)

    def set_dense_scaler(self, scaler: DenseScaler) -> None:
        """Scale and clip dense inputs as `scaler` (fitted on the training rows) says; stored with the weights."""
        for name in ("offset", "scale", "low", "high"):
            getattr(self, f"dense_{name}").copy_(torch.from_numpy(getattr(scaler, name)))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """`sparse` [batch, features] int64 indices, `dense` [batch, d] float32 -> logits [batch, tasks]."""
        scaled = torch.clamp((dense - self.dense_offset) / self.dense_scale, self.dense_low, self.dense_high)
        x = torch.cat([self.embed(sparse), scaled], dim=1)
        hidden = self.deep(self.cross(x.to(next(self.cross.parameters()).dtype)))  # bf16 after `for_scoring`
        return self.heads(hidden.float())

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        """[batch, features * embedding_dim]: each feature's one ID looked up in its table.

        The scoring copy gathers from the tables stacked into one (`for_scoring`): the same values as
        TorchRec's per-table bags of one ID, in one index op instead of a jagged tensor and a bag per table.
        """
        stacked = getattr(self, "stacked_tables_", None)
        if stacked is not None:
            return torch.nn.functional.embedding(sparse + self.table_offsets_, stacked).flatten(1)
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=self.sparse_names, values=sparse.t().reshape(-1),
            lengths=torch.ones(sparse.numel(), dtype=torch.int32))
        return self.embeddings(features).values().reshape(sparse.shape[0], -1)

    def for_scoring(self, use_bf16: bool) -> DCNv2:
        """A copy in eval mode with its embedding tables stacked for `embed`; with `use_bf16`, its cross
        and deep weights are bf16 (embeddings and heads stay float32: a bf16 logit has 8 significant
        bits, which ties thousands of test rows before AUC). On AMX CPUs this is ~2x faster than
        autocast, which re-casts the weights on every call.
        """
        scoring = copy.deepcopy(self).eval()
        tables = [scoring.embeddings.embedding_bags[f"table_{name}"].weight.detach() for name in self.sparse_names]
        scoring.stacked_tables_ = torch.cat(tables)
        scoring.table_offsets_ = torch.tensor([0, *[len(table) for table in tables[:-1]]]).cumsum(0)
        del scoring.embeddings  # the stacked copy replaces them
        if use_bf16:
            for module in (scoring.cross, scoring.deep):
                module.to(torch.bfloat16)
        return scoring

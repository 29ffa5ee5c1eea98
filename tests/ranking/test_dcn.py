"""DCN-v2 module: the scoring copy (stacked embedding tables, optional bf16) computes the model's logits."""

from __future__ import annotations

import torch

from ranking.config import DCNConfig
from ranking.dcn import DCNv2

VOCAB_SIZES = {"user_id": 50, "item_id": 30, "surface": 3}


def _model_and_rows(rows: int = 64) -> tuple[DCNv2, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DCNv2(VOCAB_SIZES, n_dense=4, n_tasks=2, config=DCNConfig(embedding_dim=8, deep_layers=(16,)))
    sparse = torch.stack([torch.randint(size, (rows,), generator=generator) for size in VOCAB_SIZES.values()], dim=1)
    return model.eval(), sparse, torch.randn(rows, 4, generator=generator)


def test_the_stacked_tables_look_up_what_each_table_holds_and_score_the_same_bits():
    model, sparse, dense = _model_and_rows()
    scoring = model.for_scoring(use_bf16=False)
    with torch.no_grad():
        assert torch.equal(scoring.embed(sparse), model.embed(sparse))
        assert torch.equal(scoring(sparse, dense), model(sparse, dense))
    for column, name in enumerate(VOCAB_SIZES):  # each feature reads its own table, not a neighbour's
        table = model.embeddings.embedding_bags[f"table_{name}"].weight
        looked_up = scoring.embed(sparse)[:, column * 8:(column + 1) * 8]
        assert torch.equal(looked_up, table[sparse[:, column]].detach())


def test_the_bf16_copy_is_close_and_leaves_the_trained_model_as_it_was():
    model, sparse, dense = _model_and_rows()
    scoring = model.for_scoring(use_bf16=True)
    assert next(scoring.cross.parameters()).dtype == torch.bfloat16
    assert next(model.cross.parameters()).dtype == torch.float32 and hasattr(model, "embeddings")
    with torch.no_grad():
        torch.testing.assert_close(scoring(sparse, dense), model(sparse, dense), atol=0.05, rtol=0.05)

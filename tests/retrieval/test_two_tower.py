"""The two-tower model and its loss: exact loss values, masking, seeded init, normalised towers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.config import ModelConfig
from retrieval.features import ITEM_SPARSE, USER_SPARSE
from retrieval.two_tower import FEATURE_KEYS, TwoTower, keyed_jagged, sampled_softmax_loss


def _log_softmax_loss(logits: np.ndarray, target: int) -> float:
    finite = logits[np.isfinite(logits)]
    return float(-logits[target] + np.log(np.exp(finite).sum()))


def test_loss_is_the_weighted_logq_corrected_sampled_softmax():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    log_q = torch.tensor([math.log(2.0), 0.0, math.log(0.5)])
    loss = sampled_softmax_loss(user, candidates, torch.tensor([0, 1, 2]), log_q,
                                torch.tensor([1.0, 3.0]), temperature=0.5)
    logits = user.numpy() @ candidates.numpy().T / 0.5 - log_q.numpy()[None, :]
    expected = (1 * _log_softmax_loss(logits[0], 0) + 3 * _log_softmax_loss(logits[1], 1)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_other_copies_of_the_positive_item_are_not_negatives():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    loss = sampled_softmax_loss(user, candidates, torch.tensor([5, 5, 7]), torch.zeros(3),
                                torch.ones(2), temperature=1.0)
    logits = user.numpy() @ candidates.numpy().T
    expected = (_log_softmax_loss(np.array([logits[0, 0], -np.inf, logits[0, 2]]), 0)
                + _log_softmax_loss(np.array([-np.inf, logits[1, 1], logits[1, 2]]), 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_a_uniform_logq_shift_leaves_the_loss_unchanged():
    generator = torch.Generator().manual_seed(0)
    user = torch.nn.functional.normalize(torch.randn(4, 3, generator=generator), dim=1)
    candidates = torch.nn.functional.normalize(torch.randn(6, 3, generator=generator), dim=1)
    ids, weights = torch.arange(6), torch.ones(4)
    base = sampled_softmax_loss(user, candidates, ids, torch.zeros(6), weights, 0.1)
    shifted = sampled_softmax_loss(user, candidates, ids, torch.full((6,), 2.5), weights, 0.1)
    assert shifted.item() == pytest.approx(base.item(), rel=1e-6)


def test_keyed_jagged_gives_absent_features_empty_bags():
    kjt = keyed_jagged({"item_id": (np.array([3, 4]), np.array([1, 1]))}, batch_size=2)
    assert kjt.keys() == list(FEATURE_KEYS)
    lengths = kjt.to_dict()
    assert lengths["item_id"].lengths().tolist() == [1, 1]
    assert lengths["recent_items"].lengths().tolist() == [0, 0]
    with pytest.raises(ValueError, match="item_id"):
        keyed_jagged({"item_id": (np.array([3]), np.array([1]))}, batch_size=2)


def _model(seed: int) -> TwoTower:
    sizes = {"item": 10, "advertiser": 4, "category": 5, "search_token": 7, "age": 3, "gender": 3,
             "user_state": 3}
    return TwoTower(ModelConfig(embedding_dim=4, hidden_dim=8, output_dim=6), sizes, content_dim=2,
                    generator=torch.Generator().manual_seed(seed))


def _batch():
    ones = np.ones(2, dtype=np.int64)
    user = {name: (np.array([1, 2]), ones) for name in USER_SPARSE}
    item = {name: (np.array([1, 3]), ones) for name in ITEM_SPARSE}
    content = np.array([[0.5, -1.0], [1.0, 0.0]], dtype=np.float32)
    return user, item, content


def test_towers_are_seeded_and_map_to_the_unit_sphere():
    user, item, content = _batch()
    first, again, other = _model(1), _model(1), _model(2)
    with torch.no_grad():
        vectors = first.user_embedding(user, content)
        assert vectors.shape == (2, 6)
        np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(vectors.numpy(), again.user_embedding(user, content).numpy())
        assert not np.allclose(vectors.numpy(), other.user_embedding(user, content).numpy())
        np.testing.assert_allclose(first.item_embedding(item, content).norm(dim=1).numpy(), 1.0, rtol=1e-6)

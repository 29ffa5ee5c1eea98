"""faiss indexes: exact search is brute force, the kind follows the size, approximate recall is
measured, and advertiser-filtered search equals per-advertiser brute force."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.config import IndexConfig
from retrieval.index import ItemIndex


def _clustered(items: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    advertisers = rng.integers(0, 50, items)
    centers = rng.normal(size=(50, dim))
    vectors = centers[advertisers] + 0.7 * rng.normal(size=(items, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), advertisers + 100


def test_small_catalogs_get_exact_search_equal_to_brute_force():
    vectors, advertisers = _clustered(2000)
    index = ItemIndex(IndexConfig(exact_max_items=5000)).fit(vectors, advertisers)
    assert index.kind_ == "exact"
    assert index.measured_recall(50) == 1.0
    queries = vectors[:7] + 0.1
    scores, rows = index.search(queries, 20)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(scores[:, 0], (queries @ vectors.T).max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_large_catalogs_get_an_approximate_index_with_high_measured_recall(kind):
    vectors, advertisers = _clustered(6000)
    index = ItemIndex(IndexConfig(exact_max_items=5000, approximate_kind=kind, ivf_probe=16,
                                  recall_queries=200)).fit(vectors, advertisers)
    assert index.kind_ == kind
    recall = index.measured_recall(20)
    assert 0.9 <= recall <= 1.0


def test_advertiser_search_is_exact_per_advertiser_top_k():
    vectors, advertisers = _clustered(3000)
    index = ItemIndex(IndexConfig(exact_max_items=100)).fit(vectors, advertisers)  # hnsw globally
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(3000, 4)]
    query_of_pair = np.array([0, 0, 1, 2, 3, 3])
    advertiser_of_pair = np.array([100, 117, 100, 999, 149, 120])  # 999 has no items
    matches = index.search_advertisers(queries, query_of_pair, advertiser_of_pair, k=5)
    for pair, (query, advertiser) in enumerate(zip(query_of_pair, advertiser_of_pair)):
        rows = np.flatnonzero(advertisers == advertiser)
        expected = rows[np.argsort(-(vectors[rows] @ queries[query]), kind="stable")[:5]]
        got = matches.item_row[matches.pair == pair]
        assert got.tolist() == expected.tolist()
        assert matches.position[matches.pair == pair].tolist() == list(range(len(expected)))
    assert not np.any(matches.pair == 3)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_selector_search_returns_only_allowed_items(kind):
    vectors, advertisers = _clustered(3000)
    # Probing every IVF list, so that a selective filter still finds its items.
    config = IndexConfig(exact_max_items=10_000 if kind == "exact" else 100,
                         approximate_kind="hnsw" if kind == "hnsw" else "ivf",
                         hnsw_ef_search=256, ivf_probe=10_000)
    index = ItemIndex(config).fit(vectors, advertisers)
    assert index.kind_ == kind
    allowed = index.advertiser_rows(np.array([103, 140]))
    assert set(advertisers[allowed]) == {103, 140}
    _, rows = index.search_with_selector(vectors[0], allowed, 10)
    found = rows[0][rows[0] >= 0]
    assert len(found) > 0 and set(found) <= set(allowed.tolist())


def test_saved_index_answers_like_the_original(tmp_path):
    vectors, advertisers = _clustered(1000)
    index = ItemIndex(IndexConfig()).fit(vectors, advertisers)
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path, IndexConfig())
    assert loaded.kind_ == index.kind_
    np.testing.assert_array_equal(loaded.search(vectors[:5], 10)[1], index.search(vectors[:5], 10)[1])

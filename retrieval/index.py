"""faiss indexes over item embeddings: unfiltered ANN and advertiser-filtered exact search.

Unfiltered search (the main generator) uses `IndexFlatIP` up to `exact_max_items` items and HNSW
or IVF above, with its recall measured against exact search. Advertiser-filtered search (the
LLM generator, paper 3.6.1) uses per-advertiser sub-indexes: the vectors sorted by advertiser
into contiguous blocks; each block wanted by a batch is scored exactly, once, by a matrix product
with every query that asks for it. `search_with_selector` is the alternative (faiss
`IDSelectorBatch` on the global index); `benchmarks/bench_retrieval.py` measures both: at 1M
items the sub-indexes were ~20x faster than the exact index with a selector, and the selector on
IVF/HNSW lost most of the filtered top-100 (recall 0.1-0.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.config import IndexConfig

SCORE_CHUNK = 1 << 22  # scores computed per matrix product (bounds memory)


def build_faiss_index(vectors: np.ndarray, kind: str, config: IndexConfig) -> faiss.Index:
    """An inner-product faiss index of `kind` (exact | hnsw | ivf) over `vectors` (row = ID)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    elif kind == "ivf":
        lists = config.ivf_lists or max(1, int(4 * math.sqrt(len(vectors))))
        lists = min(lists, len(vectors))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(config.seed)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), lists * 64), replace=False)]
        index.cp.seed = config.seed
        index.train(sample)
        index.nprobe = config.ivf_probe
    else:
        raise ValueError(f"index kind {kind!r}: use 'exact', 'hnsw' or 'ivf'")
    index.add(vectors)
    return index


def recall_against_exact(approximate: faiss.Index, vectors: np.ndarray, queries: np.ndarray,
                         k: int) -> float:
    """Mean share of the exact top-k that the approximate index also returns."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, truth = exact.search(queries, k)
    _, found = approximate.search(queries, k)
    hits = [len(np.intersect1d(t[t >= 0], f[f >= 0])) for t, f in zip(truth, found)]
    return float(np.sum(hits) / np.maximum((truth >= 0).sum(), 1))


@dataclass(frozen=True)
class AdvertiserMatches:
    """Top items per (query, advertiser) pair: parallel arrays, sorted by pair then score."""

    pair: np.ndarray  # index into the pairs passed in
    item_row: np.ndarray  # catalog row
    score: np.ndarray  # inner product
    position: np.ndarray  # 0-based rank of the item within its pair


class ItemIndex:
    """Item vectors indexed for unfiltered ANN search and per-advertiser exact search."""

    def __init__(self, config: IndexConfig):
        self.config = config

    def fit(self, vectors: np.ndarray, advertiser_ids: np.ndarray) -> ItemIndex:
        """Index catalog rows (row i = vectors[i]) and group them by advertiser."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.kind_ = "exact" if len(vectors) <= self.config.exact_max_items else self.config.approximate_kind
        self.index_ = build_faiss_index(vectors, self.kind_, self.config)
        self._partition(vectors, advertiser_ids)
        return self

    def _partition(self, vectors: np.ndarray, advertiser_ids: np.ndarray) -> None:
        order = np.argsort(advertiser_ids, kind="stable")
        self.block_rows_ = order
        self.block_vectors_ = vectors[order]
        self.block_advertisers_, self.block_starts_, self.block_sizes_ = np.unique(
            np.asarray(advertiser_ids)[order], return_index=True, return_counts=True)
        self.vectors_ = vectors
        self.advertiser_ids_ = np.asarray(advertiser_ids)

    def save(self, directory: Path) -> list[Path]:
        """Write the faiss index, the item vectors and their advertisers to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index_, str(directory / "items.faiss"))
        np.savez(directory / "item_vectors.npz", vectors=self.vectors_,
                 advertiser_ids=self.advertiser_ids_, kind=np.array(self.kind_))
        return [directory / "items.faiss", directory / "item_vectors.npz"]

    @classmethod
    def load(cls, directory: Path, config: IndexConfig) -> ItemIndex:
        """An index written by `save` (the faiss index is read back, not rebuilt)."""
        directory = Path(directory)
        saved = np.load(directory / "item_vectors.npz")
        index = cls(config)
        index.kind_ = str(saved["kind"])
        index.index_ = faiss.read_index(str(directory / "items.faiss"))
        index._partition(saved["vectors"], saved["advertiser_ids"])
        return index

    def measured_recall(self, k: int = 100) -> float:
        """Recall@k of the index against exact search, on item vectors used as queries (1.0 if exact)."""
        if self.kind_ == "exact":
            return 1.0
        rng = np.random.default_rng(self.config.seed)
        rows = rng.choice(len(self.vectors_), min(self.config.recall_queries, len(self.vectors_)),
                          replace=False)
        return recall_against_exact(self.index_, self.vectors_, self.vectors_[rows], k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, catalog rows) per query; rows are -1 where fewer than k items exist."""
        return self.index_.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def search_advertisers(self, queries: np.ndarray, query_of_pair: np.ndarray,
                           advertiser_of_pair: np.ndarray, k: int) -> AdvertiserMatches:
        """Exact top-k items of each pair's advertiser for each pair's query.

        Pairs are grouped by advertiser so that each advertiser's sub-index (its contiguous block of
        vectors) is scored once, by one matrix product with all the queries that ask for it (in chunks of
        at most `SCORE_CHUNK` scores). The top-k of the pairs of same-sized blocks are then selected in one
        call: a row's selection depends on that row alone, so the result is the same as block by block.
        """
        advertiser_of_pair = np.asarray(advertiser_of_pair)
        block = np.clip(np.searchsorted(self.block_advertisers_, advertiser_of_pair), 0,
                        len(self.block_advertisers_) - 1)
        wanted = np.flatnonzero(self.block_advertisers_[block] == advertiser_of_pair)
        wanted = wanted[np.lexsort((block[wanted], self.block_sizes_[block[wanted]]))]  # by size, then block
        blocks, group_starts = np.unique(block[wanted], return_index=True)
        order = np.argsort(group_starts)
        parts: list[tuple[np.ndarray, ...]] = []
        window: list[tuple[int, np.ndarray]] = []  # (block, pairs) pieces of one block size, scored together
        window_rows = 0
        for block_index, group in zip(blocks[order], np.split(wanted, np.sort(group_starts)[1:])):
            size = self.block_sizes_[block_index]
            rows_per_chunk = max(1, SCORE_CHUNK // size)
            for chunk_start in range(0, len(group), rows_per_chunk):
                pairs = group[chunk_start:chunk_start + rows_per_chunk]
                if window and (self.block_sizes_[window[0][0]] != size or window_rows + len(pairs) > rows_per_chunk):
                    parts.append(self._top_items(window, queries, query_of_pair, k))
                    window, window_rows = [], 0
                window.append((block_index, pairs))
                window_rows += len(pairs)
        if window:
            parts.append(self._top_items(window, queries, query_of_pair, k))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return AdvertiserMatches(empty, empty, np.zeros(0, dtype=np.float32), empty)
        pair, item_row, score, position = (np.concatenate(column) for column in zip(*parts))
        order = np.argsort(pair, kind="stable")
        return AdvertiserMatches(pair=pair[order], item_row=item_row[order],
                                 score=score[order].astype(np.float32), position=position[order])

    def _top_items(self, window: list[tuple[int, np.ndarray]], queries: np.ndarray, query_of_pair: np.ndarray,
                   k: int) -> tuple[np.ndarray, ...]:
        """(pair, catalog row, score, position) of the top-k items of each pair of `window`'s pieces
        (a block and the pairs that ask for it, every block of one size), best first."""
        size = int(self.block_sizes_[window[0][0]])
        pairs = np.concatenate([piece for _, piece in window])
        scores = np.empty((len(pairs), size), dtype=np.result_type(queries, self.block_vectors_))
        row = 0
        for block_index, piece in window:
            start = self.block_starts_[block_index]
            scores[row:row + len(piece)] = queries[query_of_pair[piece]] @ self.block_vectors_[start:start + size].T
            row += len(piece)
        take = min(k, size)
        top = (np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < size
               else np.broadcast_to(np.arange(size), scores.shape))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        block_start = np.repeat([self.block_starts_[block_index] for block_index, _ in window],
                                [len(piece) for _, piece in window])
        item_rows = self.block_rows_[block_start[:, None] + np.take_along_axis(top, order, 1)].ravel()
        return (np.repeat(pairs, take), item_rows, np.take_along_axis(top_scores, order, 1).ravel(),
                np.tile(np.arange(take), len(pairs)))

    def search_with_selector(self, query: np.ndarray, allowed_rows: np.ndarray,
                             k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over `allowed_rows` only, via faiss IDSelectorBatch on the global index."""
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_rows, dtype=np.int64))
        if self.kind_ == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.config.hnsw_ef_search)
        elif self.kind_ == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.config.ivf_probe)
        else:
            params = faiss.SearchParameters(sel=selector)
        return self.index_.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k,
                                  params=params)

    def advertiser_rows(self, advertiser_ids: np.ndarray) -> np.ndarray:
        """Catalog rows of all items of the given advertisers."""
        block = np.clip(np.searchsorted(self.block_advertisers_, advertiser_ids), 0,
                        len(self.block_advertisers_) - 1)
        block = block[self.block_advertisers_[block] == advertiser_ids]
        blocks = [self.block_rows_[start:start + size]
                  for start, size in zip(self.block_starts_[block], self.block_sizes_[block])]
        return np.concatenate(blocks) if blocks else np.zeros(0, np.int64)

"""Retrieval speed and recall: two-tower training throughput, faiss build time, query latency.

Prints (1) two-tower training examples/s on the tiny world (CPU, the threads torch is given),
(2) for synthetic catalogs of 100k and 1M items: index build time, single-query latency p50/p99
and Recall@100 against exact search, for unfiltered queries and for queries filtered to 20
advertisers (per-advertiser sub-indexes vs faiss IDSelectorBatch on the global index).
The large catalogs are SYNTHETIC: random unit vectors clustered by advertiser (lognormal
advertiser sizes, mean 200 items), queries are noisy mixtures of advertiser centers, and the
20 filter advertisers are drawn in proportion to their size. Goal (issue 5): filtered p99 under
10 ms at 1M items with recall >= 0.95 of exact.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_retrieval.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from retrieval.config import IndexConfig, RetrievalConfig, TrainingConfig
from retrieval.index import ItemIndex

DIM = 64
K = 100
FILTER_ADVERTISERS = 20
MEAN_ITEMS_PER_ADVERTISER = 200
console = Console(width=170)


def training_throughput() -> list[tuple]:
    """Examples/s of a two-tower fit on the tiny world, per objective (engagement-derived positives)."""
    from retrieval.evaluate import evaluation_anchor, window_start
    from retrieval.train import TwoTowerRetriever
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    world = generate_world(preset("tiny"), progress=False)
    rows = []
    for objective in ("impressions", "clicks", "conversions"):
        config = RetrievalConfig(training=TrainingConfig(objective=objective, epochs=2, batch_size=256,
                                                         uniform_negatives=256))
        start = window_start(evaluation_anchor(world.events, config.evaluation, world.labels))
        train_users = world.splits.filter(pl.col("split") == "train")["user_id"]
        summary = TwoTowerRetriever(config).fit(world.events, world.users, world.items, train_users,
                                                start).summary_
        rows.append((objective, summary.examples, summary.epochs, f"{summary.seconds:.1f}",
                     f"{summary.examples_per_second:,.0f}"))
    return rows


def synthetic_catalog(items: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit item vectors clustered by advertiser; returns (vectors, advertiser_ids, advertiser centers)."""
    rng = np.random.default_rng(seed)
    advertisers = max(items // MEAN_ITEMS_PER_ADVERTISER, FILTER_ADVERTISERS)
    sizes = rng.lognormal(0.0, 1.0, advertisers)
    advertiser_ids = rng.choice(advertisers, items, p=sizes / sizes.sum()).astype(np.int64)
    categories = rng.normal(size=(50, DIM)).astype(np.float32)
    centers = (categories[rng.integers(0, 50, advertisers)]
               + 0.8 * rng.normal(size=(advertisers, DIM)).astype(np.float32))
    vectors = np.empty((items, DIM), dtype=np.float32)
    for start in range(0, items, 1 << 18):
        chunk = slice(start, start + (1 << 18))
        vectors[chunk] = centers[advertiser_ids[chunk]] + 0.8 * rng.normal(size=(len(advertiser_ids[chunk]), DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, advertiser_ids, centers


def synthetic_queries(centers: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixture = centers[rng.integers(0, len(centers), (count, 3))].sum(axis=1)
    queries = mixture + 1.0 * rng.normal(size=mixture.shape)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def percentiles(seconds: tuple[list[float], list[float]]) -> tuple[str, str, str]:
    """Wall-clock p50 and p99, and the p99 of the CPU time the query itself used (ms)."""
    wall, cpu = seconds
    p50, p99 = np.percentile(np.asarray(wall) * 1000, [50, 99])
    return f"{p50:.3f}", f"{p99:.3f}", f"{np.percentile(np.asarray(cpu) * 1000, 99):.3f}"


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth))
    return hits / sum(len(t) for t in truth)


def timed(function, queries) -> tuple[list[np.ndarray], tuple[list[float], list[float]]]:
    """Run `function` per query; wall and thread-CPU seconds of each call (the CPU is shared, so
    wall-clock tails include time other processes held the cores)."""
    results, wall, cpu = [], [], []
    for query in queries:
        started, started_cpu = time.perf_counter(), time.thread_time()
        results.append(function(query))
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    return results, (wall, cpu)


def bench_size(items: int, queries_count: int, kinds: list[str], seed: int) -> list[tuple]:
    vectors, advertiser_ids, centers = synthetic_catalog(items, seed)
    queries = synthetic_queries(centers, queries_count, seed + 1)
    rows = []
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    _, truth = exact.search(queries, K)
    truth = list(truth)
    # Filter sets: 20 advertisers per query, drawn in proportion to their item counts.
    rng = np.random.default_rng(seed + 2)
    counts = np.bincount(advertiser_ids)
    filters = [rng.choice(len(counts), FILTER_ADVERTISERS, replace=False, p=counts / counts.sum())
               for _ in range(queries_count)]
    filtered_truth = []
    for query, advertisers in zip(queries, filters):
        allowed = np.flatnonzero(np.isin(advertiser_ids, advertisers))
        filtered_truth.append(allowed[np.argsort(-(vectors[allowed] @ query))[:K]])
    filtered_items = np.mean([np.isin(advertiser_ids, a).sum() for a in filters])

    configs = {
        "exact": IndexConfig(exact_max_items=items),
        "hnsw": IndexConfig(exact_max_items=1, approximate_kind="hnsw", hnsw_m=16, hnsw_ef_construction=40,
                            hnsw_ef_search=512),
        "ivf": IndexConfig(exact_max_items=1, approximate_kind="ivf", ivf_probe=32),
    }
    for kind in kinds:
        config = configs[kind]
        started = time.perf_counter()
        index = ItemIndex(config).fit(vectors, advertiser_ids)
        build = time.perf_counter() - started
        found, seconds = timed(lambda q: index.search(q[None], K)[1][0], queries)
        rows.append((f"{items:,}", "unfiltered", f"{kind} (faiss)", f"{build:.1f}", *percentiles(seconds),
                     f"{recall(found, truth):.3f}"))
        found, seconds = timed(lambda q, a=iter(filters): index.search_with_selector(
            q, index.advertiser_rows(next(a)), K)[1][0], queries)
        rows.append((f"{items:,}", f"{FILTER_ADVERTISERS} advertisers", f"{kind} + IDSelectorBatch", "-",
                     *percentiles(seconds), f"{recall(found, filtered_truth):.3f}"))
        if kind == "exact":
            zeros = np.zeros(FILTER_ADVERTISERS, dtype=np.int64)

            def partitioned(q, a=iter(filters)):
                matches = index.search_advertisers(q[None], zeros, next(a), K)
                return matches.item_row[np.argsort(-matches.score)[:K]]

            found, seconds = timed(partitioned, queries)
            rows.append((f"{items:,}", f"{FILTER_ADVERTISERS} advertisers", "per-advertiser sub-indexes",
                         "(same)", *percentiles(seconds), f"{recall(found, filtered_truth):.3f}"))
            # The LLM generator's batched path: all requests' (request, advertiser) pairs at once.
            started = time.perf_counter()
            index.search_advertisers(queries, np.repeat(np.arange(queries_count), FILTER_ADVERTISERS),
                                     np.concatenate(filters), K)
            per_query = (time.perf_counter() - started) / queries_count * 1000
            rows.append((f"{items:,}", f"{FILTER_ADVERTISERS} advertisers",
                         f"per-advertiser, batch of {queries_count}", "(same)", f"{per_query:.3f} mean", "-", "-",
                         "1.000"))
        index = None  # freed before the next kind's build (the closures above read it)
    console.print(f"{items:,} items, {counts.size:,} advertisers; a {FILTER_ADVERTISERS}-advertiser filter "
                  f"admits {filtered_items:,.0f} items on average")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--hnsw-max-items", type=int, default=200_000,
                        help="build HNSW only up to this size (single-threaded builds take minutes at 1M)")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args()
    console.print(f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}")

    if not arguments.skip_training:
        table = Table(title="two-tower training on the tiny world (CPU; engagement-derived positives)")
        for column in ("objective", "examples", "epochs", "seconds", "examples/s"):
            table.add_column(column, justify="right")
        for row in training_throughput():
            table.add_row(*map(str, row))
        console.print(table)

    table = Table(title=f"faiss search, k={K}, single-query latency (SYNTHETIC clustered embeddings, d={DIM})")
    for column in ("items", "queries", "method", "build s", "p50 ms", "p99 ms", "p99 CPU ms",
                   f"recall@{K} vs exact"):
        table.add_column(column, justify="right")
    for index, items in enumerate(arguments.sizes):
        kinds = ["exact", "ivf"] + (["hnsw"] if items <= arguments.hnsw_max_items else [])
        for row in bench_size(items, arguments.queries, kinds, seed=index):
            table.add_row(*map(str, row))
    console.print(table)


if __name__ == "__main__":
    main()

"""Candidate blending: per-source L0 quotas, item de-duplication, a per-advertiser cap (paper 4.5.1).

Each source keeps its top `quota` candidates per request; sources are interleaved in proportion
to their quotas (a candidate's priority is its rank within its source over the source's quota),
so a larger LLM-generator quota takes a larger share of the blended list and, under a total
budget, pushes other sources' candidates out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.arrays import rank_within_runs
from synthetic_data.config_io import require


@dataclass(frozen=True)
class BlendConfig:
    """Quotas per candidate source (0 switches a source off) and the caps after merging."""

    quotas: dict[str, int]
    max_per_advertiser: int = 2  # candidates one advertiser may keep per request after dedup
    max_candidates: int = 0  # total blended candidates per request sent to ranking; 0 = no cap

    def __post_init__(self):
        require(len(self.quotas) > 0, "blend.quotas", "name at least one source, e.g. {main = 100}")
        for source, quota in self.quotas.items():
            require(quota >= 0, f"blend.quotas.{source}", f"must be >= 0 (0 turns the source off), got {quota}")
        require(self.max_per_advertiser >= 1, "blend.max_per_advertiser", "must be >= 1")
        require(self.max_candidates >= 0, "blend.max_candidates", "must be >= 0 (0 = no total cap)")


def blend(candidates: pl.DataFrame, config: BlendConfig) -> pl.DataFrame:
    """Merge every source's candidates of each request into one list (CANDIDATES plus `blend_position`).

    A duplicated item is credited to the copy with the best priority (ties: the source listed
    first in `config.quotas`); the survivors come back ordered by request and priority.
    """
    schema.validate(candidates, schema.CANDIDATES, "candidates")
    sources = list(config.quotas)
    unknown = set(candidates["source"].unique().to_list()) - set(sources)
    if unknown:
        raise ValueError(
            f"candidates come from source(s) {sorted(unknown)} that have no quota; "
            f"add them to blend.quotas (e.g. blend.quotas.{sorted(unknown)[0]}=50) or drop them"
        )
    source_index = candidates["source"].replace_strict({s: i for i, s in enumerate(sources)},
                                                       return_dtype=pl.Int64).to_numpy()
    _, request_index = np.unique(candidates["request_id"].to_numpy(), return_inverse=True)
    rows, position = blend_rows(request_index, source_index, candidates["score"].to_numpy(),
                                candidates["item_id"].to_numpy(), candidates["advertiser_id"].to_numpy(), config)
    return candidates[rows].select(*schema.CANDIDATES).with_columns(pl.Series("blend_position", position, pl.Int32))


def blend_rows(request_index: np.ndarray, source_index: np.ndarray, score: np.ndarray, item_id: np.ndarray,
               advertiser_id: np.ndarray, config: BlendConfig) -> tuple[np.ndarray, np.ndarray]:
    """`blend` on arrays, one entry per candidate: the blended rows (indices, in blended order) and their
    `blend_position`. `request_index` must order requests as their ids do (e.g. the rank of the request
    id), `source_index` is the source's place in `config.quotas`. Cost: a few sorts of the rows."""
    quotas = np.array(list(config.quotas.values()), dtype=np.int64)
    rank = _rank_within_source(request_index, source_index, score)
    kept = np.flatnonzero(rank < quotas[source_index])
    slots = _slot_table(quotas)
    ordered = kept[np.argsort(request_index[kept] * slots.size + slots.flat[
        source_index[kept] * slots.shape[1] + rank[kept]], kind="stable")]
    request = request_index[ordered]
    _, first = np.unique(request * (int(item_id.max(initial=0)) + 1) + item_id[ordered], return_index=True)
    ordered, request = ordered[np.sort(first)], request[np.sort(first)]  # an item's best copy only
    advertiser_key = request * (int(advertiser_id.max(initial=0)) + 1) + advertiser_id[ordered]
    by_advertiser = np.argsort(advertiser_key, kind="stable")
    advertiser_rank = np.empty(ordered.size, dtype=np.int64)
    advertiser_rank[by_advertiser] = rank_within_runs(advertiser_key[by_advertiser])
    within_cap = advertiser_rank < config.max_per_advertiser
    ordered, request = ordered[within_cap], request[within_cap]
    position = rank_within_runs(request)
    if config.max_candidates:
        ordered, position = ordered[position < config.max_candidates], position[position < config.max_candidates]
    return ordered, position


def _rank_within_source(request_index: np.ndarray, source_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each row's 0-based rank by descending score within its (request, source); ties keep the input
    order (an ordinal rank). Generators hand rows sorted by request and descending score: no sort then."""
    order = np.argsort(source_index, kind="stable")
    request, source, ordered_score = request_index[order], source_index[order], score[order]
    is_same_run = (request[1:] == request[:-1]) & (source[1:] == source[:-1])
    is_sorted = np.all((source[1:] > source[:-1]) | (request[1:] > request[:-1])
                       | (is_same_run & (ordered_score[1:] <= ordered_score[:-1])))
    if not is_sorted:
        order = np.lexsort((-score, request_index, source_index))
        request, source = request_index[order], source_index[order]
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = rank_within_runs(request, source)
    return rank


def _slot_table(quotas: np.ndarray) -> np.ndarray:
    """[sources, max quota]: the place of (source, rank) in the blended order of a request, which runs by
    priority (rank + 0.5) / quota, then source order, then rank; entries at rank >= quota are unused."""
    source, rank = np.divmod(np.arange(quotas.size * quotas.max(initial=1)), quotas.max(initial=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        priority = np.where(rank < quotas[source], (rank + 0.5) / quotas[source], np.inf)
    table = np.empty(source.size, dtype=np.int64)
    table[np.lexsort((rank, source, priority))] = np.arange(source.size)
    return table.reshape(quotas.size, -1)


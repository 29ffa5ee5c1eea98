"""Candidate blending: per-source L0 quotas, item de-duplication, a per-advertiser cap (paper 4.5.1).

Each source keeps its top `quota` candidates per request; sources are interleaved in proportion
to their quotas (a candidate's priority is its rank within its source over the source's quota),
so a larger LLM-generator quota takes a larger share of the blended list and, under a total
budget, pushes other sources' candidates out.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from synthetic_data import schema
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
    quota = pl.col("source").replace_strict(config.quotas, return_dtype=pl.Int64)
    source_order = pl.col("source").replace_strict({s: i for i, s in enumerate(sources)}, return_dtype=pl.Int64)
    within_source = (pl.col("score").rank("ordinal", descending=True).over(["request_id", "source"]) - 1)
    ranked = (
        candidates.with_columns(within_source.cast(pl.Int64).alias("_rank"), quota.alias("_quota"),
                                source_order.alias("_source_order"))
        .filter(pl.col("_rank") < pl.col("_quota"))
        .with_columns(((pl.col("_rank") + 0.5) / pl.col("_quota")).alias("_priority"))
        .sort(["request_id", "_priority", "_source_order", "_rank"])
        .unique(["request_id", "item_id"], keep="first", maintain_order=True)
    )
    per_advertiser = pl.int_range(pl.len()).over(["request_id", "advertiser_id"])
    blended = ranked.filter(per_advertiser < config.max_per_advertiser)
    position = pl.int_range(pl.len()).over("request_id").cast(pl.Int32)
    blended = blended.with_columns(position.alias("blend_position"))
    if config.max_candidates:
        blended = blended.filter(pl.col("blend_position") < config.max_candidates)
    return blended.select([*schema.CANDIDATES, "blend_position"])

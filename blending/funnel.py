"""Funnel ledger: per candidate source, how many candidates survive each stage (paper 4.5.1).

Stages run retrieved -> blended -> ranked -> won_auction -> impressed -> clicked, and an
impression converts (click- or view-through) at most once, so `converted` nests in `impressed`.
The ledger keeps counts per (stage, source, advertiser), so survival and advertiser diversity
of every stage come from the same numbers and add up by construction. `largest_losses` names, per
source, the delivery step (retrieved -> impressed) that keeps the smallest share of its candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from blending.diversity import advertiser_diversity

STAGES = ("retrieved", "blended", "ranked", "won_auction", "impressed", "clicked", "converted")
PARENT_STAGE = {"blended": "retrieved", "ranked": "blended", "won_auction": "ranked",
                "impressed": "won_auction", "clicked": "impressed", "converted": "impressed"}
ALL_SOURCES = "all"
DELIVERY_STAGES = ("blended", "ranked", "won_auction", "impressed")  # steps before the user; clicks are responses
LOSS_CAUSES = {  # what removes a candidate between the parent stage and this one (simulator/engine.py)
    "blended": "blending: the L0 quota, duplicates of another source's items, the per-advertiser cap, max_candidates",
    "ranked": "advertisers inactive, out of budget or throttled by pacing, and the rank depth (advertisers per "
              "request sent to the auction, by predicted conversion)",
    "won_auction": "the auction: eCPM below the reserve, the advertiser's own better candidate, or outbid for the "
                   "slots",
    "impressed": "a won slot not scrolled into view (view_decay per position)",
}


class FunnelLedger:
    """Accumulates candidate counts per (stage, source, advertiser) batch by batch."""

    def __init__(self, sources: Sequence[str], advertiser_ids: np.ndarray):
        if ALL_SOURCES in sources:
            raise ValueError(f"'{ALL_SOURCES}' is reserved for the total row; rename that source")
        self.sources = tuple(sources)
        self.advertiser_ids = np.unique(np.asarray(advertiser_ids, dtype=np.int64))
        self.counts_ = np.zeros((len(STAGES), len(self.sources), self.advertiser_ids.size), np.int64)

    def record(self, stage: str, rows: pl.DataFrame, weights: np.ndarray | None = None) -> None:
        """Count `rows` (with `source` and `advertiser_id` columns) as having reached `stage`;
        `weights` counts a row several times (a candidate shared by several coalesced requests)."""
        if stage not in STAGES:
            raise ValueError(f"unknown funnel stage {stage!r}; stages are {STAGES}")
        if rows.height == 0:
            return
        source_index = rows["source"].cast(pl.String).replace_strict(
            {s: i for i, s in enumerate(self.sources)}, default=-1, return_dtype=pl.Int64).to_numpy()
        if (source_index < 0).any():
            missing = sorted(set(rows["source"].cast(pl.String).to_list()) - set(self.sources))
            raise ValueError(f"funnel ledger has no source(s) {missing}; create it with every source")
        advertisers = rows["advertiser_id"].to_numpy().astype(np.int64)
        advertiser_index = np.searchsorted(self.advertiser_ids, advertisers)
        is_known = (advertiser_index < self.advertiser_ids.size) & (
            self.advertiser_ids[np.minimum(advertiser_index, self.advertiser_ids.size - 1)] == advertisers)
        if not is_known.all():
            raise ValueError(f"funnel ledger does not know advertiser(s) {np.unique(advertisers[~is_known])[:5]}")
        self.add(stage, source_index, advertiser_index, weights)

    def add(self, stage: str, source_index: np.ndarray, advertiser_index: np.ndarray,
            weights: np.ndarray | None = None) -> None:
        """`record` for rows given as indices into `sources` and the sorted `advertiser_ids` (unchecked:
        the simulator's hot path, whose indices come from the same tables)."""
        flat = source_index * self.advertiser_ids.size + advertiser_index
        counted = np.bincount(flat, weights=weights, minlength=len(self.sources) * self.advertiser_ids.size)
        self.counts_[STAGES.index(stage)] += np.rint(counted).astype(np.int64).reshape(len(self.sources), -1)

    def merge(self, other: FunnelLedger) -> FunnelLedger:
        """A new ledger holding both ledgers' counts (same sources and advertisers)."""
        if self.sources != other.sources or not np.array_equal(self.advertiser_ids, other.advertiser_ids):
            raise ValueError("can only merge ledgers with the same sources and advertisers")
        merged = FunnelLedger(self.sources, self.advertiser_ids)
        merged.counts_ = self.counts_ + other.counts_
        return merged

    def advertiser_counts(self, stage: str, source: str = ALL_SOURCES) -> np.ndarray:
        """Rows per advertiser that reached `stage` (from one source, or all)."""
        by_source = self.counts_[STAGES.index(stage)]
        return by_source.sum(axis=0) if source == ALL_SOURCES else by_source[self.sources.index(source)]

    def table(self) -> pl.DataFrame:
        """One row per (source incl. 'all', stage): count, survival from the parent stage and from
        retrieval, and the stage's advertiser diversity."""
        rows = []
        for source in (*self.sources, ALL_SOURCES):
            totals = {stage: int(self.advertiser_counts(stage, source).sum()) for stage in STAGES}
            for stage in STAGES:
                diversity = advertiser_diversity(self.advertiser_counts(stage, source))
                parent = PARENT_STAGE.get(stage)
                rows.append({
                    "source": source, "stage": stage, "count": totals[stage],
                    "survival_from_parent": _ratio(totals[stage], totals[parent]) if parent else 1.0,
                    "survival_from_retrieved": _ratio(totals[stage], totals["retrieved"]),
                    "unique_advertisers": diversity.unique_advertisers,
                    "entropy": diversity.entropy, "gini": diversity.gini,
                })
        return pl.DataFrame(rows)


def largest_losses(table: pl.DataFrame, keys: Sequence[str] = ()) -> pl.DataFrame:
    """Per source (and `keys`, e.g. `arm`) of a `FunnelLedger.table()`: the delivery step that keeps the
    smallest share of the candidates that reached its parent stage (ties: the earlier step), that share
    (`survival`) and the other sources' share at the same step (`other_survival`, null without them).

    One row per (keys, source) with columns keys, source, retrieved, impressed, stage, parent_stage,
    survival, other_survival; stage is null for a source that retrieved nothing. Only the ledger's
    counts are read, so the cause is a step (LOSS_CAUSES lists what removes candidates there), not a
    per-candidate reason.
    """
    keys = list(keys)
    counts = table.filter(pl.col("source") != ALL_SOURCES).join(
        table.filter(pl.col("source") == ALL_SOURCES).select(*keys, "stage", pl.col("count").alias("all_count")),
        on=[*keys, "stage"])
    parents = counts.select(*keys, "source", pl.col("stage").alias("parent_stage"),
                            pl.col("count").alias("parent_count"), pl.col("all_count").alias("all_parent_count"))
    steps = pl.DataFrame({"stage": DELIVERY_STAGES, "parent_stage": [PARENT_STAGE[s] for s in DELIVERY_STAGES],
                          "step": range(len(DELIVERY_STAGES))})
    other_parent = pl.col("all_parent_count") - pl.col("parent_count")
    losses = (counts.join(steps, on="stage").join(parents, on=[*keys, "source", "parent_stage"])
              .filter(pl.col("parent_count") > 0)
              .with_columns((pl.col("count") / pl.col("parent_count")).alias("survival"),
                            pl.when(other_parent > 0).then((pl.col("all_count") - pl.col("count")) / other_parent)
                            .alias("other_survival"))
              .sort([*keys, "source", "survival", "step"])
              .group_by([*keys, "source"], maintain_order=True).first()
              .select(*keys, "source", "stage", "parent_stage", "survival", "other_survival"))
    totals = counts.filter(pl.col("stage").is_in(["retrieved", "impressed"])).pivot(
        on="stage", index=[*keys, "source"], values="count")
    return totals.select(*keys, "source", "retrieved", "impressed").join(losses, on=[*keys, "source"], how="left",
                                                                         maintain_order="left")


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None

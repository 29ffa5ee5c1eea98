import numpy as np
import polars as pl
import pytest

from blending.funnel import PARENT_STAGE, STAGES, FunnelLedger


def _rows(sources, advertisers):
    return pl.DataFrame({"source": sources, "advertiser_id": np.asarray(advertisers, np.int32)})


def test_ledger_adds_up_at_every_stage():
    rng = np.random.default_rng(0)
    ledger = FunnelLedger(["main", "llm"], np.arange(20))
    for _ in range(5):  # nested random subsets, batch by batch
        n = 200
        sources = rng.choice(["main", "llm"], n)
        advertisers = rng.integers(0, 20, n)
        keep = np.ones(n, bool)
        ledger.record("retrieved", _rows(sources, advertisers))
        for stage in STAGES[1:]:
            parent_keep = keep if stage != "converted" else impressed
            keep = parent_keep & (rng.random(n) < 0.7)
            if stage == "impressed":
                impressed = keep.copy()
            ledger.record(stage, _rows(sources[keep], advertisers[keep]))
    table = ledger.table()
    for stage in STAGES:
        per_source = table.filter((pl.col("stage") == stage) & (pl.col("source") != "all"))["count"].sum()
        total = table.filter((pl.col("stage") == stage) & (pl.col("source") == "all"))["count"].item()
        assert per_source == total
    for source in ("main", "llm", "all"):
        counts = dict(table.filter(pl.col("source") == source).select("stage", "count").rows())
        for stage, parent in PARENT_STAGE.items():
            assert counts[stage] <= counts[parent]
    assert ledger.advertiser_counts("retrieved").sum() == 1000


def test_survival_and_diversity_columns():
    ledger = FunnelLedger(["main"], [1, 2, 3, 4])
    ledger.record("retrieved", _rows(["main"] * 4, [1, 2, 3, 4]))
    ledger.record("blended", _rows(["main"] * 2, [1, 1]))
    row = ledger.table().filter((pl.col("source") == "main") & (pl.col("stage") == "blended")).row(0, named=True)
    assert row["count"] == 2 and row["survival_from_parent"] == pytest.approx(0.5)
    assert row["unique_advertisers"] == 1 and row["gini"] == pytest.approx(0.75)


def test_unknown_source_or_advertiser_is_an_error():
    ledger = FunnelLedger(["main"], [1, 2])
    with pytest.raises(ValueError, match="no source"):
        ledger.record("retrieved", _rows(["llm"], [1]))
    with pytest.raises(ValueError, match="advertiser"):
        ledger.record("retrieved", _rows(["main"], [9]))
    with pytest.raises(ValueError, match="stage"):
        ledger.record("shown", _rows(["main"], [1]))

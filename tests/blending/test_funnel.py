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


def demo_like_ledger(llm_wins: int = 0) -> FunnelLedger:
    """The demo of 29dfd80: the LLM source went 10,900 -> 5,011 -> 351 -> 0 wins; `main` loses most at blending;
    `oracle` keeps half at blending and half at ranking (a tie); `silent` retrieves nothing."""
    counts = {"main": (20000, 8000, 6000, 3000, 2700, 100, 20), "llm": (10900, 5011, 351, llm_wins, llm_wins, 0, 0),
              "oracle": (100, 50, 25, 25, 25, 1, 0), "silent": (0,) * 7}
    ledger = FunnelLedger(list(counts), np.arange(3))
    for stage_index, stage in enumerate(STAGES):
        for source, funnel in counts.items():  # all of a source's candidates on advertiser 1
            ledger.record(stage, _rows([source], [1]), np.array([funnel[stage_index]], np.float64))
    return ledger


def test_largest_loss_is_the_delivery_step_that_keeps_the_smallest_share():
    from blending.funnel import largest_losses

    losses = {row["source"]: row for row in largest_losses(demo_like_ledger().table()).iter_rows(named=True)}
    llm = losses["llm"]
    assert (llm["retrieved"], llm["impressed"]) == (10900, 0)
    assert (llm["parent_stage"], llm["stage"]) == ("ranked", "won_auction")
    # the other sources' share at that step: (3,000 + 25) of (6,000 + 25) ranked candidates won
    assert llm["survival"] == 0 and llm["other_survival"] == pytest.approx(3025 / 6025)
    assert (losses["main"]["stage"], losses["main"]["survival"]) == ("blended", pytest.approx(0.4))
    assert losses["main"]["other_survival"] == pytest.approx((5011 + 50) / (10900 + 100))
    assert losses["oracle"]["stage"] == "blended"  # 50% at blending and at ranking: the earlier step
    assert losses["silent"]["retrieved"] == 0 and losses["silent"]["stage"] is None
    assert "all" not in losses


def test_largest_losses_are_per_arm():
    from blending.funnel import largest_losses

    tables = [demo_like_ledger(wins).table().with_columns(pl.lit(arm).alias("arm"))
              for arm, wins in (("control", 0), ("treatment", 340))]
    losses = largest_losses(pl.concat(tables), ["arm"])
    llm = losses.filter(pl.col("source") == "llm").sort("arm")
    assert llm["stage"].to_list() == ["won_auction", "ranked"]  # 340 of 351 win: ranking is now the worst step
    assert llm["survival"].to_list() == pytest.approx([0.0, 351 / 5011])
    assert losses.height == 8

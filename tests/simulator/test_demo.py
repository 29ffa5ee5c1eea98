"""`adsim demo` end to end on the tiny world with the nano LLM: every stage runs, the report gathers
them, a re-run redoes nothing."""

from __future__ import annotations

import json

import pytest

from simulator.demo import run_demo

PRODUCED = ("Advertiser prediction on V0 and V1", "Feature ablation", "Retrieval: two-tower objectives",
            "Offline A/B on the simulated market", "L0 quota sweep")


@pytest.mark.slow
def test_demo_runs_every_stage_and_a_rerun_skips_them(tmp_path):
    run = tmp_path / "demo"
    report = run_demo(run, world_preset="tiny", llm_preset="nano", quotas="0,5", quiet=True)
    text = report.read_text()
    for title in PRODUCED:
        section = text.split(f"## {title}")[1].split("\n## ")[0]
        assert "_not produced" not in section, title
    # issue #15: the multi-day A/B's SRM, A/A and MDE lines, and the dose-response plots
    assert "Simulated 2 days, design `paired`" in text and "Sample-ratio check (SRM): users per arm" in text
    assert "A/A check (200 re-randomisations" in text and "minimum detectable effect (MDE) on RoAS" in text
    assert "![sensitivity_ab](plots/sensitivity_ab.png)" in text and "![sensitivity_lift](plots/sensitivity_lift.png)" in text
    assert (run / "plots" / "sensitivity_ab.png").exists() and (run / "plots" / "sensitivity_lift.png").exists()
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"llm_behaviour", "llm_choice", "llm_predict_chosen_serving", "llm_predict_chosen_heldout", "ranking",
            "ab", "sweep", "sensitivity"} <= set(stages)
    finished = {name: record["finished_at"] for name, record in stages.items()}
    run_demo(run, world_preset="tiny", llm_preset="nano", quotas="0,5", quiet=True)
    again = json.loads((run / "manifest.json").read_text())["stages"]
    assert {name: record["finished_at"] for name, record in again.items()} == finished

"""The `ab` and `sweep` stages of a run folder (`runs/<name>/ab/`, `runs/<name>/sweep/`, `plots/`).

Each writes its tables as Parquet and a markdown report section, records itself in the run's
manifest, and skips when it already finished with the same config (DESIGN: a run is a folder).
The stage summary (the `summary` of `<stage>/stage.json`; the manifest keeps each stage's config and
outputs) carries the sample-ratio check, the primary metric's result per treatment arm (with its
achieved MDE), each arm's treatment exposure, planned MDE and `is_treatment_measured` flag with its
reason, and per arm and source the funnel step of its largest loss; the sweep's also names the first
quota that over-concentrates advertisers (`concentration_quota`, null for none).
"""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl

from blending.funnel import largest_losses
from simulator.config import ExperimentConfig
from simulator.engine import Stack
from simulator.experiment import (ExperimentResult, aa_check, aa_false_positive_rates, concentration_quota,
                                  pre_period_covariates, run_ab, run_sweep)
from simulator.report import (EXPOSURE_COLUMNS, aa_markdown, ab_markdown, funnel_markdown, plot_funnel, plot_sweep,
                              served_markdown, sweep_markdown)
from simulator.stats import SampleRatioCheck
from synthetic_data.config_io import to_dict
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import World


def ab_stage(run: RunFolder, experiment: ExperimentConfig, world: World, stack: Stack, stack_label: str,
             progress: bool = True, force: bool = False, engine: str = "local") -> dict:
    """Run (or reuse) the A/B experiment; writes ab/{comparisons,arms,funnels,aa}.parquet, ab/report.md (with
    the funnel per source) and plots/ab_funnel.png. engine "ray" simulates the arms and the A/A's replay as
    Ray tasks; the record does not name it (the same numbers either way)."""
    config = {"experiment": to_dict(experiment), "stack": stack_label}
    if not force and run.is_complete("ab", config):
        return run.stage_record("ab")["summary"]
    started = time.perf_counter()
    result = run_ab(experiment, world, stack, progress=progress, engine=engine, aa_replay=True)
    served = 0 if stack.served_users is None else int(np.size(stack.served_users))
    control = result.results[experiment.arms[0].name]
    aa = aa_check(experiment, world, stack, control, pre_period_covariates(world, experiment.pre_period_days),
                  experiment.aa_splits, progress=progress, replay=result.replay)
    aa_rates = aa_false_positive_rates(aa, experiment.alpha)
    folder = run.stage_dir("ab")
    result.comparisons.write_parquet(folder / "comparisons.parquet")
    result.arms.write_parquet(folder / "arms.parquet")
    result.funnels.write_parquet(folder / "funnels.parquet")
    result.served.write_parquet(folder / "served.parquet")
    aa.write_parquet(folder / "aa.parquet")
    days = experiment.simulation.days
    note = (f"Simulated {days} day{'s' if days != 1 else ''}, design `{experiment.design}`, "
            f"{experiment.method} method{' with CUPED' if experiment.cuped else ''}; stack: {stack_label}. "
            + aa_markdown(aa_rates, experiment))
    funnel_plot = plot_funnel(result.funnels, run.stage_dir("plots") / "ab_funnel.png")
    (folder / "report.md").write_text(ab_markdown(result.comparisons, result.arms, result.srm,
                                                  "Offline A/B (Table 6 analogue)", note, experiment.alpha,
                                                  stack.llm_feature_coverage)
                                      + "\n" + served_markdown(result.served, served, world.users.height,
                                                               experiment.alpha)
                                      + "\n" + funnel_markdown(result.funnels, funnel_plot, folder))
    summary = {"seconds": round(time.perf_counter() - started, 1), "aa": aa_rates,
               "served_users": served, "served_roas_change": (
                   _by_arm(result.served.filter(pl.col("is_primary")), ("relative_change", "ci_low", "ci_high", "mde",
                                                                        "p_value", "is_significant"))
                   if result.served.height else {}),
               "requests": sum(r.summary["requests"] for r in result.results.values()),
               **_result_summary(result, stack), "plots": [str(funnel_plot)]}
    outputs = ["comparisons.parquet", "served.parquet", "arms.parquet", "funnels.parquet", "aa.parquet", "report.md"]
    run.complete("ab", config, outputs, summary)
    return summary


def sweep_stage(run: RunFolder, experiment: ExperimentConfig, world: World, stack: Stack, stack_label: str,
                source: str, quotas: list[int], progress: bool = True, force: bool = False,
                engine: str = "local") -> dict:
    """Run (or reuse) the L0 quota sweep; writes sweep/{sweep,funnels}.parquet, sweep/report.md (RoAS, the
    over-concentration section and the funnel per source) and plots/sweep_*.png. engine "ray" simulates the
    quotas as Ray tasks; the record does not name it (the same numbers either way)."""
    config = {"experiment": to_dict(experiment), "stack": stack_label, "source": source, "quotas": list(quotas)}
    if not force and run.is_complete("sweep", config):
        return run.stage_record("sweep")["summary"]
    started = time.perf_counter()
    table, result = run_sweep(experiment, world, stack, source, quotas, progress=progress, engine=engine)
    folder = run.stage_dir("sweep")
    table.write_parquet(folder / "sweep.parquet")
    result.funnels.write_parquet(folder / "funnels.parquet")
    plots = plot_sweep(table, source, run.stage_dir("plots"))
    funnel_plot = plot_funnel(result.funnels, run.stage_dir("plots") / "sweep_funnel.png")
    (folder / "report.md").write_text(sweep_markdown(table, source, plots, result.srm, relative_to=folder,
                                                     alpha=experiment.alpha, coverage=stack.llm_feature_coverage)
                                      + "\n" + funnel_markdown(result.funnels, funnel_plot, folder))
    summary = {"seconds": round(time.perf_counter() - started, 1), **_result_summary(result, stack),
               "concentration_quota": concentration_quota(table), "plots": [str(p) for p in [*plots, funnel_plot]]}
    run.complete("sweep", config, ["sweep.parquet", "funnels.parquet", "report.md"], summary)
    return summary


def _result_summary(result: ExperimentResult, stack: Stack) -> dict:
    """What the ab and sweep summaries share: the SRM check, the ranker's LLM-feature coverage, the primary
    metric per treatment arm (`roas_change`), each arm's exposure, planned MDE on RoAS and flag with its reason
    (null flag for the control and for arms that raise no quota), and the funnel losses."""
    roas_columns = ("relative_change", "mde", "p_value", "p_value_adjusted", "nonzero_users", "is_underpowered",
                    "is_treatment_measured", "is_significant")
    exposure_columns = (*EXPOSURE_COLUMNS, "planned_roas_mde", "is_treatment_measured", "treatment_check")
    return {"srm": _srm_summary(result.srm), "llm_feature_coverage": stack.llm_feature_coverage,
            "roas_change": _by_arm(result.comparisons.filter(pl.col("is_primary")), roas_columns),
            "exposure": _by_arm(result.arms, exposure_columns), "funnel_losses": _loss_summary(result.funnels)}


def _by_arm(table: pl.DataFrame, columns: tuple[str, ...]) -> dict:
    """{arm: {column: value}} of a table with one row per arm (see _json_value for NaN)."""
    rows = table.select("arm", *columns).iter_rows(named=True)
    return {row.pop("arm"): {name: _json_value(value) for name, value in row.items()} for row in rows}


def _loss_summary(funnels: pl.DataFrame) -> dict:
    """Per arm and source: candidates retrieved and impressed, and the step of its largest loss with the
    share that survives it (null for a source that retrieved nothing)."""
    summary: dict = {}
    for row in largest_losses(funnels, ["arm"]).iter_rows(named=True):
        arm, source = row.pop("arm"), row.pop("source")
        summary.setdefault(arm, {})[source] = {name: _json_value(value) for name, value in row.items()}
    return summary


def _srm_summary(check: SampleRatioCheck) -> dict:
    return {"design": check.design, "users": list(check.users), "expected_shares": list(check.expected_shares),
            "p_value": _json_value(check.p_value), "is_mismatch": check.is_mismatch}


def _json_value(value):
    """NaN and infinite floats (an unbounded MDE) as null, so the record stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


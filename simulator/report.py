"""Report pieces for experiments (paper Table 6) and quota sweeps: markdown tables and PNG plots, the funnel per
source and arm, and the sweep's over-concentration section (paper 4.5.1)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl

from blending.funnel import ALL_SOURCES, LOSS_CAUSES, PARENT_STAGE, STAGES, largest_losses
from simulator.config import ExperimentConfig
from simulator.experiment import PRIMARY_METRIC, concentration_quota
from simulator.power import POWER
from simulator.stats import MIN_ARM_USERS, MIN_NONZERO_USERS, SRM_ALPHA, SampleRatioCheck

NOT_MEASURING = "not measuring the treatment"  # the verdict of every row of an arm flagged by its exposure
EXPOSURE_COLUMNS = ("treatment_sources", "treatment_users", "treatment_impressions", "treatment_impression_share",
                    "treatment_spend_share")
METRIC_LABELS = {
    "roas": "Return on ad spend", "revenue_per_user": "Advertiser revenue per user",
    "spend_per_user": "Ad spend per user", "ctr": "CTR", "cvr": "CVR (click-through)",
    "conversions_per_user": "Attributed conversions per user",
    "unique_advertisers": "Advertisers with impressions", "advertiser_entropy": "Advertiser entropy of impressions",
    "advertiser_gini": "Advertiser Gini of impressions",
}


def number_cell(value: float | None, digits: int = 4) -> str:
    """`digits` significant digits; a whole number of 10,000 or more in full with separators (20,000, not 2e+04)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1e4 and float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    """A relative change as a signed percentage with two decimals (0.0123 -> "+1.23%"); "n/a" for None or NaN,
    "unbounded" for an infinite bootstrap bound."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):  # a bootstrap bound with too many resamples where control's metric is zero
        return "unbounded"
    return f"{value * 100:+.2f}%"


def srm_line(check: SampleRatioCheck) -> str:
    """One sentence on the sample-ratio check; a mismatch says plainly that the comparisons are not trustworthy."""
    users = " / ".join(f"{count:,}" for count in check.users)
    distrust = "the comparisons below are not trustworthy until its cause is found."
    if check.design == "paired":
        if check.is_mismatch:
            return (f"**Sample-ratio mismatch (SRM)**: the paired design replays every user in every arm, but the "
                    f"arms analysed {users} users; {distrust}")
        return (f"Sample-ratio check (SRM): users per arm {users}; the paired design replays every user in every "
                "arm, so the counts must be equal: no mismatch.")
    shares = " / ".join(f"{share:.0%}" for share in check.expected_shares)
    counts = f"users per arm {users}, expected shares {shares}, chi-square p = {check.p_value:.3g}"
    if check.is_mismatch:
        return (f"**Sample-ratio mismatch (SRM)**: {counts} < {SRM_ALPHA}: the arms did not receive the users "
                f"the design assigns; {distrust}")
    return f"Sample-ratio check (SRM): {counts} (flagged below {SRM_ALPHA}): no mismatch."


def verdict(row: dict, prefix: str = "") -> str:
    """What a comparison row supports: not measuring the treatment (its arm's exposure flag), significant,
    not significant, underpowered or not estimable (`prefix`: the column prefix, e.g. `roas_` in the
    sweep table; the flag `is_treatment_measured` has none)."""
    if row["is_treatment_measured"] is False:
        return NOT_MEASURING
    p_value = row[f"{prefix}p_value"]
    if p_value is None or math.isnan(p_value):
        return "not estimable"
    if row[f"{prefix}is_underpowered"]:
        return (f"underpowered ({row[f'{prefix}arm_users']} users in the smaller arm, "
                f"{row[f'{prefix}nonzero_users']} with a nonzero numerator)")
    return "significant" if row[f"{prefix}is_significant"] else "not significant"


def multiple_testing_note(alpha: float) -> str:
    """How the table's p-values are corrected and what `underpowered` means."""
    return (f"Primary metric: {METRIC_LABELS['roas']} (RoAS); with several treatment arms its p-values are "
            f"Holm-adjusted across arms. Secondary metrics: Holm-adjusted within each arm (family-wise error "
            f"rate {alpha}); read them as supporting evidence, not as separate findings. Underpowered: the smaller "
            f"arm has fewer than {MIN_ARM_USERS} users or fewer than {MIN_NONZERO_USERS} users with a nonzero "
            f"numerator (converters, for RoAS), where synthetic A/A tests reject more than 7% of the time at "
            f"alpha = 0.05; such a result is never called significant. "
            f"An unbounded bound means too many bootstrap resamples had a zero control metric.")


def coverage_line(coverage: dict) -> str:
    """One sentence on where the ranker's LLM features are served against where they were learnt
    (`Ranker.coverage_check`); a mismatch says so plainly. Empty without LLM features."""
    if not coverage:
        return ""
    shares = (f"the ranker's LLM features were trained with lists for "
              f"{coverage['trained_users_with_list_share']:.1%} of users; this market serves lists to "
              f"{coverage['served_users_with_list_share']:.1%}")
    if coverage["is_mismatch"]:
        return (f"**LLM-feature coverage mismatch**: {shares} ({coverage['coverage_ratio']:.0f}x apart), so the "
                "features are served where they were not learnt; retrain the ranker (`adsim rank train "
                "--predictions`) with lists that cover the served users.")
    return f"LLM-feature coverage: {shares}."


def exposure_lines(arms: pl.DataFrame) -> list[str]:
    """One sentence per treatment arm on how far its treatment sources reached (experiment.treatment_check);
    an arm flagged as not measuring the treatment says so in bold, above its rows."""
    lines = []
    for row in arms.filter(~pl.col("is_control")).iter_rows(named=True):
        if row["is_treatment_measured"] is False:
            lines += [(f"**Arm `{row['arm']}` is {NOT_MEASURING}**: {row['treatment_check']}. Its rows read "
                       f"\"{NOT_MEASURING}\", not a result."), ""]
        else:
            lines += [f"Exposure of arm `{row['arm']}`: {row['treatment_check']}.", ""]
    return lines


def power_lines(arms: pl.DataFrame, comparisons: pl.DataFrame, design: str, alpha: float) -> list[str]:
    """Per treatment arm, the MDE on RoAS planned before it ran and the MDE its result achieved."""
    achieved = dict(comparisons.filter(pl.col("metric") == PRIMARY_METRIC).select("arm", "mde").rows())
    control = arms.filter(pl.col("is_control")).row(0, named=True)
    assumption = ("; paired design: the arms' per-user outcomes taken as uncorrelated, so the planned MDE is an "
                  "upper bound" if design == "paired" else "")
    return [f"Power ({POWER:.0%}, alpha {alpha}): minimum detectable effect (MDE) on RoAS of arm `{row['arm']}`: "
            f"planned {percent(row['planned_roas_mde'])} before it ran ({control['users']:,} control and "
            f"{row['users']:,} treatment users over {row['days']} simulated day(s), from the control arm's "
            f"per-user variance of log RoAS{assumption}); achieved {percent(achieved.get(row['arm']))} (from the "
            "result's interval)."
            for row in arms.filter(~pl.col("is_control")).iter_rows(named=True)] + [""]


def _coverage_lines(coverage: dict | None) -> list[str]:
    line = coverage_line(coverage or {})
    return [line, ""] if line else []


def aa_markdown(rates: dict[str, dict], config: ExperimentConfig) -> str:
    """The A/A line of an A/B: how it was re-randomised and its false-positive rates
    (experiment.aa_false_positive_rates) over the six ratio metrics and on RoAS, with Wilson intervals;
    `alpha` is what a calibrated test gives."""
    how = ("the control arm replayed with another seed on the same users, and per user a fair coin choosing which "
           "replay counts as control" if config.design == "paired" else "the control arm's users re-split in halves")

    def rate(name: str) -> str:
        row = rates[name]
        if row["rate"] is None:
            return f"untestable ({row['untestable']} tests)"
        return (f"{row['rate']:.1%} [{row['low']:.1%}, {row['high']:.1%}] of {row['tests']:,} tests"
                + (f" ({row['untestable']} untestable)" if row["untestable"] else ""))
    return (f"A/A check ({config.aa_splits} re-randomisations of {how}, no treatment): raw p-value below alpha = "
            f"{config.alpha} in {rate('all')} over the six ratio metrics, {rate(PRIMARY_METRIC)} on RoAS; a calibrated "
            f"test gives {config.alpha:.0%}.")


def ab_markdown(comparisons: pl.DataFrame, arms: pl.DataFrame, srm: SampleRatioCheck, title: str, note: str = "",
                alpha: float = 0.05, coverage: dict | None = None) -> str:
    """The Table 6 analogue: the SRM check, the design, the planned and achieved MDE on RoAS and each arm's treatment
    exposure (flagged arms first, in bold), then per metric (primary first) control and treatment values,
    relative change, CI, achieved MDE, raw and Holm-adjusted p-values and the verdict."""
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += [srm_line(srm), "", design_line(srm, "arm"), "", *_coverage_lines(coverage),
              *power_lines(arms, comparisons, srm.design, alpha),
              *exposure_lines(arms.sort("is_treatment_measured", nulls_last=True, maintain_order=True)),
              *comparison_table(comparisons, alpha), "", multiple_testing_note(alpha)]
    lines += ["", ("Per arm (advertiser diversity over impressions; survival = impressed / retrieved; treatment_*: "
                   "what the sources whose quota the arm raises reached, the control's own exposure to them beside "
                   "it):"), ""]
    survival = [c for c in arms.columns if c.endswith(("_survival", "_impressed_share"))]
    header = ["arm", "users", "requests", "impressions", "spend", "conversion_value", "roas", "ctr", "cvr",
              "unique_advertisers", "advertiser_entropy", "advertiser_gini", *survival, *EXPOSURE_COLUMNS,
              "planned_roas_mde"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in arms.iter_rows(named=True):
        lines.append("| " + " | ".join(str(row[c]) if isinstance(row[c], str) else number_cell(row[c]) for c in header)
                     + " |")
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: pl.DataFrame, alpha: float) -> list[str]:
    """Markdown rows per (arm, metric), primary first: control and treatment values, relative change, CI,
    achieved MDE, raw and Holm-adjusted p-values and the verdict."""
    lines = [(f"| Arm | Metric | Control | Treatment | Relative change | {1 - alpha:.0%} CI | MDE ({POWER:.0%} power) "
              "| p-value | Holm p-value | Verdict |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for row in comparisons.sort("is_primary", descending=True, maintain_order=True).iter_rows(named=True):
        role = "primary" if row["is_primary"] else "secondary"
        metric = f"{METRIC_LABELS.get(row['metric'], row['metric'])} ({role})"
        lines.append(
            f"| {row['arm']} | {metric} | {number_cell(row['control'])} | "
            f"{number_cell(row['treatment'])} | {percent(row['relative_change'])} | "
            f"[{percent(row['ci_low'])}, {percent(row['ci_high'])}] | {percent(row['mde'])} | "
            f"{number_cell(row['p_value'], 3)} | "
            f"{number_cell(row['p_value_adjusted'], 3)} | "
            f"{verdict(row)} |")
    return lines


def served_markdown(served: pl.DataFrame, served_users: int, all_users: int, alpha: float) -> str:
    """The served slice (paper Table 6's opt-in slice): the ratio metrics on the users whose serving lists the
    market started with, in both arms; empty without a slice."""
    if not served.height:
        return ""
    lines = [f"#### The served slice: {served_users:,} of {all_users:,} users", "",
             ("The users whose serving lists the market started with (fixed before any arm ran, so each arm's "
              "slice holds the same kind of user; users the nightly job adds later are outside it). Their change "
              "is diluted less than the whole market's, but their interval is wide unless the slice is large. "
              "The verdicts use Holm's adjustment within this table."), "",
             *comparison_table(served, alpha)]
    return "\n".join(lines) + "\n"


def design_line(check: SampleRatioCheck, what: str) -> str:
    """One sentence on which users each arm (`what`: "arm", "quota") replayed and how arms are compared."""
    if check.design == "paired":
        return (f"Design `paired`: every {what} replayed the same {check.users[0]:,} users with common random numbers "
                "(traffic, pacing, view, click and conversion draws keyed by user, request, item and advertiser, not "
                f"by draw order), so {what}s differ only by their treatment; comparisons are paired (per-user "
                "differences).")
    return (f"Design `split`: each {what} ran on its own hash-assigned share of the users "
            f"({' / '.join(f'{count:,}' for count in check.users)}) and of every budget; comparisons are between "
            "independent user sets.")


def interval_cell(row: dict, prefix: str) -> str:
    return f"[{percent(row[f'{prefix}ci_low'])}, {percent(row[f'{prefix}ci_high'])}]"


def _change(row: dict, prefix: str) -> str:
    return f"{percent(row[f'{prefix}change'])} {interval_cell(row, prefix)}"


def _tested_change(row: dict, prefix: str) -> str:
    """A change with its interval and Holm p-value, e.g. `-12.00% [-20.00%, -4.00%] (Holm p = 0.01)`."""
    return f"{_change(row, prefix)} (Holm p = {number_cell(row[f'{prefix}p_value_adjusted'], 3)})"


def concentration_lines(table: pl.DataFrame, source: str, alpha: float) -> list[str]:
    """The over-concentration section of a sweep (paper 4.5.1): per quota each source's share of impressions,
    the advertiser diversity of impressions (after blending's de-duplication) with its change against the
    first quota, and each source's survival; it names the first quota whose diversity drops significantly."""
    sources = [c.removesuffix("_impressed_share") for c in table.columns if c.endswith("_impressed_share")]
    tests = 2 * table.filter(~pl.col("is_control")).height
    quota = concentration_quota(table)
    flagged = table.filter(pl.col("is_treatment_measured").eq(False))["quota"].to_list()
    left_out = (f" Quota(s) {', '.join(map(str, flagged))} are left out: their arms do not measure the treatment, "
                "so a change there is the quota's displacement of other sources, not the source's concentration."
                if flagged else "")
    if quota is None:
        named = (f"No quota concentrated advertisers: no entropy drop or Gini rise against quota "
                 f"{table.filter(pl.col('is_control'))['quota'][0]} was significant in an arm measuring its "
                 f"treatment.{left_out}")
    else:
        row = table.filter(pl.col("quota") == quota).row(0, named=True)
        named = (f"**Advertiser diversity first drops significantly at quota {quota}** of `{source}`: entropy "
                 f"{_tested_change(row, 'advertiser_entropy_')}, Gini {_tested_change(row, 'advertiser_gini_')}."
                 f"{left_out}")
    header = ["quota", *[f"{s} share of impressions" for s in sources], "advertisers", "entropy",
              f"entropy change [{1 - alpha:.0%} CI]", "entropy Holm p", "Gini", f"Gini change [{1 - alpha:.0%} CI]",
              "Gini Holm p", *[f"{s} survival" for s in sources], "verdict"]
    lines = ["#### Over-concentration per quota (paper 4.5.1)", "", named, "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.iter_rows(named=True):
        changes = (["", "", "", ""] if row["is_control"] else
                   [_change(row, "advertiser_entropy_"), number_cell(row["advertiser_entropy_p_value_adjusted"], 3),
                    _change(row, "advertiser_gini_"), number_cell(row["advertiser_gini_p_value_adjusted"], 3)])
        verdict_cell = ("control" if row["is_control"] else
                        "not measuring the treatment" if row["is_treatment_measured"] is False else
                        "concentrated" if row["is_concentrated"] else "no significant concentration")
        cells = [str(row["quota"]), *[_share(row[f"{s}_impressed_share"]) for s in sources],
                 number_cell(row["unique_advertisers"]), number_cell(row["advertiser_entropy"]), changes[0], changes[1],
                 number_cell(row["advertiser_gini"]), changes[2], changes[3],
                 *[_share(row[f"{s}_survival"]) for s in sources], verdict_cell]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", (f"Diversity is over each quota's impressions, after blending's de-duplication: Shannon entropy "
                   f"(nats) and Gini over every advertiser of the world; changes are relative to the first quota with "
                   f"{1 - alpha:.0%} bootstrap intervals over users. Over-concentration = entropy down or Gini up "
                   f"with a Holm-adjusted p < {alpha} over all {tests} entropy and Gini tests of the sweep (one "
                   f"family), in a test that is not underpowered and an arm measuring its treatment. Share of "
                   "impressions: the source's impressions over the quota's; survival: its impressions over its "
                   "retrieved candidates."), ""]
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"


def sweep_markdown(table: pl.DataFrame, source: str, plots: list[Path], srm: SampleRatioCheck,
                   relative_to: Path | None = None, alpha: float = 0.05, coverage: dict | None = None) -> str:
    """The SRM check, the design and each quota's treatment exposure (flagged quotas in bold), then per L0
    quota of `source` the RoAS change versus the first quota (interval, planned and achieved MDE, raw and
    Holm-adjusted p-values, verdict) and the over-concentration section, with the plots linked."""
    columns = ["quota", "roas", "roas_change", "roas_ci", "planned_roas_mde", "roas_mde", "roas_p_value",
               "roas_p_value_adjusted", "roas_verdict", "conversions", "spend", "treatment_users",
               "treatment_spend_share"]
    percents = ("roas_change", "planned_roas_mde", "roas_mde")
    lines = [f"### L0 quota sweep of `{source}`", "", srm_line(srm), "", design_line(srm, "quota"), "",
             *_coverage_lines(coverage),
             *exposure_lines(table.sort("is_treatment_measured", nulls_last=True, maintain_order=True)),
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.iter_rows(named=True):
        row["roas_verdict"] = "control" if row["is_control"] else verdict(row, "roas_")
        row["roas_ci"] = "" if row["is_control"] else interval_cell(row, "roas_")
        cells = [percent(row[c]) if c in percents else row[c] if c in ("roas_verdict", "roas_ci")
                 else number_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", multiple_testing_note(alpha), "", *concentration_lines(table, source, alpha)]
    for path in plots:
        shown = os.path.relpath(path, relative_to) if relative_to else path
        lines.append(f"![{path.stem}]({shown})")
    return "\n".join(lines) + "\n"


def funnel_markdown(funnels: pl.DataFrame, plot: Path, relative_to: Path | None = None) -> str:
    """The funnel per source and arm (issue #15): per arm a table with a row per source (and `all`), its count at
    every stage with the survival from the parent stage, and why it loses: the delivery step that keeps the
    smallest share of its candidates (funnel.largest_losses) beside the other sources' share there."""
    losses = {(row["arm"], row["source"]): row for row in largest_losses(funnels, ["arm"]).iter_rows(named=True)}
    lines = ["#### Funnel per source", "",
             ("Candidates per source at every stage (survival from the parent stage in brackets; `converted` "
              "counts attributed conversions of impressions). Largest loss: the step from retrieval to impression "
              "that keeps the smallest share of the source's candidates, with the other sources' share at that "
              "step."), ""]
    header = ["source", *STAGES, "largest loss"]
    for arm in funnels["arm"].unique(maintain_order=True):
        lines += [f"Arm `{arm}`:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows = funnels.filter(pl.col("arm") == arm)
        for source in rows["source"].unique(maintain_order=True):
            stages = {row["stage"]: row for row in rows.filter(pl.col("source") == source).iter_rows(named=True)}
            cells = [f"{stages['retrieved']['count']:,}"] + [
                f"{stages[stage]['count']:,} ({_share(stages[stage]['survival_from_parent'])})" for stage in STAGES[1:]]
            loss = _loss_cell(losses[(arm, source)]) if source != ALL_SOURCES else ""
            lines.append(f"| {source} | " + " | ".join(cells) + f" | {loss} |")
        lines.append("")
    lines += ["What removes candidates at each step: "
              + "; ".join(f"{PARENT_STAGE[stage]} -> {stage}: {cause}" for stage, cause in LOSS_CAUSES.items()) + ".",
              "", f"![{plot.stem}]({os.path.relpath(plot, relative_to) if relative_to else plot})", ""]
    return "\n".join(lines)


def _loss_cell(loss: dict) -> str:
    """Why a source loses, from its largest_losses row."""
    if loss["stage"] is None:
        return "retrieved nothing (quota 0, or no candidates)"
    other = "" if loss["other_survival"] is None else f" (other sources {_share(loss['other_survival'])})"
    return f"{loss['parent_stage']} -> {loss['stage']}: {_share(loss['survival'])} survive{other}"


def plot_funnel(funnels: pl.DataFrame, path: Path) -> Path:
    """One panel per source: its count at every funnel stage (log scale), a line per arm; a stage the source
    did not reach is marked x below 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    sources = [s for s in funnels["source"].unique(maintain_order=True).to_list() if s != ALL_SOURCES]
    figure, axes = plt.subplots(1, len(sources), figsize=(4.6 * len(sources), 3.6), sharey=True, squeeze=False)
    positions = np.arange(len(STAGES))
    for axis, source in zip(axes[0], sources):
        for arm in funnels["arm"].unique(maintain_order=True):
            counts = (funnels.filter((pl.col("arm") == arm) & (pl.col("source") == source))
                      .sort(pl.col("stage").replace_strict({s: i for i, s in enumerate(STAGES)}))["count"].to_numpy())
            line, = axis.plot(positions[counts > 0], counts[counts > 0], marker="o", label=arm)
            axis.plot(positions[counts == 0], np.full((counts == 0).sum(), 0.5), "x", color=line.get_color())
        axis.set_yscale("log")
        axis.set_xticks(positions, STAGES, rotation=40, ha="right", fontsize=8)
        axis.set(title=f"funnel of {source}", ylabel="candidates (log; x = none)")
    axes[0][-1].legend(fontsize=7)
    return save_figure(figure, path)


def plot_sweep(table: pl.DataFrame, source: str, out_dir: Path) -> list[Path]:
    """Three PNGs against the quota: RoAS change, advertiser entropy and Gini changes (95% CIs; the quotas that
    concentrate advertisers in red), and each source's share of impressions and funnel survival."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    quota = table["quota"].to_numpy()
    paths = []

    figure, axis = plt.subplots(figsize=(5, 3.5))
    _change_with_interval(axis, quota, table, "roas_")
    axis.set(xlabel=f"L0 quota of {source}", ylabel="RoAS change vs first quota (%)", title="RoAS")
    paths.append(save_figure(figure, out_dir / "sweep_roas.png"))

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    is_concentrated = table["is_concentrated"].fill_null(False).to_numpy()
    for axis, prefix, label in zip(axes, ("advertiser_entropy_", "advertiser_gini_"), ("entropy", "Gini")):
        change = _change_with_interval(axis, quota, table, prefix)
        axis.plot(quota[is_concentrated], change[is_concentrated], "o", color="red",
                  label="over-concentrated (Holm)" if is_concentrated.any() else None)
        axis.set(xlabel=f"L0 quota of {source}", ylabel="change vs first quota (%)",
                 title=f"advertiser {label} of impressions")
        if is_concentrated.any():
            axis.legend(fontsize=7)
    paths.append(save_figure(figure, out_dir / "sweep_diversity.png"))

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sources = [c.removesuffix("_impressed_share") for c in table.columns if c.endswith("_impressed_share")]
    for name in sources:
        axes[0].plot(quota, table[f"{name}_impressed_share"].to_numpy(), marker="o", label=name)
        axes[1].plot(quota, table[f"{name}_survival"].to_numpy(), marker="o", label=name)
    axes[0].set(xlabel=f"L0 quota of {source}", title="share of impressions")
    axes[1].set(xlabel=f"L0 quota of {source}", title="survival: impressed / retrieved")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(figure, out_dir / "sweep_survival.png"))
    return paths


def _change_with_interval(axis, quota: np.ndarray, table: pl.DataFrame, prefix: str) -> np.ndarray:
    """Plot `{prefix}change` in percent with its interval as error bars (none for the control; an unbounded
    upper bound is annotated); returns the plotted changes."""
    change = table[f"{prefix}change"].fill_null(0.0).fill_nan(0.0).to_numpy() * 100
    low = table[f"{prefix}ci_low"].fill_null(0.0).fill_nan(0.0).to_numpy() * 100
    high = table[f"{prefix}ci_high"].fill_null(0.0).fill_nan(0.0).to_numpy() * 100
    is_unbounded = np.isinf(high)
    axis.errorbar(quota, change, yerr=[change - low, np.where(is_unbounded, np.nan, high) - change], marker="o",
                  capsize=3)
    for x, y in zip(quota[is_unbounded], change[is_unbounded]):
        axis.annotate("upper bound unbounded", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
    axis.axhline(0, color="grey", lw=0.8)
    return change


def save_figure(figure, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out `figure` within `rect` (figure fractions; room below for a figure legend), write it as a PNG at
    `path` (creating its folder) and close it."""
    figure.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path

"""Report pieces for experiments (paper Table 6) and quota sweeps: markdown tables and PNG plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

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


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _percent(value: float | None) -> str:
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
        return (f"Sample-ratio check (SRM): not applicable to the paired design; every arm replayed the same "
                f"{check.users[0]:,} users.")
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
    achieved = dict(comparisons.filter(pl.col("metric") == "roas").select("arm", "mde").rows())
    control = arms.filter(pl.col("is_control")).row(0, named=True)
    assumption = ("; paired design: the arms' per-user outcomes taken as uncorrelated, so the planned MDE is an "
                  "upper bound" if design == "paired" else "")
    return [f"Power ({POWER:.0%}, alpha {alpha}): minimum detectable effect (MDE) on RoAS of arm `{row['arm']}`: "
            f"planned {_percent(row['planned_roas_mde'])} before it ran ({control['users']:,} control and "
            f"{row['users']:,} treatment users over {row['days']} simulated day(s), from the control arm's "
            f"per-user variance of log RoAS{assumption}); achieved {_percent(achieved.get(row['arm']))} (from the "
            "result's interval)."
            for row in arms.filter(~pl.col("is_control")).iter_rows(named=True)] + [""]


def _coverage_lines(coverage: dict | None) -> list[str]:
    line = coverage_line(coverage or {})
    return [line, ""] if line else []


def ab_markdown(comparisons: pl.DataFrame, arms: pl.DataFrame, srm: SampleRatioCheck, title: str, note: str = "",
                alpha: float = 0.05, coverage: dict | None = None) -> str:
    """The Table 6 analogue: the SRM check, the planned and achieved MDE on RoAS and each arm's treatment
    exposure (flagged arms first, in bold), then per metric (primary first) control and treatment values,
    relative change, CI, achieved MDE, raw and Holm-adjusted p-values and the verdict."""
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += [srm_line(srm), "", *_coverage_lines(coverage), *power_lines(arms, comparisons, srm.design, alpha),
              *exposure_lines(arms.sort("is_treatment_measured", nulls_last=True, maintain_order=True)),
              (f"| Arm | Metric | Control | Treatment | Relative change | {1 - alpha:.0%} CI | MDE ({POWER:.0%} power) "
               "| p-value | Holm p-value | Verdict |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for row in comparisons.sort("is_primary", descending=True, maintain_order=True).iter_rows(named=True):
        role = "primary" if row["is_primary"] else "secondary"
        metric = f"{METRIC_LABELS.get(row['metric'], row['metric'])} ({role})"
        lines.append(
            f"| {row['arm']} | {metric} | {_number(row['control'])} | "
            f"{_number(row['treatment'])} | {_percent(row['relative_change'])} | "
            f"[{_percent(row['ci_low'])}, {_percent(row['ci_high'])}] | {_percent(row['mde'])} | "
            f"{_number(row['p_value'], 3)} | "
            f"{_number(row['p_value_adjusted'], 3)} | "
            f"{verdict(row)} |")
    lines += ["", multiple_testing_note(alpha)]
    lines += ["", ("Per arm (advertiser diversity over impressions; survival = impressed / retrieved; treatment_*: "
                   "what the sources whose quota the arm raises reached, the control's own exposure to them beside "
                   "it):"), ""]
    survival = [c for c in arms.columns if c.endswith(("_survival", "_impressed_share"))]
    header = ["arm", "users", "requests", "impressions", "spend", "conversion_value", "roas", "ctr", "cvr",
              "unique_advertisers", "advertiser_entropy", "advertiser_gini", *survival, *EXPOSURE_COLUMNS,
              "planned_roas_mde"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in arms.iter_rows(named=True):
        lines.append("| " + " | ".join(str(row[c]) if isinstance(row[c], str) else _number(row[c]) for c in header) + " |")
    return "\n".join(lines) + "\n"


def sweep_markdown(table: pl.DataFrame, source: str, plots: list[Path], srm: SampleRatioCheck,
                   relative_to: Path | None = None, alpha: float = 0.05, coverage: dict | None = None) -> str:
    """The SRM check and each quota's treatment exposure (flagged quotas in bold), then metrics, diversity
    and survival of `source` against its L0 quota (RoAS change versus the first quota with planned and
    achieved MDE, raw and Holm-adjusted p-values and verdict), with the plots linked."""
    columns = ["quota", "roas", "roas_change", "planned_roas_mde", "roas_mde", "roas_p_value", "roas_p_value_adjusted",
               "roas_verdict", "conversions", "spend", "unique_advertisers", "advertiser_entropy", "advertiser_gini",
               f"{source}_impressed_share", f"{source}_survival", "treatment_users", "treatment_spend_share"]
    percents = ("roas_change", "planned_roas_mde", "roas_mde")
    lines = [f"### L0 quota sweep of `{source}`", "", srm_line(srm), "", *_coverage_lines(coverage),
             *exposure_lines(table.sort("is_treatment_measured", nulls_last=True, maintain_order=True)),
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.iter_rows(named=True):
        row["roas_verdict"] = "control" if row["is_control"] else verdict(row, "roas_")
        cells = [_percent(row[c]) if c in percents else row[c] if c == "roas_verdict" else _number(row.get(c))
                 for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", multiple_testing_note(alpha), ""]
    for path in plots:
        shown = path.relative_to(relative_to) if relative_to else path
        lines.append(f"![{path.stem}]({shown})")
    return "\n".join(lines) + "\n"


def plot_sweep(table: pl.DataFrame, source: str, out_dir: Path) -> list[Path]:
    """Three PNGs against the quota: RoAS change (95% CI), advertiser diversity, funnel survival."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    quota = table["quota"].to_numpy()
    paths = []

    figure, axis = plt.subplots(figsize=(5, 3.5))
    change = table["roas_change"].fill_null(0.0).to_numpy() * 100
    low = table["roas_ci_low"].fill_null(0.0).to_numpy() * 100
    high = table["roas_ci_high"].fill_null(0.0).to_numpy() * 100
    is_unbounded = np.isinf(high)
    axis.errorbar(quota, change, yerr=[change - low, np.where(is_unbounded, np.nan, high) - change], marker="o",
                  capsize=3)
    for x, y in zip(quota[is_unbounded], change[is_unbounded]):
        axis.annotate("upper bound unbounded", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
    axis.axhline(0, color="grey", lw=0.8)
    axis.set(xlabel=f"L0 quota of {source}", ylabel="RoAS change vs first quota (%)", title="RoAS")
    paths.append(_save(figure, out_dir / "sweep_roas.png"))

    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for axis, column, label in zip(axes, ("unique_advertisers", "advertiser_entropy", "advertiser_gini"),
                                   ("unique advertisers", "entropy (nats)", "Gini")):
        axis.plot(quota, table[column].to_numpy(), marker="o")
        axis.set(xlabel=f"L0 quota of {source}", title=f"impressions: {label}")
    paths.append(_save(figure, out_dir / "sweep_diversity.png"))

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(quota, table[f"{source}_survival"].to_numpy(), marker="o", label="impressed / retrieved")
    axis.plot(quota, table[f"{source}_impressed_share"].to_numpy(), marker="s", label="share of impressions")
    axis.set(xlabel=f"L0 quota of {source}", title=f"funnel of {source}")
    axis.legend()
    paths.append(_save(figure, out_dir / "sweep_survival.png"))
    return paths


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path

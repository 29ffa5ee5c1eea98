"""Report pieces for experiments (paper Table 6) and quota sweeps: markdown tables and PNG plots."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

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
    return f"{value * 100:+.2f}%"


def ab_markdown(comparisons: pl.DataFrame, arms: pl.DataFrame, title: str, note: str = "") -> str:
    """The Table 6 analogue: per metric, control and treatment values, relative change, CI and p-value."""
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| Arm | Metric | Control | Treatment | Relative change | 95% CI | p-value |",
              "|---|---|---|---|---|---|---|"]
    for row in comparisons.iter_rows(named=True):
        lines.append(
            f"| {row['arm']} | {METRIC_LABELS.get(row['metric'], row['metric'])} | {_number(row['control'])} | "
            f"{_number(row['treatment'])} | {_percent(row['relative_change'])} | "
            f"[{_percent(row['ci_low'])}, {_percent(row['ci_high'])}] | {_number(row['p_value'], 3)} |")
    lines += ["", "Per arm (advertiser diversity over impressions; survival = impressed / retrieved):", ""]
    survival = [c for c in arms.columns if c.endswith("_survival") or c.endswith("_impressed_share")]
    header = ["arm", "users", "requests", "impressions", "spend", "conversion_value", "roas", "ctr", "cvr",
              "unique_advertisers", "advertiser_entropy", "advertiser_gini", *survival]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in arms.iter_rows(named=True):
        lines.append("| " + " | ".join(str(row[c]) if isinstance(row[c], str) else _number(row[c]) for c in header) + " |")
    return "\n".join(lines) + "\n"


def sweep_markdown(table: pl.DataFrame, source: str, plots: list[Path], relative_to: Path | None = None) -> str:
    """Metrics, diversity and survival of `source` against its L0 quota, with the plots linked."""
    columns = ["quota", "roas", "roas_change", "roas_p_value", "conversions", "spend", "unique_advertisers",
               "advertiser_entropy", "advertiser_gini", f"{source}_impressed_share", f"{source}_survival"]
    lines = [f"### L0 quota sweep of `{source}`", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.iter_rows(named=True):
        cells = [_percent(row[c]) if c == "roas_change" else _number(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
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
    axis.errorbar(quota, change, yerr=[change - low, high - change], marker="o", capsize=3)
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

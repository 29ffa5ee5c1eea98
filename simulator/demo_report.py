"""`report.md` of a run: a verdict first, then the measured analogues of the paper's Tables 2-6, stage by stage,
with plots; timings and LLM training in an appendix.

The verdict is one table with a row per use of the advertiser lists (predictor recall, Table 3; ranking
features, Table 5; the candidate generator's A/B, Table 6; the dose-response of issue #15; the quota sweep's
over-concentration, paper 4.5.1): what this run measured, with its interval, beside the paper's figure, the
validity checks (labels, test positives and MDE, SRM, exposure) and a verdict computed from them. It only
gathers what the stages wrote (their markdown sections and stage records); every number in the report was
measured by a stage of this run folder, and a stage or field the run lacks reads "not measured".
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from simulator.demo import SERVED_METHOD
from simulator.power import achieved_mde_percent
from simulator.report import NOT_MEASURING, percent, save_figure
from simulator.sensitivity import check_dose_response, metric_label
from synthetic_data.run_folder import RunFolder


class PaperFigure(NamedTuple):
    """One figure the paper reports: its label in the verdict table, value, unit and table/section."""

    label: str
    value: float
    unit: str  # "" for a share, "%" for a relative change
    source: str


# The paper's figures the verdict reads each use against (the keys of the changes are the metric names
# `simulator.sensitivity` suffixes: `lift_ctcvr_pr_auc`, `ab_roas`).
PAPER_FIGURES = {
    "sft_recall_at_20": PaperFigure("SFT", 0.501, "", "Table 3, V1, 1-advertiser prompt"),
    "grpo_recall_at_20": PaperFigure("+GRPO", 0.683, "", "Table 3, V1, 1-advertiser prompt"),
    "sid_recall_at_20": PaperFigure("SID +GRPO", 0.755, "", "Table 3, V1, 1-advertiser prompt"),
    "ctcvr_pr_auc": PaperFigure("ctcvr Δ PR-AUC", 0.71, "%", "Table 5"),
    "vtcvr_pr_auc": PaperFigure("vtcvr Δ PR-AUC", 1.64, "%", "Table 5"),
    "roas": PaperFigure("RoAS", 4.94, "%", "Table 6 (US Shopping slice, p = 0.021)"),
}

# The verdicts, in the order the lessons list them
MEASURED = "measured"
TOO_THIN = "too thin to say"
NOT_TRUSTWORTHY = "not trustworthy"
NOT_MEASURED = "not measured"
VERDICTS = (MEASURED, TOO_THIN, NOT_MEASURING, NOT_TRUSTWORTHY, NOT_MEASURED)

LIFT_TASKS = ("ctcvr", "vtcvr")  # Table 5's rows
LIFT_MODEL = "dcn"  # the market's ranker
LLM_TRAINING_STAGES = ("llm_pretrain", "llm_behaviour", "llm_sft_single", "llm_sft_list", "llm_grpo")

# (title, stage folder file, whether a run without it says so; the dose-response is not a demo stage)
SECTIONS = (
    ("Advertiser prediction on V0 and V1 (paper Tables 2 and 3)", "llm_eval/results.md", True),
    ("Complementary to the most-recent list? (the paper's claim)", "llm_eval/complementarity.md", True),
    ("GRPO over its initialisation (paper Table 3's +GRPO row)", "llm_eval/grpo_effect.md", True),
    ("LLM methods against the non-LLM baselines (issue #14's yardsticks)", "llm_eval/baselines_effect.md", True),
    ("Below the world's own next-conversion ranking (Table 3's ceiling)", "llm_eval/ceiling_gap.md", False),
    ("Feature ablation (paper Table 4)", "llm_eval/ablation.md", True),
    ("Retrieval: two-tower objectives and generators (paper 4.5.1)", "retrieval_compare/objectives.md", True),
    ("Conversion models with LLM features (paper Table 5)", "ranking_eval/table5.md", True),
    ("Conversion models with most-recent-advertiser lists of the same users (Table 5 control)",
     "ranking_eval_recent/table5.md", True),
    ("Offline A/B on the simulated market (the paper's online A/B, Table 6)", "ab/report.md", True),
    ("L0 quota sweep of the LLM candidate generator (paper 4.5.1)", "sweep/report.md", True),
    ("Dose-response: how good must the predictor be? (issue #15)", "sensitivity/report.md", False),
)


@dataclass(frozen=True)
class VerdictRow:
    """One use of the lists: what this run measured, the paper's figure, the validity checks and the verdict
    (one of VERDICTS) with its detail: the effect and interval of a measurement, else the flag behind it."""

    use: str
    measured: str
    paper: str
    checks: str
    verdict: str
    detail: str = ""

    @property
    def text(self) -> str:
        """The verdict as the table prints it: `measured: <effect> [interval]`, else `<verdict> (<flag>)`."""
        if self.verdict == MEASURED:
            return f"measured: {self.detail}"
        return f"{self.verdict} ({self.detail})" if self.detail else self.verdict


def _not_measured(use: str, paper: str, reason: str) -> VerdictRow:
    return VerdictRow(use, "—", paper, "—", NOT_MEASURED, reason)


def _paper(*keys: str) -> str:
    """The paper's figures of `keys` after their source, e.g. `Table 3, V1, 1-advertiser prompt: SFT 0.501,
    +GRPO 0.683`."""
    figures = [PAPER_FIGURES[key] for key in keys]
    values = ", ".join(f"{f.label} {f.value:.3f}" if f.unit == "" else f"{f.value:+.2f}%" for f in figures)
    return f"{'; '.join(dict.fromkeys(f.source for f in figures))}: {values}"


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _interval(low: float, high: float) -> str:
    """A change interval given in %, an infinite bound as unbounded."""
    return f"[{percent(low / 100)}, {percent(high / 100)}]"


def share_cell(row: dict, k: int) -> str:
    return f"{row[f'recall_at_{k}']:.3f} [{row[f'recall_at_{k}_low']:.3f}, {row[f'recall_at_{k}_high']:.3f}]"


def difference_cell(row: dict, name: str) -> str:
    """A signed difference of shares with its interval (columns `name`, `name`_low, `name`_high)."""
    return f"{row[name]:+.3f} [{row[f'{name}_low']:+.3f}, {row[f'{name}_high']:+.3f}]"


def served_method(root: Path) -> str:
    """The method the demo serves (`SERVED_METHOD`), resolved: `chosen` is the one its `llm_choice` stage
    recorded (the name itself when that stage has not run)."""
    from llm_predictor.choice import resolve_method
    from synthetic_data.config_io import ConfigError

    try:
        return resolve_method(RunFolder(root), SERVED_METHOD)
    except ConfigError:
        return SERVED_METHOD


def recall_row(root: Path) -> VerdictRow:
    """Table 3: the served method's V1 Recall@20 and Recall@1 (Wilson intervals) beside the most-recent-advertiser
    and popularity baselines; the verdict is the paired difference from most-recent's Recall@20 on the same
    labels (`llm_eval/complementarity.parquet`, Tango interval): measured when its interval excludes 0."""
    use, paper = "Predictor: V1 Recall@20 (Table 3)", _paper("sft_recall_at_20", "grpo_recall_at_20",
                                                              "sid_recall_at_20")
    path = root / "llm_eval" / "results.parquet"
    if not path.exists():
        return _not_measured(use, paper, "no `llm_eval/results.parquet`")
    methods = {row["method"]: row for row in pl.read_parquet(path).filter(pl.col("eval_set") == "v1")
               .iter_rows(named=True)}
    name = served_method(root)
    served = methods.get(name)
    if served is None or not served["n_labels"] or _is_missing(served["recall_at_20"]):
        return _not_measured(use, paper, f"no V1 result of the served method `{name}`")
    shown = [(f"`{name}` (served)", served)] + [(f"`{baseline}`", methods[baseline]) for baseline in
                                                ("most_recent", "popularity") if baseline in methods]
    measured = "; ".join(f"{name} R@20 {share_cell(row, 20)}, R@1 {share_cell(row, 1)}" for name, row in shown)
    checks = f"{served['n_labels']:,} V1 labels; Wilson intervals; paired Tango interval of the difference"
    effect = f"R@20 {share_cell(served, 20)}"
    paired = root / "llm_eval" / "complementarity.parquet"
    rows = pl.read_parquet(paired).filter(pl.col("method") == name) if paired.exists() else pl.DataFrame()
    if rows.is_empty():
        return _not_measured(use, paper, f"no paired comparison of `{name}` with the most-recent list "
                                         "(`llm_eval/complementarity.parquet`)")
    row = rows.row(0, named=True)
    difference = difference_cell(row, "recall_at_20_minus_reference")
    versus = f"the most-recent list's on the same {row['labels']:,} labels: {difference}"
    if row["recall_at_20_minus_reference_high"] < 0:
        return VerdictRow(use, measured, paper, checks, MEASURED, f"{effect}, below {versus}")
    if row["recall_at_20_minus_reference_low"] > 0:
        return VerdictRow(use, measured, paper, checks, MEASURED, f"{effect}, above {versus}")
    return VerdictRow(use, measured, paper, checks, TOO_THIN, f"{effect}, level with {versus}")


def _lift_cells(path: Path, task: str) -> dict[str, dict]:
    """{comparison: row} of Table 5's DCN Δ PR-AUC for `task` in a `lift_summary.parquet` ({} without it)."""
    if not path.exists():
        return {}
    table = pl.read_parquet(path).filter((pl.col("model") == LIFT_MODEL) & (pl.col("task") == task)
                                         & (pl.col("metric") == "pr_auc"))
    return {row["comparison"]: row for row in table.iter_rows(named=True)}


def _lift_cell(row: dict) -> str:
    return f"{row['change_pct']:+.2f}% {_interval(row['ci_low'], row['ci_high'])} (p = {row['p_value']:.2g})"


def lift_row(root: Path, task: str) -> VerdictRow:
    """Table 5: the DCN's Δ PR-AUC on `task` with versus without the LLM's held-out lists, beside the random-list
    and most-recent-list controls; too thin when a bootstrap replicate had no positive or the interval's achieved
    MDE (80% power) exceeds the paper's effect, measured when the interval excludes 0 or rules out that effect."""
    figure = PAPER_FIGURES[f"{task}_pr_auc"]
    use, paper = f"Ranking features: {task} Δ PR-AUC (Table 5)", _paper(f"{task}_pr_auc")
    cells = _lift_cells(root / "ranking_eval" / "lift_summary.parquet", task)
    main = cells.get("with_llm vs without_llm")
    if main is None:
        path = root / "ranking_eval" / "lift_summary.parquet"
        measured_tasks = sorted(set(pl.read_parquet(path)["task"])) if path.exists() else []
        reason = (f"the lift ran for {', '.join(measured_tasks)} only (the demo's held-out users have too few {task} "
                  f"positives to split; on every user see docs/sensitivity.md)" if measured_tasks else
                  f"no DCN {task} row in `ranking_eval/lift_summary.parquet`")
        return _not_measured(use, paper, reason)
    random = cells.get("with_llm vs random_control")
    recent = _lift_cells(root / "ranking_eval_recent" / "lift_summary.parquet", task).get("with_llm vs without_llm")
    measured = "; ".join([f"LLM lists {_lift_cell(main)}",
                          *([f"LLM vs random lists {_lift_cell(random)}"] if random else []),
                          *([f"most-recent lists {_lift_cell(recent)}"] if recent else [])])
    mde = achieved_mde_percent(main["ci_low"], main["ci_high"])
    positives = f"{main['test_positives']:,} test positives"
    undefined = main["undefined_replicates"]
    checks = (f"{positives}, {main['test_users']:,} users, {main['seeds']} seeds; achieved MDE {percent(mde / 100)}"
              + (f"; {undefined:,} of {main['replicates']:,} replicates without a positive" if undefined else ""))
    effect = f"{main['change_pct']:+.2f}% {_interval(main['ci_low'], main['ci_high'])}"
    if undefined:
        return VerdictRow(use, measured, paper, checks, TOO_THIN,
                          f"{positives}: {undefined:,} bootstrap replicates without a positive")
    if main["ci_low"] > 0 or main["ci_high"] < 0:
        return VerdictRow(use, measured, paper, checks, MEASURED, effect)
    if not mde <= figure.value:
        return VerdictRow(use, measured, paper, checks, TOO_THIN,
                          f"{positives}: achieved MDE {percent(mde / 100)} > the paper's {figure.value:+.2f}%")
    return VerdictRow(use, measured, paper, checks, MEASURED, f"{effect}, no effect of the paper's size")


def _srm_check(srm: dict | None) -> str:
    if srm is None:
        return "SRM not measured"
    if srm["design"] == "paired":
        return "SRM: paired design" + (", **arms analysed different users**" if srm["is_mismatch"] else "")
    return f"SRM p = {srm['p_value']:.3g}" + (" (**mismatch**)" if srm["is_mismatch"] else " (ok)")


def _aa_check(summary: dict) -> str:
    """The A/A false-positive rate on RoAS of an ab summary (`aa`, with its Wilson interval)."""
    roas = (summary.get("aa") or {}).get("roas")
    if roas and roas.get("rate") is not None:
        return f"A/A rejects {roas['rate']:.1%} [{roas['low']:.1%}, {roas['high']:.1%}] on RoAS"
    return "A/A not measured"


def _reach(exposure: dict | None) -> str | None:
    """How far an arm's treatment sources reached, from its `exposure` record (None without one)."""
    if not exposure or "treatment_users" not in exposure:
        return None
    return (f"{exposure['treatment_users']:,} users, {exposure['treatment_impressions']:,} impressions, "
            f"{exposure['treatment_spend_share']:.2%} of spend")


def _primary_intervals(path: Path) -> dict[str, tuple[float, float]]:
    """{arm: (ci_low, ci_high)} of the primary metric (RoAS) in an `ab/comparisons.parquet` ({} without it)."""
    if not path.exists():
        return {}
    table = pl.read_parquet(path).filter(pl.col("is_primary"))
    return {arm: (low, high) for arm, low, high in table.select("arm", "ci_low", "ci_high").iter_rows()}


def ab_verdict(result: dict, srm: dict | None, effect: str, exposure: str) -> tuple[str, str]:
    """(verdict, detail) of one treatment arm's RoAS result; the flags decide in this order: exposure, SRM,
    estimability, power (underpowered, or not significant with an achieved MDE above the paper's effect)."""
    mde, paper = result.get("mde"), PAPER_FIGURES["roas"].value
    if result.get("is_treatment_measured") is False:
        return NOT_MEASURING, exposure
    if srm is not None and srm["is_mismatch"]:
        return NOT_TRUSTWORTHY, "sample-ratio mismatch"
    if _is_missing(result.get("p_value")):
        return TOO_THIN, "not estimable"
    if result.get("is_underpowered"):
        return TOO_THIN, f"underpowered: {result['nonzero_users']:,} users with a conversion"
    if result.get("is_significant"):
        return MEASURED, effect
    if _is_missing(mde) or mde * 100 > paper:
        return TOO_THIN, f"achieved MDE {percent(mde)} > the paper's {paper:+.2f}%"
    return MEASURED, f"{effect}, no effect of the paper's size"


def ab_row(use: str, result: dict, exposure: dict | None, srm: dict | None, interval: tuple[float, float] | None,
           aa: str) -> VerdictRow:
    """Table 6: one treatment arm's RoAS change (`roas_change` of the ab summary) with its interval, planned and
    achieved MDE, SRM, the A/A line `aa` and exposure, and the verdict of `ab_verdict`."""
    effect = percent(result["relative_change"]) + (f" [{percent(interval[0])}, {percent(interval[1])}]"
                                                    if interval else " [interval n/a]")
    p_value = result.get("p_value")
    measured = effect + ("" if _is_missing(p_value) else f" (p = {p_value:.2g})")
    planned = (exposure or {}).get("planned_roas_mde")
    reach = _reach(exposure)
    flag = {False: "**flagged**", True: "ok", None: "not checked"}[(exposure or {}).get("is_treatment_measured")]
    checks = "; ".join([f"MDE planned {percent(planned)}, achieved {percent(result.get('mde'))}", _srm_check(srm),
                        aa, f"exposure {reach} ({flag})" if reach else "exposure not measured"])
    return VerdictRow(use, measured, _paper("roas"), checks,
                      *ab_verdict(result, srm, effect, f"its source reached {reach}" if reach else ""))


def ab_rows(run: RunFolder) -> list[VerdictRow]:
    """One verdict row per treatment arm of the `ab` stage."""
    use = "Generator A/B: RoAS (Table 6)"
    record = run.stage_record("ab")
    if record is None or not record["summary"].get("roas_change"):
        return [_not_measured(use, _paper("roas"), "no `ab` stage" if record is None else "no RoAS result")]
    summary = record["summary"]
    intervals = _primary_intervals(run.root / "ab" / "comparisons.parquet")
    # what the generator served: the stack label names the predictions and the nightly re-inference, which
    # replaces the lists of the users it re-infers from the second day on
    stack = record.get("config", {}).get("stack")
    served = f" (stack: {stack})" if stack else ""
    return [ab_row(f"{use}, arm `{arm}`{served}", result, summary.get("exposure", {}).get(arm), summary.get("srm"),
                   intervals.get(arm), _aa_check(summary)) for arm, result in summary["roas_change"].items()]


def dose_response_verdict(check: dict, top: str) -> tuple[str, str]:
    """(verdict, detail) of one dose-response check: the random control must be measured and cover 0, two oracle
    points are needed for a shape, and the best oracle point's interval must exclude 0 for the shape to say
    anything. A check against the random control's own arm (`ab_info_*`, sensitivity.information_columns) has
    the control as its reference, so only the oracle points are judged."""
    against_random = check["metric"].startswith("ab_info_")
    if check["control_covers_zero"] is False and not against_random:
        return NOT_TRUSTWORTHY, "the random control's interval excludes 0"
    if check["control_covers_zero"] is None and not against_random:
        return TOO_THIN, "no random control"
    if check["is_monotone"] is None:
        return TOO_THIN, f"{check['points']} oracle point(s)"
    low, high = check["top_interval"]
    if low <= 0 <= high:
        return TOO_THIN, "the best oracle point's interval covers 0"
    return MEASURED, f"{dose_response_shape(check)}; {top}"


def dose_response_shape(check: dict) -> str:
    """A recorded check's shape in words: a rise needs no significant fall and estimates that rise."""
    if not check["is_monotone"]:
        return "does not rise monotonically"
    return "rises monotonically" if check.get("estimates_rise", True) else "shows no rise (estimates do not rise)"


def recorded_checks(run: RunFolder) -> list[dict]:
    """The dose-response checks of the `sensitivity` record, each re-read from `sensitivity/table.parquet` when the
    run has it, so that a record written before a check gained a field (`estimates_rise`) reads as today's check
    of the same measurements; the record's own dicts without the table."""
    checks = run.stage_record("sensitivity")["summary"]["checks"]
    path = run.root / "sensitivity" / "table.parquet"
    if not path.exists():
        return checks
    table = pl.read_parquet(path)
    return [{**check, **check_dose_response(table, check["metric"]).__dict__} for check in checks]


def dose_response_rows(run: RunFolder) -> list[VerdictRow]:
    """The dose-response checks of `sensitivity/` (issue #15): one row per targeted metric; the random control
    must cover 0, and the best oracle point's interval must exclude 0 for the shape to say anything."""
    use = "Dose-response against predictor quality (issue #15)"
    record = run.stage_record("sensitivity")
    if record is None or not record["summary"].get("checks"):
        return [_not_measured(use, "no figure", "no `sensitivity` stage: run `adsim sensitivity`" if record is None
                              else "no dose-response check in its record")]
    rows = []
    for check in recorded_checks(run):
        name = check["metric"].removeprefix("lift_").removeprefix("ab_").removeprefix("info_")
        paper = f"effect to detect: {_paper(name)}" if name in PAPER_FIGURES else "no figure"
        row_use = f"Dose-response: {metric_label(check['metric'])} (issue #15)"
        if not check["points"]:
            rows.append(_not_measured(row_use, paper, "no oracle point measured"))
            continue
        top = f"best oracle point `{check['top']}` {_interval(*check['top_interval'])}"
        shape = "" if check["is_monotone"] is None else f"{dose_response_shape(check)} over "
        control = ("each point against the random control's arm on the same users"
                   if check["metric"].startswith("ab_info_") else
                   "random control not measured" if check["control_interval"] is None else
                   f"random control {_interval(*check['control_interval'])} "
                   + ("covers 0" if check["control_covers_zero"] else "**excludes 0**"))
        rows.append(VerdictRow(row_use, f"{shape}{check['points']} oracle point(s); {top}", paper, control,
                               *dose_response_verdict(check, top)))
    return rows


def sweep_row(run: RunFolder) -> VerdictRow:
    """Paper 4.5.1: the first quota whose advertiser diversity drops significantly (`concentration_quota`)."""
    use, paper = "Quota sweep: over-concentration (paper 4.5.1)", "no figure: too large a quota over-concentrates"
    record = run.stage_record("sweep")
    if record is None or "concentration_quota" not in record["summary"]:
        return _not_measured(use, paper, "no `sweep` stage" if record is None else "no concentration quota recorded")
    summary = record["summary"]
    quotas = ", ".join(map(str, record["config"].get("quotas", [])))
    quota = summary["concentration_quota"]
    measured = (f"first quota whose diversity drops: {quota}" if quota is not None else
                f"no quota over-concentrates (quotas {quotas}, each against the first)")
    treated = [arm for arm in summary.get("exposure", {}).values() if arm.get("is_treatment_measured") is not None]
    flagged = sum(arm["is_treatment_measured"] is False for arm in treated)
    reach = f"{flagged} of {len(treated)} treatment arms flagged by exposure"
    checks = f"{_srm_check(summary.get('srm'))}; {reach}"
    if treated and flagged == len(treated):
        return VerdictRow(use, measured, paper, checks, NOT_MEASURING, reach)
    if (summary.get("srm") or {}).get("is_mismatch"):
        return VerdictRow(use, measured, paper, checks, NOT_TRUSTWORTHY, "sample-ratio mismatch")
    return VerdictRow(use, measured, paper, checks, MEASURED,
                      f"concentration quota {quota}" if quota is not None else "no quota over-concentrates")


def verdict_rows(run: RunFolder) -> list[VerdictRow]:
    """Every use's verdict row, in the order of the report's sections."""
    return [recall_row(run.root), *[lift_row(run.root, task) for task in LIFT_TASKS], *ab_rows(run),
            *dose_response_rows(run), sweep_row(run)]


LESSONS = {MEASURED: "Learnt", TOO_THIN: "Too thin to say", NOT_MEASURING: "Not measuring the treatment, so no result",
           NOT_TRUSTWORTHY: "Not trustworthy", NOT_MEASURED: "Not measured"}


def lessons(rows: list[VerdictRow]) -> list[str]:
    """At most one bullet per verdict, from the rows: what was learnt (beside the paper), what was too thin to
    say and why, what gave no result, what did not run."""
    lines = []
    for verdict in VERDICTS:
        matching = [f"{row.use}: {row.detail}; paper {row.paper}" if verdict == MEASURED else
                    f"{row.use} — {row.detail}" if row.detail else row.use for row in rows if row.verdict == verdict]
        if matching:
            lines.append(f"- **{LESSONS[verdict]}**: " + "; ".join(matching) + ".")
    return lines


def markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows]]


def verdict_section(run: RunFolder, unmeasured: list[str]) -> list[str]:
    """The report's opening: the verdict table, the lessons drawn from its rows, and the demo steps that stopped."""
    rows = verdict_rows(run)
    return ["## Verdict", "",
            ("Each use of the advertiser lists: what this run measured (95% intervals) beside the paper's figure, the "
             "checks that decide whether it says anything (labels, test positives and MDE at 80% power, "
             "sample-ratio mismatch, the treatment's exposure; the A/A rate is shown beside them) and the verdict "
             "they give. The sections below hold the full tables; timings and LLM training are in the appendix."), "",
            *markdown_rows(["Use", "This run", "Paper", "Checks", "Verdict"],
                           [[row.use, row.measured, row.paper, row.checks, f"**{row.text}**"] for row in rows]),
            "", *lessons(rows), "",
            *([f"Not measured (the data were too thin; the demo log gives the error): {', '.join(unmeasured)}.", ""]
              if unmeasured else [])]


def _world_section(run: RunFolder) -> str:
    record = run.stage_record("world")
    if record is None:
        return "_world stage missing_"
    summary = record["summary"]
    rows = markdown_rows(["table", "rows"], [[name, f"{count:,}"] for name, count in summary["rows"].items()])
    coverage = markdown_rows(["anchor date", "labelled users", "share", "V0", "V1"], [
        [c["anchor_date"], f"{c['labelled_users']:,}", f"{c['share_of_users']:.1%}", f"{c['v0']:,}", f"{c['v1']:,}"]
        for c in summary["label_coverage"]])
    mix = ", ".join(f"{k} {v:.1%}" for k, v in summary["conversion_mechanism_mix"].items())
    return "\n".join([*rows, "", *coverage, "",
                      f"Conversion mechanisms in the world's truth: {mix} (docs/world.md).",
                      f"Generated in {summary.get('seconds', 0):.1f} s."])


def _value(summary: dict, key: str, form: str) -> str:
    value = summary.get(key)
    return "n/a" if _is_missing(value) else format(value, form)


def plot_losses(curves: dict[str, list[float]], path: Path) -> Path:
    """One PNG, a panel per LLM training stage (`curves`: {panel title: losses}): its logged training loss against
    the logged point (the trainer logs evenly over the stage's steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
    for axis, (stage, losses) in zip(axes[0], curves.items()):
        axis.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
        axis.set(title=stage, xlabel="logged point", ylabel="training loss")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(figure, path)


def _llm_training_summaries(run: RunFolder) -> dict[str, dict]:
    """{stage: summary} of the LLM training stages the run completed."""
    records = {stage: run.stage_record(stage) for stage in LLM_TRAINING_STAGES}
    return {stage: record["summary"] for stage, record in records.items() if record is not None}


def llm_training_section(run: RunFolder) -> list[str]:
    """The LLM stages' loss curves (plots/llm_training_loss.png) and one table row per training stage, then one
    per prediction stage; empty without LLM stages."""
    trained = _llm_training_summaries(run)
    lines = []
    curves = {f"{stage} ({_value(summary, 'steps', ',')} steps)": summary["losses"]
              for stage, summary in trained.items() if summary.get("losses")}
    if curves:
        plot = plot_losses(curves, run.root / "plots" / "llm_training_loss.png")
        lines += [f"![llm_training_loss]({plot.relative_to(run.root)})", ""]
    behaviour = run.root / "llm_behaviour" / "loss_curves.png"
    if behaviour.exists():
        lines += ["Behaviour-sequence CPT, train and validation loss (held-out train users):", "",
                  f"![llm_behaviour_loss]({behaviour.relative_to(run.root)})", ""]
    rewards = run.root / "llm_grpo" / "reward_curves.png"
    if rewards.exists():
        lines += ["GRPO (names policy), mean reward of the sampled and the greedy lists, each batch scored before "
                  "the model trains on it:", "", f"![llm_grpo_rewards]({rewards.relative_to(run.root)})", ""]
    return lines + llm_training_tables(run)  # a plot means a training stage, so the tables are never empty


def llm_training_tables(run: RunFolder) -> list[str]:
    """One table row per LLM training stage (steps, first and last loss, tokens/s and their share of the bf16
    ceiling, seconds), then one per prediction stage (users, prompts, parse, exact-count and unmapped rates,
    seconds), read from their stage records; `_no LLM stages_` without any."""
    trained = _llm_training_summaries(run)
    lines = []
    if trained:
        lines += [*markdown_rows(["stage", "steps", "first loss", "last loss", "tokens/s", "share of bf16 ceiling",
                                  "seconds"], [
            [f"`{stage}`", _value(s, "steps", ","), _value(s, "first_loss", ".3f"), _value(s, "last_loss", ".3f"),
             _value(s, "tokens_per_second", ",.0f"), _value(s, "share_of_bf16_ceiling", ".1%"),
             _value(s, "seconds", ".1f")] for stage, s in trained.items()]), ""]
    predicted = {path.parent.name: json.loads(path.read_text())["summary"]
                 for path in sorted(run.root.glob("llm_predict_*/stage.json"))}
    if predicted:
        lines += [*markdown_rows(["prediction stage", "users", "prompts", "parse rate", "exact-count rate",
                                  "unmapped rate", "seconds"], [
            [f"`{stage}`", _value(s, "users", ","), _value(s, "prompts", ","), _value(s, "parse_rate", ".1%"),
             _value(s, "exact_count_rate", ".1%"), _value(s, "unmapped_rate", ".1%"), _value(s, "seconds", ".1f")]
            for stage, s in predicted.items()]), ""]
    return lines or ["_no LLM stages_", ""]


def _nest_under_section(markdown: str) -> str:
    """A stage's report under the report's section heading (##): its own title, when it opens with one, gives
    way to the section's, and its other headings nest below (their top level becomes ###)."""
    lines = markdown.strip("\n").splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    levels = [len(line) - len(line.lstrip("#")) for line in lines if line.startswith("#")]
    shift = 3 - min(levels, default=3)
    return "\n".join(("#" * (len(line) - len(line.lstrip("#")) + shift) + line.lstrip("#")) if line.startswith("#")
                     else line for line in lines)


IMAGE_LINK = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")


def rebase_links(markdown: str, folder: Path, root: Path) -> str:
    """A stage report's relative image links (relative to its own `folder`) made relative to `root`, where
    the run's report embeds it."""
    def rebase(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or os.path.isabs(target):
            return match.group(0)
        return match.group(1) + os.path.relpath(os.path.normpath(folder / target), root) + match.group(3)

    return IMAGE_LINK.sub(rebase, markdown)


def write_report(root: Path, timings: list[tuple[str, float]], unmeasured: list[str] = ()) -> Path:
    """Write `<root>/report.md` from the stage outputs found in the run folder (and
    `<root>/plots/llm_training_loss.png` when an LLM stage logged losses); returns the report's path."""
    run = RunFolder(root)
    manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").exists() else {}
    parts = [f"# adsim report: `{root.name}`", "",
             (f"Git revision `{manifest.get('git_revision')}`; configs, seeds and package versions in "
              "[manifest.json](manifest.json). Every figure below was measured by this run's stages; "
              "re-running `adsim demo` skips the completed ones."), "",
             *verdict_section(run, list(unmeasured)),
             "## The world", "", _world_section(run), ""]
    for title, relative, is_expected in SECTIONS:
        path = root / relative
        if path.exists():
            parts += [f"## {title}", "", _nest_under_section(rebase_links(path.read_text(), path.parent, root)), ""]
        elif is_expected:
            parts += [f"## {title}", "", f"_not produced: {relative} is missing_", ""]
    appendix = ["## Appendix", "", "### Stage timings", "",
                *markdown_rows(["stage", "seconds"], [[name, f"{seconds:.1f}"] for name, seconds in timings]
                               + [["**total**", f"{sum(s for _, s in timings):.1f}"]]), "",
                "### LLM training and predictions", "", *llm_training_section(run)]
    shown = "\n".join(parts + appendix)
    plots = sorted((root / "plots").glob("*.png")) if (root / "plots").exists() else []
    unshown = [plot for plot in plots if f"plots/{plot.name}" not in shown]
    if unshown:
        parts += ["## Other plots", "", *[f"![{p.stem}](plots/{p.name})" for p in unshown], ""]
    report = root / "report.md"
    report.write_text("\n".join(parts + appendix))
    return report

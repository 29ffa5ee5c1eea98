"""`report.md` of a run: the measured analogues of the paper's Tables 2-6, stage by stage, with plots.

It only gathers what the stages wrote (their markdown sections and stage records); every number in
the report was measured by a stage of this run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthetic_data.run_folder import RunFolder

# (title, stage folder file, what it is the analogue of)
SECTIONS = (
    ("Advertiser prediction on V0 and V1 (paper Tables 2 and 3)", "llm_eval/results.md"),
    ("Feature ablation (paper Table 4)", "llm_eval/ablation.md"),
    ("Retrieval: two-tower objectives and generators (paper 4.5.1)", "retrieval_compare/objectives.md"),
    ("Conversion models with LLM features (paper Table 5)", "ranking_eval/table5.md"),
    ("Conversion models with most-recent-advertiser lists of the same users (Table 5 control)",
     "ranking_eval_recent/table5.md"),
    ("Online A/B on the simulated market (paper Table 6)", "ab/report.md"),
    ("L0 quota sweep of the LLM candidate generator (paper 4.5.1)", "sweep/report.md"),
)


def _demote_headings(markdown: str) -> str:
    """Nest a stage's own headings under the report's section heading."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def _world_section(run: RunFolder) -> str:
    record = run.stage_record("world")
    if record is None:
        return "_world stage missing_"
    summary = record["summary"]
    rows = ["| table | rows |", "|---|---|"] + [f"| {k} | {v:,} |" for k, v in summary["rows"].items()]
    coverage = ["| anchor date | labelled users | share | V0 | V1 |", "|---|---|---|---|---|"] + [
        f"| {c['anchor_date']} | {c['labelled_users']:,} | {c['share_of_users']:.1%} | {c['v0']:,} | {c['v1']:,} |"
        for c in summary["label_coverage"]]
    mix = ", ".join(f"{k} {v:.1%}" for k, v in summary["conversion_mechanism_mix"].items())
    return "\n".join([*rows, "", *coverage, "",
                      f"Conversion mechanisms in the world's truth: {mix} (docs/world.md).",
                      f"Generated in {summary.get('seconds', 0):.1f} s."])


def _llm_training_section(run: RunFolder) -> str:
    lines = []
    for stage in ("llm_pretrain", "llm_sft_single", "llm_sft_list", "llm_grpo",
                  "llm_predict_grpo_constrained_serving", "llm_predict_grpo_constrained_heldout"):
        record = run.stage_record(stage)
        if record is None:
            continue
        shown = {k: v for k, v in record["summary"].items() if not isinstance(v, (list, dict))}
        lines.append(f"- `{stage}`: " + ", ".join(f"{k} = {v}" for k, v in shown.items()))
    return "\n".join(lines) or "_no LLM training stages_"


def write_report(root: Path, timings: list[tuple[str, float]], unmeasured: list[str] = ()) -> Path:
    """Write `<root>/report.md` from the stage outputs found in the run folder."""
    run = RunFolder(root)
    manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").exists() else {}
    parts = [f"# adsim report: `{root.name}`", "",
             f"Git revision `{manifest.get('git_revision')}`; configs, seeds and package versions in "
             "[manifest.json](manifest.json). Every figure below was measured by this run's stages; "
             "re-running `adsim demo` skips the completed ones.", "",
             "## Stage timings", "", "| stage | seconds |", "|---|---|",
             *[f"| {name} | {seconds:.1f} |" for name, seconds in timings],
             f"| **total** | {sum(s for _, s in timings):.1f} |", "",
             *([f"Not measured (the data were too thin; the demo log gives the error): {', '.join(unmeasured)}.", ""]
               if unmeasured else []),
             "## The world", "", _world_section(run), "",
             "## LLM training", "", _llm_training_section(run), ""]
    for title, relative in SECTIONS:
        path = root / relative
        body = _demote_headings(path.read_text()) if path.exists() else f"_not produced: {relative} is missing_"
        parts += [f"## {title}", "", body, ""]
    plots = sorted((root / "plots").glob("*.png")) if (root / "plots").exists() else []
    if plots:
        parts += ["## Plots", "", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
    report = root / "report.md"
    report.write_text("\n".join(parts))
    return report

"""Two runs of one world, each trained by its own recipe (e.g. `tokenizer.advertiser_tokens` on and off): each
method's Recall@K difference on the same labels, paired (`adsim llm compare`). The results tables of two runs
give each recipe its own Wilson intervals; the question is their difference, on the users both predicted.

A stage's generations are read where it wrote them, from finished work only (`llm_eval` and `llm_choice`: every
epoch of `generations/<method>/`, `predict.read_generations`; a recorded `llm_predict_*` stage: its
`generations.parquet`) and converted to advertisers as `llm eval` converts them. The labels
are the world's V1 labels at the (user, anchor) pairs both runs were asked for (an output that names no
advertiser is a miss), so a method that generates text for a sample of users is compared on that sample.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llm_predictor.baselines import KEYS

GENERATION_STAGES = ("llm_eval", "llm_choice")


def stage_generations(run_root: Path, stage: str, method: str) -> pl.DataFrame:
    """The generations (user_id, anchor_date, text[, rank]) of `method` that `stage` of the run wrote: every
    requested pair, with or without a name that maps to an advertiser. Raises FileNotFoundError naming the command
    that writes them, ValueError for another stage."""
    from llm_predictor.predict import read_generations
    from synthetic_data.run_folder import RunFolder

    if stage.startswith("llm_predict_"):
        record = RunFolder(run_root).stage_record(stage)
        if record is None:
            raise FileNotFoundError(f"{Path(run_root) / stage} holds no finished stage: run `adsim llm predict --run "
                                    f"{run_root}` for that method and users first")
        if record["config"]["method"] != method:
            raise ValueError(f"{Path(run_root) / stage} holds {record['config']['method']}'s predictions, not "
                             f"{method}'s: pass --method {record['config']['method']}, or the stage folder of {method}")
        return pl.read_parquet(Path(run_root) / stage / "generations.parquet")
    if stage not in GENERATION_STAGES:
        raise ValueError(f"stage {stage!r}: name one of {list(GENERATION_STAGES)} or a llm_predict_* stage folder")
    directory = Path(run_root) / stage / "generations" / method
    if not (directory / "epochs.json").exists():
        command = "eval" if stage == "llm_eval" else "choose"
        raise FileNotFoundError(f"{directory} holds no generations: run `adsim llm {command} --run {run_root}` with "
                                f"{method} among its methods first")
    return read_generations(directory)


def compare_runs(run_root: Path, reference_root: Path, stage: str, methods: list[str], config) -> pl.DataFrame:
    """One row per method: its Recall@K in `run_root` minus that in `reference_root` (each K of
    `config.eval.evaluation.ks`) on the V1 labels of the (user, anchor) pairs both runs' `stage` predicted, with
    `evaluate.paired_effects_table`'s interval (Tango's; a bootstrap over users when a user has several labels).
    Raises FileNotFoundError for a folder without world/, ValueError when the runs hold different worlds or share
    no labelled pair."""
    from llm_predictor import evaluate
    from llm_predictor.stages import check_run_folder, run_world, upstream_hash
    from synthetic_data.run_folder import RunFolder

    for root in (run_root, reference_root):
        check_run_folder(root)
    world_hash, reference_hash = (upstream_hash(RunFolder(root), "world") for root in (run_root, reference_root))
    if world_hash != reference_hash:
        raise ValueError(f"{run_root} (world {world_hash}) and {reference_root} (world {reference_hash}) hold "
                         "different worlds; compare runs of one world, e.g. a copy of its world/ folder trained "
                         "with another config")
    world = run_world(run_root)
    rows = []
    for method in methods:
        generations = {"run": stage_generations(run_root, stage, method),
                       "reference": stage_generations(reference_root, stage, method)}
        # the pairs both runs were asked for, kept whether or not a run's output named an advertiser (a miss)
        both = generations["run"].select(KEYS).unique().join(generations["reference"].select(KEYS).unique(), on=KEYS)
        predictions, _ = evaluate.generation_predictions(world, generations, config.eval.evaluation)
        labels = world.labels.filter(pl.col("in_v1")).join(both, on=KEYS, how="semi").select(*KEYS, "advertiser_id")
        if labels.is_empty():
            raise ValueError(f"{method}: the two runs' {stage} predictions share no labelled (user, anchor) pair")
        table = evaluate.paired_effects_table([("run", "reference")], predictions, labels.sort(KEYS),
                                              config.eval.evaluation)
        rows.append(table.with_columns(method=pl.lit(method), run=pl.lit(str(run_root)),
                                       reference=pl.lit(str(reference_root))))
    table = pl.concat(rows)
    return table.select("method", "run", "reference", *[c for c in table.columns
                                                         if c not in ("method", "run", "reference")])

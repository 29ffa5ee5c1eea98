"""The served method, chosen on validation users (issue 14): every candidate method predicts the held-out
train users (`behaviour.validation_users`, never eval users) at every label anchor, and the one with the
best validation Recall@K serves (`adsim llm predict --method chosen`, the demo's lists and nightly job).

Candidates default to the ranked methods: ~5 ms a user on 2 cores for the sequence model with bounded name
ranking (`name_ranking.py`; the demo's name-constrained GRPO lists took ~0.2 s), so the demo serves every
serving user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synthetic_data.config_io import ConfigError, require, to_dict

CHOSEN = "chosen"  # the method name that stands for the run's choice


@dataclass(frozen=True)
class ChoiceConfig:
    """The candidate methods and the validation Recall@K that picks among them (ties: the first listed)."""

    methods: tuple[str, ...] = ("behaviour_ranked", "behaviour_ranked_open", "sft_single_ranked",
                                "sft_single_ranked_open", "grpo_ranked", "grpo_ranked_open")
    k: int = 20

    def __post_init__(self) -> None:
        from llm_predictor.config import METHODS

        unknown = sorted(set(self.methods) - set(METHODS))
        require(self.methods and not unknown, "choice.methods",
                f"name method(s) of {sorted(METHODS)}; unknown: {unknown}")
        require(self.k >= 1, "choice.k", "must be >= 1")


def validation_labels(world_tables, config) -> pl.DataFrame:
    """(user_id, anchor_date, advertiser_id) of the validation users' labels: in V1 at every label anchor on a
    synthetic world (no training stage sees these users at any anchor; the demo world's 600 validation users
    have 492 such labels, against 134 at the evaluation anchor alone); the validation-role labels on a
    leave-one-out world."""
    from llm_predictor.behaviour import is_leave_one_out, validation_users

    labels = world_tables.labels
    if is_leave_one_out(world_tables):
        chosen = labels.filter(pl.col("role") == "validation")
    else:
        users = validation_users(world_tables, config.behaviour.validation_users, config.seed)
        chosen = labels.join(users, on="user_id", how="semi").filter(pl.col("in_v1"))
    if chosen.is_empty():
        raise ValueError("no validation label to choose a method on: raise behaviour.validation_users")
    return chosen.select("user_id", "anchor_date", "advertiser_id").sort("user_id")


def validation_baselines(world_tables, labels: pl.DataFrame, config) -> dict[str, pl.DataFrame]:
    """The non-LLM baselines on the validation labels' (user, anchor) pairs, to show beside the candidates
    (they are never chosen): most recent (and restricted to the paper prompt's allowed names, the `allowed`
    rule's yardstick) and the LightGBM pair ranker on the prompt's inputs, fit on train labels without the
    validation users (so that it is not scored on its own training labels)."""
    from llm_predictor import evaluate
    from llm_predictor.baselines import BaselineConfig, most_recent_predictions
    from llm_predictor.predict import build_prompts

    keys = labels.select("user_id", "anchor_date").unique(maintain_order=True)
    recent = most_recent_predictions(world_tables, keys, BaselineConfig())
    allowed = build_prompts(world_tables, keys, config.features, config.preset_pool_size, "inference")  # as llm eval
    return {
        "most_recent": recent,
        "most_recent_allowed": evaluate.restricted_to_allowed(recent, allowed, "most_recent_allowed"),
        "lightgbm_pairs_prompt": validation_pair_ranker(world_tables, config).predict(world_tables, keys),
    }


def validation_pair_ranker(world_tables, config):
    """The LightGBM pair ranker on the prompt's inputs, fit on train labels without the validation users (so that
    it is never scored on its own training labels there)."""
    from dataclasses import replace

    from llm_predictor import evaluate
    from llm_predictor.baselines import BaselineConfig, PairRanker
    from llm_predictor.behaviour import validation_users

    held_out = validation_users(world_tables, config.behaviour.validation_users, config.seed)
    train = evaluate.labelled_users(world_tables, "train").join(held_out, on="user_id", how="anti")
    return PairRanker(replace(BaselineConfig(), inputs="prompt")).fit(world_tables, train)


def baseline_pairs(methods) -> list[tuple[str, str]]:
    """(candidate, baseline) pairs: an `open` method against most recent and the prompt-input LightGBM, an
    `allowed` one against most recent restricted to the same allowed names (issue 14's yardsticks)."""
    from llm_predictor.config import METHODS

    return [(name, reference) for name in methods for reference in
            (("most_recent", "lightgbm_pairs_prompt") if METHODS[name].rule == "open" else ("most_recent_allowed",))]


def chosen_method(run) -> str:
    """The method `adsim llm choose` picked for `run` (a RunFolder). Raises ConfigError before it has run."""
    record = run.stage_record("llm_choice")
    if record is None:
        raise ConfigError(f"method {CHOSEN!r} needs `adsim llm choose --run {run.root}` first")
    return record["summary"]["method"]


def resolve_method(run, name: str) -> str:
    """`name`, or for `chosen` the method the run's choice recorded (`chosen_method`)."""
    return chosen_method(run) if name == CHOSEN else name


def stage_choose(run_root: Path, config, force: bool, show_progress: bool) -> dict:
    """Predict the validation users with each `choice.methods` method, tabulate their Recall@K
    (`llm_choice/choice.md`) and record the best as the run's chosen method."""
    from synthetic_data.run_folder import RunFolder

    from llm_predictor import evaluate
    from llm_predictor.behaviour import is_leave_one_out
    from llm_predictor.config import MODEL_STAGES, METHODS
    from llm_predictor.stages import generate_method, run_stage, run_world, upstream_hash

    run = RunFolder(run_root)
    models = sorted({METHODS[name].model for name in config.choice.methods})
    stage_config = {"upstream": {m: upstream_hash(run, MODEL_STAGES[m]) for m in models}, "labels": "v1_every_anchor",
                    "choice": to_dict(config.choice), "behaviour": to_dict(config.behaviour), "seed": config.seed,
                    "predict": to_dict(config.predict), "features": to_dict(config.features),
                    "preset_pool_size": config.preset_pool_size}

    def work(directory: Path):
        world = run_world(run_root)
        labels = validation_labels(world, config)
        keys = labels.select("user_id", "anchor_date")
        generations = {name: generate_method(run, world, config, METHODS[name], keys, directory / "generations" / name,
                                             show_progress) for name in config.choice.methods}
        predictions, counts = evaluate.generation_predictions(world, generations, config.eval.evaluation)
        has_baselines = not is_leave_one_out(world)  # real data: its baselines are `adsim real`'s
        if has_baselines:
            predictions |= validation_baselines(world, labels, config)
        table = evaluate.results_table(predictions, {"validation": labels}, config.eval.evaluation, counts)
        column = f"recall_at_{config.choice.k}"
        if column not in table.columns:
            raise ConfigError(f"choice.k={config.choice.k} is not one of eval.ks {config.eval.evaluation.ks}")
        scores = dict(zip(table["method"], table[column]))
        best = max(config.choice.methods, key=lambda name: (scores[name], -config.choice.methods.index(name)))
        outputs = [path.name for path in evaluate.write_table(
            table, directory, "choice", f"Method choice: {labels.height} validation users (held-out train users), "
                                        f"chosen by Recall@{config.choice.k}: {best}")]
        if has_baselines:
            effects = evaluate.paired_effects_table(baseline_pairs(config.choice.methods), predictions, labels,
                                                    config.eval.evaluation)
            outputs += [path.name for path in evaluate.write_table(
                effects, directory, "choice_baselines",
                f"Candidates against the non-LLM baselines on the same {labels.height} validation labels")]
        return outputs, {"method": best, "validation_labels": labels.height,
                         f"validation_{column}": {name: round(scores[name], 4) for name in config.choice.methods}}

    return run_stage(run, "llm_choice", stage_config, work, force)

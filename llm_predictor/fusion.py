"""Is the LLM complementary to the strongest non-LLM learner? (The paper's claim: a complementary predictor.)

The LLM method's top-20 list and the prompt-input LightGBM pair ranker's are merged by weighted reciprocal-rank
fusion (Cormack, Clarke & Büttcher 2009: an advertiser scores w / (k + its LLM rank) + (1 - w) / (k + its LightGBM
rank), a list it is absent from adds 0), and the fused top 20 is compared with LightGBM's own list. The weight w
is chosen on validation labels (held-out train users at every anchor; `choice.validation_labels`) and the
comparison is made on the eval users' V1 labels at every anchor, paired, with a bootstrap over users. Beside it:
a negative control, the same fusion with another user's LLM list at the same anchor (the LLM's user-specific
information removed, its list shape and popularity kept), and a positive control, an oracle list naming the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data.config_io import require, to_dict

from llm_predictor.baselines import KEYS

REFERENCE = "lightgbm_pairs_prompt"


@dataclass(frozen=True)
class FusionConfig:
    """The fused method, reciprocal-rank fusion's constant k (60: Cormack et al.) and the LLM weights tried on
    validation labels (0: LightGBM's list alone, 1: the LLM's)."""

    method: str = "chosen"
    k: float = 60.0
    weights: tuple[float, ...] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2).tolist())
    seed: int = 0  # the negative control's shuffle

    def __post_init__(self) -> None:
        from llm_predictor.choice import CHOSEN
        from llm_predictor.config import ranked_methods

        ranked = ranked_methods()
        require(self.method == CHOSEN or self.method in ranked, "fusion.method",
                f"{self.method!r} has no ranked list to fuse: use {CHOSEN!r} or one of {ranked}")
        require(self.k > 0, "fusion.k", "must be > 0")
        outside = [w for w in self.weights if not 0 <= w <= 1]
        require(len(self.weights) > 0 and not outside, "fusion.weights",
                f"every weight must lie in [0, 1] (0: LightGBM's list alone, 1: the LLM's); got {outside or 'none'}")


def fuse(partner: pl.DataFrame, reference: pl.DataFrame, weight: float, k: float, top: int = 20) -> pl.DataFrame:
    """The top `top` of weighted reciprocal-rank fusion of two PREDICTIONS lists per (user_id, anchor_date), over the
    union of their advertisers (a list of weight 0 adds none): (user_id, anchor_date, advertiser_id, rank); ties go
    to the smaller advertiser_id."""
    scored = pl.concat([
        partner.select(*KEYS, "advertiser_id", (weight / (k + pl.col("rank"))).alias("score")),
        reference.select(*KEYS, "advertiser_id", ((1 - weight) / (k + pl.col("rank"))).alias("score")),
    ]).filter(pl.col("score") > 0).group_by(*KEYS, "advertiser_id").agg(pl.col("score").sum())  # weight 0: no list
    return (scored.sort([*KEYS, "score", "advertiser_id"], descending=[False, False, True, False])
            .with_columns(rank=(pl.int_range(pl.len()).over(KEYS) + 1).cast(pl.Int32))
            .filter(pl.col("rank") <= top).drop("score"))


def choose_weight(partner: pl.DataFrame, reference: pl.DataFrame, labels: pl.DataFrame, config: FusionConfig,
                  top: int) -> tuple[float, dict[float, float]]:
    """The weight of `config.weights` whose fused list has the highest Recall@`top` on `labels` (ties: the smaller
    weight, the one nearer LightGBM alone), and each weight's Recall@`top`."""
    from llm_predictor.metrics import recall_at_k

    recall = {w: recall_at_k(fuse(partner, reference, w, config.k, top), labels, (top,))[top] for w in config.weights}
    return max(config.weights, key=lambda w: (recall[w], -w)), recall


def other_users_lists(predictions: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Negative control: each (user_id, anchor_date) gets the list of another request at the same anchor (a seeded
    permutation of the anchor's users), so lists keep their shape and popularity but not their user."""
    keys = predictions.select(KEYS).unique().sort(KEYS)
    rng = np.random.default_rng(seed)
    donors = pl.concat([group.with_columns(donor=pl.Series(rng.permutation(group["user_id"].to_numpy()),
                                                           dtype=group["user_id"].dtype))
                        for group in keys.partition_by("anchor_date", maintain_order=True)])
    return (predictions.rename({"user_id": "donor"}).join(donors, on=["donor", "anchor_date"]).drop("donor")
            .select(predictions.columns))


def oracle_list(labels: pl.DataFrame) -> pl.DataFrame:
    """Positive control: a one-name list naming each label."""
    return labels.select(*KEYS, "advertiser_id", rank=pl.lit(1, dtype=pl.Int32))


def fusion_table(partners: dict[str, tuple[pl.DataFrame, pl.DataFrame]], reference: tuple[pl.DataFrame, pl.DataFrame],
                 validation: pl.DataFrame, evaluation: pl.DataFrame, config: FusionConfig, eval_config,
                 top: int = 20) -> pl.DataFrame:
    """One row per partner ({name: (validation lists, eval lists)}): the weight chosen on `validation`, the fused
    and LightGBM-alone Recall@`top` on `validation` and on `evaluation`, and the fused list's Recall@K minus
    LightGBM's on `evaluation` (`evaluate.paired_effects_table`: a bootstrap over users when a user has several
    labels)."""
    from llm_predictor.evaluate import paired_effects_table
    from llm_predictor.metrics import recall_at_k

    alone = [recall_at_k(lists, labels, (top,))[top] for lists, labels in zip(reference, (validation, evaluation))]
    rows = []
    for name, (partner_validation, partner_eval) in partners.items():
        weight, recall = choose_weight(partner_validation, reference[0], validation, config, top)
        fused = fuse(partner_eval, reference[1], weight, config.k, top)
        effect = paired_effects_table([(name, REFERENCE)], {name: fused, REFERENCE: reference[1]}, evaluation,
                                      eval_config)
        rows.append(effect.with_columns(weight=pl.lit(weight), **{
            f"validation_recall_at_{top}": pl.lit(recall[weight]),
            f"validation_recall_at_{top}_{REFERENCE}": pl.lit(alone[0]),
            f"recall_at_{top}": pl.lit(recall_at_k(fused, evaluation, (top,))[top]),
            f"recall_at_{top}_{REFERENCE}": pl.lit(alone[1])}))
    table = pl.concat(rows)
    return table.select("method", "weight", pl.exclude("method", "weight"))


def stage_fusion(run_root: Path, config, force: bool, show_progress: bool) -> dict:
    """`adsim llm fuse`: `llm_fusion/fusion.{parquet,md}` (see the module docstring)."""
    from synthetic_data.run_folder import RunFolder

    from llm_predictor import evaluate
    from llm_predictor.choice import resolve_method, validation_labels, validation_pair_ranker
    from llm_predictor.config import MODEL_STAGES, METHODS
    from llm_predictor.stages import every_anchor_labels, generate_method, run_stage, run_world, upstream_hash

    run = RunFolder(run_root)
    fusion = config.fusion
    method = resolve_method(run, fusion.method)
    stage_config = {"method": method, "upstream": upstream_hash(run, MODEL_STAGES[METHODS[method].model]),
                    "fusion": to_dict(fusion), "choice_k": config.choice.k, "behaviour": to_dict(config.behaviour),
                    "predict": to_dict(config.predict), "features": to_dict(config.features),
                    "preset_pool_size": config.preset_pool_size, "seed": config.seed}

    def work(directory: Path):
        world = run_world(run_root)
        validation = validation_labels(world, config)
        evaluation = every_anchor_labels(world)
        sets = {"validation": validation, "eval": evaluation}
        keys = {name: labels.select(KEYS).unique().sort(KEYS) for name, labels in sets.items()}
        ranker = validation_pair_ranker(world, config)  # one fit predicts both label sets
        reference = tuple(ranker.predict(world, keys[name]) for name in sets)
        llm = tuple(evaluate.generation_predictions(world, {method: generate_method(
            run, world, config, METHODS[method], keys[name], directory / "generations" / name, show_progress)},
            config.eval.evaluation)[0][method] for name in sets)
        partners = {method: llm,
                    "other users' lists (negative control)": tuple(other_users_lists(p, fusion.seed) for p in llm),
                    "oracle (positive control)": tuple(oracle_list(labels) for labels in sets.values())}
        table = fusion_table(partners, reference, validation, evaluation, fusion, config.eval.evaluation,
                             config.choice.k)
        title = (f"`{method}` fused with LightGBM on the prompt's inputs (reciprocal-rank fusion, k = {fusion.k:g}; "
                 f"weight chosen on {validation.height} validation labels): V1 Recall@K minus LightGBM's on the same "
                 f"{evaluation.height} eval labels at every anchor")
        outputs = [path.name for path in evaluate.write_table(table, directory, "fusion", title)]
        row = table.row(0, named=True)
        k = config.choice.k
        return outputs, {"method": method, "weight": row["weight"], f"delta_recall_at_{k}": round(
            row[f"delta_recall_at_{k}"], 4), f"delta_recall_at_{k}_interval": [
            round(row[f"delta_recall_at_{k}_low"], 4), round(row[f"delta_recall_at_{k}_high"], 4)]}

    return run_stage(run, "llm_fusion", stage_config, work, force)

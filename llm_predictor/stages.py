"""The `adsim llm` stages over a run folder: tokenizer and base model, CPT, SFT, SID, GRPO, predict, eval.

Each `stage_*` function writes `runs/NAME/llm_<stage>/` and skips when its outputs exist with an unchanged
config and unchanged upstream stages (`run_stage`); `predict_users` is the prediction path the market's
nightly job and the controls share. Heavy imports stay inside the functions, so that importing the CLI
stays light.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from llm_predictor.config import MODEL_STAGES, SFT_TEMPLATES, LLMConfig, Method, METHODS
from llm_predictor.decoding import DecodingConfig
from llm_predictor.features import GROUPS, FeatureConfig
from synthetic_data.config_io import ConfigError, to_dict
from synthetic_data.run_folder import config_hash

console = Console()
KEYS = ["user_id", "anchor_date"]  # one prediction request: a user at a label anchor
CEILING = "next_conversion_ceiling"  # Table 3's reference on a generated world: the labels' own distribution
CEILING_BASELINES = ("most_recent", "lightgbm_pairs", "lightgbm_pairs_prompt")  # set beside it with the LLM methods


def check_run_folder(run_root: Path) -> None:
    """Raise FileNotFoundError naming the fix when `run_root` holds no world/ (it is not a run folder)."""
    if not (Path(run_root) / "world").is_dir():
        raise FileNotFoundError(f"{run_root} is not a run folder (it has no world/): name a run that `adsim world`, "
                                "`adsim real world` or `make demo` wrote")


def run_world(run_root: Path):
    """The run's world without its hidden *_truth tables (models never read them)."""
    from synthetic_data.schema import load_world

    return load_world(run_root / "world", include_truth=False)


def upstream_hash(run, stage: str) -> str:
    """The config hash of a stage this one depends on (so that a change upstream re-runs it)."""
    record = run.stage_record(stage)
    if record is None and stage == "world":
        return "unrecorded"  # a world folder written without `adsim world` (e.g. by a test fixture)
    if record is None:
        raise ConfigError(f"stage {stage} has not run in {run.root}; run it first (see `adsim llm --help`)")
    return record["config_hash"]


def run_stage(run, stage: str, stage_config: dict, work, force: bool) -> dict:
    """Skip a stage that finished with this config, else do `work()` and record it. A stage folder
    left by an interrupted run of the same config is kept (its checkpoints resume); one left by
    another config is cleared first, so no stale checkpoint is resumed."""
    if not force and run.is_complete(stage, stage_config):
        console.print(f"[green]{stage}: complete with this config; skipping[/green]")
        return run.stage_record(stage)["summary"]
    directory = run.stage_dir(stage)
    pending = directory / "pending_config_hash"
    wanted = config_hash(stage_config)
    if force or not pending.exists() or pending.read_text() != wanted:
        shutil.rmtree(directory)
        directory.mkdir(parents=True)
        pending.write_text(wanted)
    started = time.perf_counter()
    outputs, summary = work(directory)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    run.complete(stage, stage_config, outputs, summary)
    return summary


def _sids(run, template: str):
    """The item SIDs of `adsim llm sid` for SID templates, else None."""
    import polars as pl

    path = run.root / "llm_sid" / "item_sids.parquet"
    if not template.endswith("_sid"):
        return None
    if not path.exists():
        raise ConfigError(f"template {template} needs {path}: run `adsim llm sid` first")
    return pl.read_parquet(path)


def _label_examples(world, config: LLMConfig, template: str, split: str = "train", sids=None):
    """Prompts of a split's labelled (user, anchor) pairs with the label's advertiser name; the train split
    leaves out the validation users (`behaviour.validation_users`), whom no training stage sees (on a
    leave-one-out world the validation-role labels are what is held out)."""
    import polars as pl

    from llm_predictor.behaviour import is_leave_one_out, validation_users
    from llm_predictor.evaluate import labelled_users
    from llm_predictor.predict import build_prompts

    labels = labelled_users(world, split)
    if split == "train" and not is_leave_one_out(world):  # there, the validation labels are held out instead
        labels = labels.join(validation_users(world, config.behaviour.validation_users, config.seed), on="user_id",
                             how="anti")
    labels = labels.join(
        world.advertisers.select("advertiser_id", pl.col("name").alias("target_advertiser")), on="advertiser_id")
    prompts = build_prompts(world, labels, config.features, config.preset_pool_size, template,
                            sids=sids, sid_config=config.semantic_ids)
    return prompts.join(labels.select("user_id", "anchor_date", "target_advertiser"), on=["user_id", "anchor_date"])


def list_completion(target: str, allowed_names: list[str], interests: list[str]) -> str:
    """The 20-advertiser SFT target: the label first, then the prompt's other names in prompt order
    (active advertisers, then the preset pool); interests are the user's top categories."""
    from llm_predictor.prompts import N_ADVERTISERS, N_INTERESTS, list_target

    names = [target, *[name for name in allowed_names if name != target]][:N_ADVERTISERS]
    return list_target(names, [interest for interest in interests if interest][:N_INTERESTS])


def stage_pretrain(run_root: Path, config: LLMConfig, force: bool, show_progress: bool) -> dict:
    from synthetic_data.run_folder import RunFolder

    from llm_predictor.model import prepare_base_model
    from llm_predictor.pretrain import pretrain

    run = RunFolder(run_root)
    world = run_world(run_root)
    corpus = world.corpus["text"].to_list()
    base_config = {"world": upstream_hash(run, "world"), "model": to_dict(config.model),
                   "tokenizer": to_dict(config.tokenizer), "features": to_dict(config.features),
                   "preset_pool_size": config.preset_pool_size, "prompt_sample": config.tokenizer_prompt_sample}

    def build_base(directory: Path):
        examples = _label_examples(world, config, "grpo").head(config.tokenizer_prompt_sample)
        texts = corpus + examples["prompt"].to_list() + examples["target_advertiser"].to_list()
        names = world.advertisers["name"].to_list()
        prepare_base_model(config.model, config.tokenizer, texts, directory / "model", names)
        return ["model"], {"tokenizer_texts": len(texts), "advertiser_tokens": config.tokenizer.advertiser_tokens}

    run_stage(run, "llm_base", base_config, build_base, force)
    base_dir = Path(config.model.base_model_dir or run.root / "llm_base" / "model")
    stage_config = {"upstream": upstream_hash(run, "llm_base"), "pretrain": to_dict(config.pretrain)}
    return run_stage(run, "llm_pretrain", stage_config, lambda directory: (
        ["model"], pretrain(base_dir, corpus, config.pretrain, directory, show_progress)), force)


def stage_behaviour(run_root: Path, config: LLMConfig, force: bool, show_progress: bool) -> dict:
    """Behaviour-sequence CPT (paper 3.5 phase 2, `behaviour.py`) of the web-corpus model, with the
    validation loss on held-out train users and both loss curves in `loss_curves.png`; its documents
    (`documents.parquet`: document, is_validation) are what SFT rehearses."""
    import polars as pl

    from synthetic_data.run_folder import RunFolder

    from llm_predictor.behaviour import behaviour_documents
    from llm_predictor.loss_curves import plot_loss_curves
    from llm_predictor.pretrain import PretrainConfig, pretrain

    run = RunFolder(run_root)
    stage_config = {"upstream": upstream_hash(run, "llm_pretrain"), "behaviour": to_dict(config.behaviour),
                    "seed": config.seed}

    def work(directory: Path):
        world = run_world(run_root)
        train, validation = behaviour_documents(world, config.behaviour, config.seed)
        pl.DataFrame({"document": train + validation, "is_validation": [False] * len(train) + [True] * len(validation)}
                     ).write_parquet(directory / "documents.parquet")
        summary = pretrain(run.root / "llm_pretrain" / "model", train,
                           PretrainConfig(train=config.behaviour.train, block_size=config.behaviour.block_size,
                                          is_document_masked=True),
                           directory, show_progress, validation_texts=validation,
                           eval_steps=config.behaviour.eval_steps,
                           early_stopping_patience=config.behaviour.early_stopping_patience)
        plot_loss_curves(summary, directory / "loss_curves.png", "behaviour-sequence CPT")
        return ["model", "loss_curves.png", "documents.parquet"], {**summary, "train_documents": len(train),
                                              "validation_documents": len(validation)}

    return run_stage(run, "llm_behaviour", stage_config, work, force)


def stage_sft(run_root: Path, config: LLMConfig, target: str, force: bool, show_progress: bool) -> dict:
    import polars as pl

    from synthetic_data.run_folder import RunFolder

    from llm_predictor.prompts import sft_target
    from llm_predictor.sft import sft

    run = RunFolder(run_root)
    stage = f"llm_sft_{target}"
    init_stage = "llm_sid" if target == "sid" else f"llm_{config.sft_init}"
    is_rehearsed = init_stage == "llm_behaviour" and config.sft.rehearsal_share > 0
    sft_config = replace(config.sft, target="list" if target == "list" else "single",
                         rehearsal_share=config.sft.rehearsal_share if is_rehearsed else 0.0)
    stage_config = {"upstream": upstream_hash(run, init_stage), "sft": to_dict(sft_config),
                    "features": to_dict(config.features), "preset_pool_size": config.preset_pool_size,
                    "held_out": _held_out(config)}

    def work(directory: Path):
        world = run_world(run_root)
        template = SFT_TEMPLATES[target]
        if target != "list":
            examples = _label_examples(world, config, template, sids=_sids(run, template))
            completions = [sft_target(name) for name in examples["target_advertiser"].to_list()]
        else:
            examples = _label_examples(world, config, template).with_columns(
                pl.col("prompt").str.extract(r"Top Categories \[([^\]]*)\]").str.split("|").alias("interests"))
            completions = [list_completion(t, a, i or []) for t, a, i in
                           examples.select("target_advertiser", "allowed_names", "interests").iter_rows()]
        prompts = examples["prompt"].to_list()
        rehearsed = 0
        if is_rehearsed:
            extra_prompts, extra_completions = _rehearsal(run, config.sft.rehearsal_share, len(prompts))
            prompts, completions = prompts + extra_prompts, completions + extra_completions
            rehearsed = len(extra_prompts)
        summary = sft(run.root / init_stage / "model", prompts, completions, sft_config, directory, show_progress)
        # `examples`: the prompts'; `examples_over_max_length` counts prompts and documents
        return ["model"], {**summary, "examples": len(prompts) - rehearsed, "rehearsal_documents": rehearsed}

    return run_stage(run, stage, stage_config, work, force)


def _held_out(config: LLMConfig) -> dict:
    """What decides the validation users that `_label_examples` leaves out of training (part of a stage's config)."""
    return {"validation_users": config.behaviour.validation_users, "seed": config.seed}


def _rehearsal(run, share: float, examples: int) -> tuple[list[str], list[str]]:
    """`share` x `examples` of the behaviour stage's training documents (cycled if too few) as SFT
    (prompt, completion) pairs."""
    from itertools import cycle, islice

    import polars as pl

    from llm_predictor.features import ITEM_SEPARATOR
    from llm_predictor.sft import rehearsal_pairs

    path = run.root / "llm_behaviour" / "documents.parquet"
    if not path.exists():
        raise ConfigError(f"{path} is missing (the stage ran before it was written): `adsim llm behaviour --force`")
    documents = pl.read_parquet(path).filter(~pl.col("is_validation"))["document"].to_list()
    wanted = round(share * examples)
    return rehearsal_pairs(list(islice(cycle(documents), wanted)) if documents else [], ITEM_SEPARATOR)


def stage_grpo(run_root: Path, config: LLMConfig, force: bool, show_progress: bool) -> dict:
    """GRPO from the `grpo_init` model (`grpo.py`): the `names` policy on the 1-advertiser prompts and their
    allowed names, or the `text` policy on the 20-advertiser XML prompts."""
    from synthetic_data.run_folder import RunFolder

    from llm_predictor.grpo import grpo, grpo_names
    from llm_predictor.loss_curves import plot_reward_curves

    run = RunFolder(run_root)
    init_stage = MODEL_STAGES[config.grpo_init]
    stage_config = {"upstream": upstream_hash(run, init_stage), "init": config.grpo_init, "grpo": to_dict(config.grpo),
                    "features": to_dict(config.features), "preset_pool_size": config.preset_pool_size,
                    "held_out": _held_out(config)}

    def work(directory: Path):
        init_dir = run.root / init_stage / "model"
        if config.grpo.policy == "text":
            examples = _label_examples(run_world(run_root), config, "grpo")
            return ["model"], grpo(init_dir, examples["prompt"].to_list(), examples["target_advertiser"].to_list(),
                                   config.grpo, directory, show_progress)
        examples = _label_examples(run_world(run_root), config, SFT_TEMPLATES["single"])
        summary = grpo_names(init_dir, examples["prompt"].to_list(), examples["allowed_names"].to_list(),
                             examples["target_advertiser"].to_list(), config.grpo, directory, show_progress)
        plot_reward_curves(summary, directory / "reward_curves.png", "GRPO (names policy)")
        return ["model", "reward_curves.png"], summary

    return run_stage(run, "llm_grpo", stage_config, work, force)


def stage_sid(run_root: Path, config: LLMConfig, force: bool, show_progress: bool) -> dict:
    """Semantic IDs (paper 3.5): item codes, SID tokens added to the pretrained model, then phase 1
    (new embeddings only) and phase 2 (full model, web corpus mixed in) on SID documents."""
    from synthetic_data.run_folder import RunFolder

    from llm_predictor.semantic_ids import add_sid_tokens, item_sids, sid_documents, train_phases

    run = RunFolder(run_root)
    stage_config = {"upstream": upstream_hash(run, "llm_pretrain"), "semantic_ids": to_dict(config.semantic_ids),
                    "pretrain": to_dict(config.pretrain)}

    def work(directory: Path):
        world = run_world(run_root)
        sids = item_sids(world.items, config.semantic_ids)
        sids.write_parquet(directory / "item_sids.parquet")
        first_new = add_sid_tokens(run.root / "llm_pretrain" / "model", config.semantic_ids, directory / "with_sids")
        documents = sid_documents(world.items, sids, world.advertisers)
        phases = train_phases(directory / "with_sids", documents, world.corpus["text"].to_list(), config.pretrain,
                              directory / "phases", first_new, show_progress)
        shutil.copytree(phases["phase_2"]["model_dir"], directory / "model")
        summary = {f"{phase}_{key}": value for phase, record in phases.items() for key, value in record.items()
                   if key in ("first_loss", "last_loss", "steps", "tokens_per_second")}
        return ["item_sids.parquet", "model"], {**summary, "distinct_sids": sids["sid"].n_unique(),
                                                "items": sids.height}

    return run_stage(run, "llm_sid", stage_config, work, force)


def method_decoding(method: Method, base: DecodingConfig) -> DecodingConfig:
    """The decoding of a method: XML list decoding from `predict.decoding`, or 20 single names
    (the beams, samples or best-scored allowed names of the 1-advertiser model; a name ranked after a
    behaviour sequence ends at the next separator or the end of the history)."""
    from llm_predictor.prompts import N_ADVERTISERS

    if method.decoding == "single_beam":
        return replace(base, strategy="beam", num_beams=N_ADVERTISERS, num_return_sequences=N_ADVERTISERS,
                       max_new_tokens=24, is_name_constrained=False)
    if method.decoding == "single_sampling":
        return replace(base, strategy="sampling", num_return_sequences=N_ADVERTISERS, max_new_tokens=24,
                       is_name_constrained=False)
    if method.is_ranked:
        return replace(base, strategy="rank", num_return_sequences=N_ADVERTISERS, is_name_constrained=True,
                       name_end="separator" if method.template == "sequence" else "eos")
    if method.decoding == "list_sampling":
        return replace(base, strategy="sampling", num_return_sequences=1)
    if method.decoding == "list_constrained":
        return replace(base, is_name_constrained=True)
    return base


def method_prompts(run, world, config: LLMConfig, method: Method, keys, features: FeatureConfig):
    """Prompts (user_id, anchor_date, prompt, allowed_names) of `method` for `keys`: the paper's template,
    or the user's conversion sequence (`sequence`); the names a ranked method may choose are the prompt's
    allowed names, or under the `open` rule every advertiser a label can name (active, with spend)."""
    import polars as pl

    from llm_predictor.baselines import eligible_advertisers
    from llm_predictor.behaviour import behaviour_sequences, sequence_prompt
    from llm_predictor.predict import build_prompts

    is_sequence = method.template == "sequence"
    if is_sequence and method.rule == "open":  # reads nothing of the paper's prompt, not even its names
        prompts = keys.select("user_id", "anchor_date").unique(maintain_order=True)
    else:
        prompts = build_prompts(world, keys, features, config.preset_pool_size,
                                "sft" if is_sequence else method.template, reasoning=method.is_reasoning,
                                sids=_sids(run, method.template), sid_config=config.semantic_ids)
    if is_sequence:
        sequences = behaviour_sequences(world, prompts, config.behaviour)
        prompts = prompts.with_columns(sequence_prompt(sequences["sequence"]))
    if method.rule == "open":
        names = eligible_advertisers(world)["name"].to_list()
        prompts = prompts.with_columns(allowed_names=pl.lit(names, dtype=pl.List(pl.String)))
    return prompts


def generate_method(run, world, config: LLMConfig, method: Method, keys, directory: Path, show_progress: bool,
                    features: FeatureConfig | None = None):
    """Generations of one method for `keys` (with `features`, default the config's), checkpointed per
    virtual epoch under `directory`."""
    from llm_predictor.predict import generate_predictions

    prompts = method_prompts(run, world, config, method, keys, features or config.features)
    decoding = method_decoding(method, config.predict.decoding)
    model_dir = run.root / MODEL_STAGES[method.model] / "model"
    return generate_predictions(model_dir, prompts, decoding, directory,
                                config=replace(config.predict, decoding=decoding), show_progress=show_progress)


def _sample_users(requests, max_users: int | None, seed: int):
    if max_users is None or requests.height <= max_users:
        return requests
    keys = [key for key in ("user_id", "anchor_date") if key in requests.columns]
    return requests.sample(max_users, seed=seed).sort(keys)


def _sampled_labels(world, config: LLMConfig, sampled) -> dict:
    """Eval labels (V0, V1) of the (user, anchor) pairs of `sampled` only, so users left out do not count as
    misses."""
    from llm_predictor import evaluate

    keys = sampled.select("user_id", "anchor_date")
    return {name: labels.join(keys, on=["user_id", "anchor_date"], how="semi")
            for name, labels in evaluate.evaluation_labels(world, config.eval.evaluation).items()}


def _ablation_variants(deltas: dict[str, float] | None) -> dict[str, tuple[str, ...]]:
    """Table 4 rows: remove each group; then, from the measured deltas, reorder by importance and
    delete the groups whose removal helped (paper 4.3)."""
    if deltas is None:
        return {f"remove_{group}": tuple(g for g in GROUPS if g != group) for group in GROUPS}
    by_importance = tuple(sorted(GROUPS, key=lambda group: deltas[group]))  # biggest drop first
    helpful = tuple(g for g in GROUPS if deltas[g] <= 0)
    return {
        "reorder_by_performance": by_importance,
        "reorder_and_delete_negative": tuple(g for g in by_importance if g in helpful),
        "delete_negative": helpful,
    }


def stage_eval(run_root: Path, config: LLMConfig, force: bool, show_progress: bool) -> dict:
    from synthetic_data.run_folder import RunFolder

    from llm_predictor import evaluate
    from llm_predictor.predict import build_prompts

    run = RunFolder(run_root)
    models = {m.model for m in (METHODS[name] for name in config.eval.methods)}
    if config.eval.is_ablation:
        models.add("grpo")
    stage_config = {"upstream": {m: upstream_hash(run, MODEL_STAGES[m]) for m in sorted(models)},
                    "eval": to_dict(config.eval), "predict": to_dict(config.predict),
                    "features": to_dict(config.features), "preset_pool_size": config.preset_pool_size}

    def work(directory: Path):
        import polars as pl

        world = run_world(run_root)
        everyone = evaluate.evaluation_requests(world, config.eval.evaluation)
        sampled = _sample_users(everyone, config.eval.max_users, config.seed)
        # ranking names costs milliseconds a user: those methods and the baselines see every eval user,
        # the methods that generate text a sample of `eval.max_users`
        sampled_methods = (tuple(name for name in config.eval.methods if not METHODS[name].is_ranked)
                           if sampled.height < everyone.height else ())
        generations = {name: generate_method(run, world, config, METHODS[name],
                                             sampled if name in sampled_methods else everyone,
                                             directory / "generations" / name, show_progress)
                       for name in config.eval.methods}
        predictions, counts = evaluate.generation_predictions(world, generations, config.eval.evaluation)
        every_labels = every_anchor_labels(world)
        other_keys = every_labels.select(KEYS).unique().join(everyone, on=KEYS, how="anti").sort(KEYS)
        requests = pl.concat([everyone, other_keys])  # the baselines at every anchor: their rankers fit once
        allowed = build_prompts(world, requests, config.features, config.preset_pool_size, "inference")
        baselines = evaluate.baseline_predictions(world, requests)
        baselines["most_recent_allowed"] = evaluate.restricted_to_allowed(baselines["most_recent"], allowed,
                                                                          "most_recent_allowed")
        predictions |= {name: table.join(everyone, on=KEYS, how="semi") for name, table in baselines.items()}
        labels = evaluate.evaluation_labels(world, config.eval.evaluation)
        predictions["allowed_names_ceiling"] = evaluate.allowed_names_ceiling(world, allowed, labels)
        world_config = run.world_config()
        if world_config is not None:  # a generated world: the labels' own distribution is Table 3's ceiling
            predictions[CEILING] = evaluate.next_conversion_ceiling(world, world_config, everyone, CEILING)
        table = evaluate.results_table(predictions, labels, config.eval.evaluation, counts, sampled_methods, sampled)
        anchor = evaluate.evaluation_anchor(world, config.eval.evaluation)
        title = (f"Advertiser prediction on {everyone.height} eval users at {anchor} "
                 "(V0: Table 2, V1: Table 3 analogues)")
        if sampled_methods:
            title += f"; the methods that generate text ({', '.join(sampled_methods)}) on a sample of {sampled.height}"
        outputs = [path.name for path in evaluate.write_table(table, directory, "results", title)]
        outputs += complementarity_table(run_root, world, predictions, labels["v1"], directory, sampled_methods,
                                         sampled)
        every = every_anchor_predictions(run, world, config, predictions, baselines, other_keys, directory,
                                         show_progress)
        outputs += grpo_effect_table(run, config, predictions, labels["v1"], every, every_labels, directory,
                                     sampled_methods, sampled)
        outputs += baselines_effect_table(config, predictions, labels["v1"], every, every_labels, directory,
                                          sampled_methods)
        outputs += ceiling_gap_table(config, predictions, labels["v1"], directory, sampled_methods)
        summary = {"users": everyone.height, "sampled_users": sampled.height}
        if config.eval.is_ablation:
            outputs += ablation(run, world, config, everyone, sampled, directory, show_progress)
        print_results_table(table)
        return outputs, summary

    return run_stage(run, "llm_eval", stage_config, work, force)


def complementarity_table(run_root: Path, world, predictions: dict, labels, directory: Path,
                          sampled_methods: tuple[str, ...] = (), sample=None) -> list[str]:
    """Each method beside the most-recent list on the V1 labels (`llm_predictor.complementarity`): the hits it
    misses, union recall, recall per conversion mechanism and first-ranked diversity. `sampled_methods`
    predicted only the users of `sample` (KEYS) and are compared on those users' labels. The mechanisms
    come from the world's `conversions_truth`, read here for evaluation only."""
    import polars as pl

    from synthetic_data.schema import load_table

    from llm_predictor.complementarity import complementarity, label_mechanisms
    from llm_predictor.evaluate import write_table

    keys = ["user_id", "anchor_date"]
    truth = load_table(run_root / "world", "conversions_truth")
    timed = labels.join(world.labels.select(*keys, "ts"), on=keys, how="left", maintain_order="left")
    mechanisms = label_mechanisms(world.events, truth, timed)
    tables = [complementarity({m: p for m, p in predictions.items() if m not in sampled_methods}, mechanisms,
                              "most_recent")]
    sampled_labels = mechanisms.join(sample.select(keys), on=keys, how="semi") if sampled_methods else None
    if sampled_labels is not None and not sampled_labels.is_empty():
        methods = {m: predictions[m] for m in sampled_methods} | {"most_recent": predictions["most_recent"]}
        tables.append(complementarity(methods, sampled_labels, "most_recent").filter(pl.col("method") != "most_recent"))
    table = pl.concat(tables, how="diagonal_relaxed")
    return [path.name for path in write_table(
        table, directory, "complementarity", f"Complementary to the most-recent list? V1, {labels.height} labels "
                                             "(`labels`: a method's own), K = 20 (hits it misses, union recall, "
                                             "recall per mechanism, diversity)")]


def grpo_pairs(run, methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """(GRPO method, its initialisation's method) pairs among `methods`: the same template, decoding and rule
    on the model GRPO started from (the run's `llm_grpo` record); [] before GRPO has run."""
    record = run.stage_record(MODEL_STAGES["grpo"])
    if record is None:
        return []
    by_method = {METHODS[name]: name for name in methods}
    return [(name, by_method[twin]) for name in methods if METHODS[name].model == "grpo"
            and (twin := replace(METHODS[name], model=record["config"]["init"])) in by_method]


def every_anchor_labels(world):
    """The eval users' V1 labels at every label anchor (user_id, anchor_date, advertiser_id; ~4x the evaluation
    anchor's on the demo world, none seen by a training stage)."""
    import polars as pl

    from llm_predictor import evaluate

    return evaluate.labelled_users(world, "eval").filter(pl.col("in_v1")).select(*KEYS, "advertiser_id")


def every_anchor_predictions(run, world, config: LLMConfig, predictions: dict, baselines: dict, other_keys,
                             directory: Path, show_progress: bool) -> dict:
    """PREDICTIONS at every label anchor of `eval.every_anchor_methods` (those of `eval.methods`) and of the non-LLM
    baselines (`baselines`: theirs on every request): the evaluation anchor's `predictions`, and the other anchors'
    `other_keys` predicted here (`generations/every_anchor/`). {} when there is no other anchor."""
    import polars as pl

    from llm_predictor import evaluate

    if other_keys.is_empty():
        return {}
    generations = {name: generate_method(run, world, config, METHODS[name], other_keys,
                                         directory / "generations" / "every_anchor" / name, show_progress)
                   for name in config.eval.every_anchor_methods if name in config.eval.methods}
    every = {name: pl.concat([predictions[name], table]) for name, table in
             evaluate.generation_predictions(world, generations, config.eval.evaluation)[0].items()}
    return every | baselines


def _effects_at_both(pairs: list[tuple[str, str]], predictions: dict, labels, every: dict, every_labels,
                     config: LLMConfig, pair_labels=None):
    """`evaluate.paired_effects_table` of `pairs` at the evaluation anchor (`labels`; `pair_labels(pair)`: a pair's
    own labels there) and, for the pairs `every` predicts, at every label anchor; column `anchors` says which."""
    import polars as pl

    from llm_predictor import evaluate

    evaluation = config.eval.evaluation
    tables = [evaluate.paired_effects_table([pair], predictions, pair_labels(pair) if pair_labels else labels,
                                            evaluation).with_columns(anchors=pl.lit("evaluation")) for pair in pairs]
    every_pairs = [pair for pair in pairs if set(pair) <= set(every)]
    if every_pairs:
        tables.append(evaluate.paired_effects_table(every_pairs, every, every_labels, evaluation)
                      .with_columns(anchors=pl.lit("every")))
    table = pl.concat(tables, how="diagonal")
    return table.select("anchors", pl.exclude("anchors"))


def grpo_effect_table(run, config: LLMConfig, predictions: dict, labels, every: dict, every_labels, directory: Path,
                      sampled_methods: tuple[str, ...], sample) -> list[str]:
    """Paper Table 3's +GRPO row: each GRPO method's Recall@K minus its initialisation's on the same V1 labels, at
    the evaluation anchor (`labels`; a pair with a sampled method on the sample's labels only) and, for the pairs
    of `eval.every_anchor_methods`, at every label anchor (`every`, `every_labels`)."""
    from llm_predictor import evaluate

    pairs = grpo_pairs(run, config.eval.methods)
    if not pairs:
        return []

    def pair_labels(pair: tuple[str, str]):
        is_sampled = bool(set(pair) & set(sampled_methods))
        return labels.join(sample.select(KEYS), on=KEYS, how="semi") if is_sampled else labels

    table = _effects_at_both(pairs, predictions, labels, every, every_labels, config, pair_labels)
    return [path.name for path in evaluate.write_table(
        table, directory, "grpo_effect", "GRPO over its initialisation (Table 3's +GRPO row): V1 Recall@K difference "
                                         "on the same labels, at the evaluation anchor and at every label anchor")]


def baselines_effect_table(config: LLMConfig, predictions: dict, labels, every: dict, every_labels, directory: Path,
                           sampled_methods: tuple[str, ...]) -> list[str]:
    """Each ranked LLM method's Recall@K minus the non-LLM yardsticks' on the same V1 labels (`choice.baseline_pairs`:
    an `open` method against most recent and the prompt-input LightGBM, an `allowed` one against most recent on the
    same allowed names), at the evaluation anchor and, for `eval.every_anchor_methods`, at every label anchor
    (`every`, `every_labels`). Methods scored on a sample are left out."""
    from llm_predictor import evaluate
    from llm_predictor.choice import baseline_pairs

    methods = [name for name in config.eval.methods if METHODS[name].is_ranked and name not in sampled_methods]
    if not methods:
        return []
    table = _effects_at_both(baseline_pairs(methods), predictions, labels, every, every_labels, config)
    return [path.name for path in evaluate.write_table(
        table, directory, "baselines_effect", f"LLM methods against the non-LLM baselines: V1 Recall@K difference on "
                                              f"the same labels, at the evaluation anchor ({labels.height}) and at "
                                              f"every label anchor ({every_labels.height})")]


def ceiling_gap_table(config: LLMConfig, predictions: dict, labels, directory: Path,
                      sampled_methods: tuple[str, ...]) -> list[str]:
    """Each ranked LLM method's and each non-LLM baseline's V1 Recall@K minus the world's next-conversion ceiling's
    (`evaluate.next_conversion_ceiling`) on the same labels, at the evaluation anchor: how much of what is
    learnable each one reaches. [] on a world adsim did not generate (no ceiling); sampled methods are left out."""
    from llm_predictor import evaluate

    if CEILING not in predictions:
        return []
    methods = [name for name in config.eval.methods if METHODS[name].is_ranked and name not in sampled_methods]
    pairs = [(name, CEILING) for name in (*methods, *CEILING_BASELINES)]
    table = _effects_at_both(pairs, predictions, labels, {}, None, config)  # the evaluation anchor only
    return [path.name for path in evaluate.write_table(
        table, directory, "ceiling_gap", f"Below the world's own next-conversion ranking (Table 3's ceiling; it reads "
                                         f"hidden state): V1 Recall@K difference on the same {labels.height} labels")]


def ablation(run, world, config: LLMConfig, everyone, sampled, directory: Path, show_progress: bool) -> list[str]:
    """Table 4 analogue on the GRPO model as its policy serves it, on `eval.max_ablation_users` eval users
    (sampled; unset: all): Recall@5 change per feature change. The `names` policy's model ranks the allowed
    names (`grpo_ranked`, any eval user); the `text` policy's decodes greedily under the name constraint,
    on users of the text methods' sample (the constraint keeps format failures, which a briefly trained
    model makes often, from drowning what each feature group contributes to the choice of names)."""
    import polars as pl

    from llm_predictor import evaluate

    record = run.stage_record(MODEL_STAGES["grpo"])
    if record["config"]["grpo"].get("policy", "text") == "names":
        pool, method, method_config, kind = everyone, METHODS["grpo_ranked"], config, "top 20 of the allowed names"
    else:
        pool, method, kind = sampled, Method("grpo", "inference"), "greedy, name-constrained"
        method_config = replace(config, predict=replace(config.predict, decoding=replace(
            config.predict.decoding, strategy="greedy", num_return_sequences=1, is_name_constrained=True)))
    users = _sample_users(pool, config.eval.max_ablation_users, config.seed)
    labels = _sampled_labels(world, config, users)
    all_labels = pl.concat(list(labels.values())).unique(["user_id", "anchor_date"]).sort("user_id")

    def score(variants: dict[str, tuple[str, ...]]):
        generations = {name: generate_method(run, world, method_config, method, users,
                                             directory / "generations" / f"ablation_{name}", show_progress,
                                             features=replace(config.features, groups=groups))
                       for name, groups in variants.items()}
        return evaluate.generation_predictions(world, generations, config.eval.evaluation)[0]

    predictions = score({"all_groups": GROUPS, **_ablation_variants(None)})
    table = evaluate.ablation_table("all_groups", predictions, all_labels, config.eval.evaluation)
    deltas = {row["ablation"].removeprefix("remove_"): row["delta_recall_at_5"] for row in table.iter_rows(named=True)}
    predictions |= score(_ablation_variants(deltas))
    table = evaluate.ablation_table("all_groups", predictions, all_labels, config.eval.evaluation)
    return [path.name for path in evaluate.write_table(
        table, directory, "ablation", f"Feature ablation (Table 4 analogue): GRPO model, {kind}, "
                                      f"{all_labels.height} V0 and V1 labels")]


def model_dir(run, method_name: str) -> Path:
    """The trained model directory a method decodes with."""
    return run.root / MODEL_STAGES[METHODS[method_name].model] / "model"


def predict_users(run, world, config: LLMConfig, method_name: str, keys, directory: Path | None,
                  show_progress: bool, backend=None, ray_engine=None):
    """Prompt, generate (resumable under `directory/epochs`, if given) and convert one method's lists
    for `keys`. Returns (generations, PREDICTIONS table, conversion counts); shared by `predict`, the
    real-data sample stage and the simulator's nightly job (which passes its loaded `backend`). With a
    `ray_predict.RayEngine` the same runs as a Ray Dataset, checkpointed per request under `directory`/ray.
    """
    from llm_predictor.convert import NameConverter, convert_predictions
    from llm_predictor.predict import generate_predictions

    if ray_engine is not None:
        from llm_predictor.ray_predict import predict_with_ray

        if directory is None:
            raise ValueError("the ray engine checkpoints into the stage folder: pass `directory`")
        return predict_with_ray(run.root, world, config, method_name, keys, directory, ray_engine, show_progress)
    method = METHODS[method_name]
    prompts = method_prompts(run, world, config, method, keys, config.features)
    decoding = method_decoding(method, config.predict.decoding)
    generations = generate_predictions(model_dir(run, method_name), prompts, decoding,
                                       None if directory is None else directory / "epochs", backend=backend,
                                       config=replace(config.predict, decoding=decoding), show_progress=show_progress)
    converter = NameConverter(world.advertisers, config.eval.evaluation.name_match_threshold)
    predictions, counts = convert_predictions(generations, converter, source=f"llm_{method_name}")
    return generations, predictions, counts


PREDICT_USERS = {
    "eval": "V0/V1 eval users at the evaluation anchor (Tables 2-3)",
    "serving": "recent converters at the world's last day (what the simulated market serves from the next day)",
    "heldout": "eval-split users, never trained on, at every label anchor (leakage-free ranking features)",
}


def prediction_keys(world, config: LLMConfig, users: str):
    """The (user_id, anchor_date) rows `adsim llm predict --users` infers.

    `serving` follows paper 3.2.1 (users with a conversion in the 90 days before the anchor; every one, or
    a seeded sample of `serving_max_users`) at the world's last day, so the lists are fresh when the market
    opens. `heldout` gives ranking features that cannot leak: the LLM never saw these users' labels (every
    eval-split user, or a sample of `heldout_max_users`, at every label anchor).
    """
    import polars as pl

    from llm_predictor import evaluate

    if users == "eval":
        return evaluate.evaluation_requests(world, config.eval.evaluation)
    if users == "serving":
        anchor = world.events["ts"].max().date()
        since = pl.datetime(anchor.year, anchor.month, anchor.day, time_zone="UTC") - pl.duration(days=89)
        keys = (world.events.filter(pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]),
                                    pl.col("ts") >= since)
                .select("user_id").unique().sort("user_id").with_columns(pl.lit(anchor).alias("anchor_date")))
        return _sample_users(keys, config.serving_max_users, config.seed)
    heldout = world.splits.filter(pl.col("split") == "eval").select("user_id").sort("user_id")
    heldout = _sample_users(heldout, config.heldout_max_users, config.seed)
    anchors = world.labels.select("anchor_date").unique().sort("anchor_date")
    return heldout.join(anchors, how="cross")


def stage_predict(run_root: Path, config: LLMConfig, method_name: str, users: str, force: bool,
                  show_progress: bool, ray_engine=None, incremental: bool = False) -> dict:
    """A method's PREDICTIONS (and interests, for list methods) for one of `PREDICT_USERS`; method `chosen`
    is the one `adsim llm choose` picked on validation users (stage `llm_predict_chosen_<users>`). The
    engine (`ray_engine`: a Ray Dataset; None: this process) is not part of the stage's config: both write
    the same tables.

    `incremental` (serving users only; paper 3.7): after the world's events grew, re-infer only the users
    with an event since the stage's last run (`predicted_through`) or without a list yet; the other serving
    users keep their last list. The last run's outputs wait in `<stage>.previous/` until this one completes,
    so an interrupted incremental run resumes. Raises ConfigError without a complete last run of this config.
    """
    from synthetic_data.run_folder import RunFolder

    from llm_predictor.choice import resolve_method

    if users not in PREDICT_USERS:
        raise ConfigError(f"users {users!r} is not one of {sorted(PREDICT_USERS)}")
    if incremental and users != "serving":
        raise ConfigError(f"--incremental re-infers serving users with new activity; --users {users} has fixed "
                          "label anchors: run it without --incremental")
    run = RunFolder(run_root)
    stage = f"llm_predict_{method_name}_{users}"
    method_name = resolve_method(run, method_name)
    method = METHODS[method_name]
    stage_config = {"method": method_name, "upstream": upstream_hash(run, MODEL_STAGES[method.model]),
                    "predict": to_dict(config.predict),
                    "features": to_dict(config.features), "preset_pool_size": config.preset_pool_size,
                    "evaluation": to_dict(config.eval.evaluation), "users": users,
                    "max_users": {"serving": config.serving_max_users, "heldout": config.heldout_max_users}.get(users)}
    previous, is_restart = _previous_predictions(run, stage, stage_config) if incremental else (None, False)

    def work(directory: Path):
        import polars as pl

        from llm_predictor.convert import COUNT_SCHEMA, total_counts

        world = run_world(run_root)
        keys = prediction_keys(world, config, users)
        summary = {"method": method_name, "users": keys["user_id"].n_unique(), "prompts": keys.height,
                   "anchor_dates": sorted({str(anchor) for anchor in keys["anchor_date"].to_list()}),
                   "predicted_through": str(world.events["ts"].max())}
        if previous is not None:
            keys, kept_users = _keys_to_reinfer(world, keys, previous)
            summary |= {"reinferred_users": keys.height, "kept_users": kept_users.height}
        if previous is not None and keys.height == 0:  # nobody acted: every list stays
            tables = {path.name: pl.read_parquet(path).clear() for path in sorted(previous.folder.glob("*.parquet"))}
            counts = total_counts(pl.DataFrame(schema=COUNT_SCHEMA))
        else:
            tables, counts = _predict_tables(run, world, config, method_name, keys, directory, show_progress,
                                             ray_engine)
        if previous is not None:
            tables = {name: _merge_lists(previous.folder / name, table, kept_users) for name, table in tables.items()}
        for name, table in tables.items():
            table.write_parquet(directory / name)
        return list(tables), {**summary, **counts.as_dict()}

    summary = run_stage(run, stage, stage_config, work, force or is_restart)
    if previous is not None:
        shutil.rmtree(previous.folder)
    return summary


def _predict_tables(run, world, config: LLMConfig, method_name: str, keys, directory: Path, show_progress: bool,
                    ray_engine):
    """The stage outputs of predict_users ({file name: table}: generations, predictions and, for XML list
    methods, interests) and its conversion counts."""
    from llm_predictor.convert import interests_from_generations

    generations, predictions, counts = predict_users(run, world, config, method_name, keys, directory,
                                                     show_progress, ray_engine=ray_engine)
    tables = {"generations.parquet": generations, "predictions.parquet": predictions}
    if "rank" not in generations.columns:
        tables["interests.parquet"] = interests_from_generations(generations)
    return tables, counts


@dataclass(frozen=True)
class PreviousPredictions:
    """A complete run of a predict stage kept for an incremental one: its folder and `predicted_through`."""

    folder: Path
    through: str


def _previous_predictions(run, stage: str, stage_config: dict) -> tuple[PreviousPredictions, bool]:
    """The last complete run of `stage` under this config, for an incremental run, and whether it was just
    set aside (True: the stage starts afresh) or an interrupted incremental run resumes (False)."""
    import json

    folder = run.root / f"{stage}.previous"
    is_restart = run.is_complete(stage, stage_config)
    if is_restart:
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(run.root / stage, folder, ignore=shutil.ignore_patterns("epochs", "ray"))  # not checkpoints
    record = folder / "stage.json"
    if not record.exists():
        raise ConfigError(f"--incremental needs a complete run of {stage} with this config to update; run "
                          "`adsim llm predict` without --incremental first")
    recorded = json.loads(record.read_text())
    if recorded["config_hash"] != config_hash(stage_config):
        raise ConfigError(f"{folder} was predicted under another config; run without --incremental")
    through = recorded["summary"].get("predicted_through")
    if through is None:
        raise ConfigError(f"{stage}'s record predates incremental runs (no predicted_through): run it again "
                          "without --incremental (--force), then incrementally")
    return PreviousPredictions(folder, through), is_restart


def _keys_to_reinfer(world, keys, previous: PreviousPredictions):
    """The serving keys whose users acted since `previous.through` or have no list in `previous`, and the users
    of `keys` who keep their last list."""
    import polars as pl

    from llm_predictor.predict import users_with_new_activity

    since = datetime.fromisoformat(previous.through)
    listed = pl.read_parquet(previous.folder / "generations.parquet", columns=["user_id"]).unique()
    is_fresh = (pl.col("user_id").is_in(users_with_new_activity(world.events, since).implode())
                | ~pl.col("user_id").is_in(listed["user_id"].implode()))
    return keys.filter(is_fresh), keys.filter(~is_fresh).select("user_id")


def _merge_lists(previous_path: Path, fresh, kept_users):
    """`predict.merge_generations` of the kept users' last rows and the fresh rows."""
    import polars as pl

    from llm_predictor.predict import merge_generations

    kept = pl.read_parquet(previous_path).join(kept_users, on="user_id", how="semi")
    return merge_generations(kept, fresh)


def print_results_table(table) -> None:
    view = Table(title="advertiser prediction (Recall@K [95% CI])")
    for column in ("method", "set", "R@1", "R@5", "R@20", "parse", "unmapped"):
        view.add_column(column)
    for row in table.iter_rows(named=True):
        cells = [f"{row[f'recall_at_{k}']:.3f} [{row[f'recall_at_{k}_low']:.3f}, {row[f'recall_at_{k}_high']:.3f}]"
                 for k in (1, 5, 20)]
        rates = ["—" if row[c] is None else f"{row[c]:.3f}" for c in ("parse_rate", "unmapped_rate")]
        view.add_row(row["method"], row["eval_set"], *cells, *rates)
    console.print(view)

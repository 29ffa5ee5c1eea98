"""The scenarios `adsim bench` measures (issue #16): fixed, seeded, seconds to minutes on 2 cores.

`ci` runs on the `tiny` preset's world grown to `CI_USERS` users (a fixed world; the seed is the
market's and the models'), one stage at a time as the demo chains them:
- world: its generation speed;
- predictors: the non-LLM methods' Recall@1/5/20 on the V1 eval labels; the LLM's data path and model
  at the demo's size: prompts built, training tokens and users ranked per second;
- retrieval: Recall@100 of the main, popularity and advertiser-filtered generators;
- ranking: the DCN's test AUC and PR-AUC per task, Table 5's deltas (with LLM features and with
  random lists against without), candidates scored per second;
- market: an A/B of the model-free stack (its advertiser-list generator off versus on, one paired day)
  with its A/A check, funnel survival, advertiser diversity, the scorer's ctcvr AUC on the control
  arm's impressions and requests per second.
Speed is stated per second of a reference workload timed in the same run (`reference_seconds`), so a
slower or busier machine shifts both alike. `SuiteHooks` lets a test plant a regression (a scorer
returning shuffled scores, a predictor answering with popularity, a slower DCN) without
touching the stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from benchmarks.harness import ONE_THREAD_SPEED_TOLERANCE, Measurement

SUITES = ("ci",)
AA_SPLITS = 40  # the A/A's re-randomisations: its false-positive rate to about +-7 points
CI_USERS = 4000  # the tiny preset's world with more users: ~100 V1 eval labels, a market of ~20k requests
LLM_RANKED_USERS = 16  # users whose allowed names the LLM ranks in the timing (~0.4 s each)


@dataclass(frozen=True)
class SuiteHooks:
    """Test-only replacements of what the suite runs; identity by default."""

    scorer: Callable[[object], object] = lambda scorer: scorer  # wraps the stack's scorer
    # (method, its predictions, every method's so far) -> the predictions measured for it
    predictions: Callable[[str, pl.DataFrame, dict], pl.DataFrame] = lambda method, table, others: table
    # wraps the trained ranker's scoring of featurised rows (Ranker.table_probabilities)
    dcn_scoring: Callable[[Callable], Callable] = lambda score: score


def reference_seconds(repeats: int = 7) -> float:
    """Fastest seconds of a fixed workload over `repeats`: a bf16 matrix product and a numpy sort, as the stack's
    own work mixes dense math and array shuffling; one thread. The fastest, like the suite's timings, as the
    least disturbed by other jobs."""
    import torch

    left = torch.randn(384, 384, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    keys = np.random.default_rng(0).random(400_000)

    def workload() -> None:
        for _ in range(20):
            left @ left
        np.sort(keys)

    with _one_thread(), torch.inference_mode():
        return _fastest(workload, repeats)[1]


def _fastest(work: Callable[[], object], repeats: int = 3) -> tuple[object, float]:
    """`work`'s result and its fastest wall time over `repeats` calls: the least disturbed by other jobs."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        timings.append(time.perf_counter() - started)
    return result, min(timings)


@contextmanager
def _one_thread():
    """torch, BLAS and OpenMP held to one thread."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def ci_experiment():
    """The market scenario of the `ci` suite: the default arms (the advertiser-list generator off, then on)
    over one paired day, with `AA_SPLITS` A/A re-randomisations. A team's experiment config is read over it
    (`adsim bench --config`), so that its arms and plug-ins are measured in the same scenario."""
    from simulator.config import ExperimentConfig, SimulationConfig

    return ExperimentConfig(simulation=SimulationConfig(days=1), aa_splits=AA_SPLITS)


def measure(suite: str, seed: int = 0, hooks: SuiteHooks = SuiteHooks(), experiment=None) -> list[Measurement]:
    """Run `suite` with `seed`, the models' and the market's (the world is fixed, so the predictors' recalls do
    not move with it). `experiment` (an ExperimentConfig, default `ci_experiment()`) is the market's: its
    first two arms are the A/B's control and treatment, its `plugins` go into the stack. Raises ValueError
    for an unknown suite, ConfigError for a plug-in that does not fit its protocol."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {list(SUITES)}")
    experiment = experiment or ci_experiment()
    return _ci(seed, hooks, replace(experiment, simulation=replace(experiment.simulation, seed=seed)))


@dataclass(frozen=True)
class Clock:
    """Turns a timing into a speed measurement: units per second of the run's reference workload."""

    reference: float  # seconds of `reference_seconds()` in this run

    def rate(self, name: str, units: float, seconds: float, unit: str, is_one_thread: bool = False) -> Measurement:
        """`is_one_thread`: timed on one thread like the reference, so its ratio is steadier (a tighter floor)."""
        return Measurement(name, units / seconds * self.reference, "speed", "higher", f"{unit} per reference second",
                           ONE_THREAD_SPEED_TOLERANCE if is_one_thread else None)


def _ci(seed: int, hooks: SuiteHooks, experiment) -> list[Measurement]:
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    clock = Clock(reference_seconds())
    world_config = preset("tiny", [f"users.n_users={CI_USERS}"])  # a fixed world: `seed` is the models' and market's
    world, seconds = _fastest(lambda: generate_world(world_config, progress=False))
    stack = market_stack(world, world_config, experiment, hooks)  # a plug-in or quota that does not fit fails now
    return [clock.rate("world_users_per_second", world.users.height, seconds, "users"),
            *_predictors(world, hooks), *_llm(world, clock), *_retrieval(world, seed),
            *_ranking(world, world_config, seed, hooks, clock), *_market(world, experiment, stack, clock)]


def _predictors(world, hooks: SuiteHooks) -> list[Measurement]:
    """The non-LLM advertiser predictors' Recall@1/5/20 on the V1 eval labels (paper Table 3's baselines)."""
    from llm_predictor.baselines import most_recent_predictions, popularity_predictions
    from llm_predictor.evaluate import EvalConfig, evaluation_labels, evaluation_requests
    from llm_predictor.metrics import recall_at_k

    eval_config = EvalConfig()
    labels = evaluation_labels(world, eval_config)["v1"]
    requests = evaluation_requests(world, eval_config)
    out, predicted = [], {}
    for method, predict in (("popularity", popularity_predictions), ("most_recent", most_recent_predictions)):
        predicted[method] = hooks.predictions(method, predict(world, requests), predicted)
        for k, recall in recall_at_k(predicted[method], labels, eval_config.ks).items():
            out.append(Measurement(f"predictor_{method}_recall_at_{k}", recall, "quality", "higher", "V1 labels"))
    return out


def _llm(world, clock: Clock) -> list[Measurement]:
    """The LLM predictor's data path and model at the demo's size (`small`, freshly built: weights do not
    change the speed): prompts built per second (features, render and allowed names, for every user at the
    evaluation anchor), training tokens per second (bf16 autocast, one thread) and users whose allowed names are
    ranked per second through the served backend (`rank`, top 20, one thread). Its recall is not measured
    here: no recipe learns the task within a CI budget yet (issue #14)."""
    import tempfile
    from pathlib import Path

    import torch
    from transformers.utils import logging as transformers_logging

    from llm_predictor.backends import TransformersBackend
    from llm_predictor.config import LLMConfig
    from llm_predictor.decoding import DecodingConfig
    from llm_predictor.evaluate import EvalConfig, evaluation_requests
    from llm_predictor.model import build_model
    from llm_predictor.predict import build_prompts
    from llm_predictor.throughput import training_rows
    from llm_predictor.tokenizer import train_tokenizer

    transformers_logging.disable_progress_bar()  # the save and load bars would interleave with the suite's table
    config = LLMConfig()
    # every user at the evaluation anchor: a workload of seconds, as serving the population would be
    anchor = evaluation_requests(world, EvalConfig())["anchor_date"][0]
    keys = world.users.select("user_id", anchor_date=pl.lit(anchor))
    prompts, seconds = _fastest(lambda: build_prompts(world, keys, config.features, config.preset_pool_size, "sft"))
    out = [clock.rate("llm_prompts_per_second", prompts.height, seconds, "prompts")]
    with tempfile.TemporaryDirectory() as directory, _one_thread():
        tokenizer = train_tokenizer(prompts["prompt"].to_list(), config.tokenizer, Path(directory))
        model = build_model(config.model, tokenizer)
        (row,) = training_rows(model, batch_size=4, seq_len=512, steps=3, generator=torch.Generator().manual_seed(0),
                               variants=((True, False),))  # bf16 eager, as its baseline
        out.append(clock.rate("llm_training_tokens_per_second", row["tokens"], row["seconds"], "tokens",
                              is_one_thread=True))
        model.save_pretrained(directory)
        backend = TransformersBackend(Path(directory), batch_size=16)
        ranked = DecodingConfig(strategy="rank", is_name_constrained=True, num_return_sequences=20)
        users = prompts.head(LLM_RANKED_USERS)
        texts, names = users["prompt"].to_list(), users["allowed_names"].to_list()
        backend.generate(texts[:2], ranked, names[:2])  # loads the model, warms the kernels
        _, seconds = _fastest(lambda: backend.generate(texts, ranked, names), repeats=2)
        out.append(clock.rate("llm_users_ranked_per_second", len(texts), seconds, "users", is_one_thread=True))
    return out


def _retrieval(world, seed: int) -> list[Measurement]:
    """Recall@100 of each candidate generator (paper 4.5.1) on the eval-split users' conversions in the
    week after the anchor: the two-tower (conversions objective, 2 epochs, `seed`) behind the main, the
    popularity and the advertiser-filtered generator, the last fed each user's 20 most recent advertisers
    as its predicted list."""
    from datetime import timedelta

    from ranking.recency_predictions import recent_advertiser_predictions
    from retrieval.config import RetrievalConfig, TrainingConfig
    from retrieval.evaluate import evaluate, evaluation_anchor, evaluation_requests, relevant_items, window_start
    from retrieval.generators import LlmAdvertiserGenerator, MainGenerator, PopularityGenerator
    from retrieval.index import ItemIndex
    from retrieval.train import TwoTowerRetriever

    config = RetrievalConfig(training=TrainingConfig(objective="conversions", epochs=2, seed=seed))
    anchor = evaluation_anchor(world.events, config.evaluation, world.labels)
    start = window_start(anchor)
    train_users = world.splits.filter(pl.col("split") == "train")["user_id"]
    retriever = TwoTowerRetriever(config).fit(world.events, world.users, world.items, train_users, start)
    index = ItemIndex(config.index).fit(retriever.item_vectors(), retriever.items_.advertiser_ids)
    observed = world.events.filter(pl.col("ts") < start)
    history = retriever.history(observed, world.users)
    lists = recent_advertiser_predictions(observed, world.advertisers, [anchor - timedelta(days=1)],
                                          config.generators.max_predicted_advertisers)
    generators = [MainGenerator(retriever, index, history, config.generators),
                  PopularityGenerator(config.generators, history).fit(world.events, world.items, start),
                  LlmAdvertiserGenerator(retriever, index, history, lists, config.generators)]
    requests = evaluation_requests(world.splits, anchor)
    candidates = {generator.source: generator.generate(requests) for generator in generators}
    metrics = evaluate(candidates, relevant_items(world.events, requests, anchor, config.evaluation.window_days),
                       MainGenerator.source, world.items["advertiser_id"].n_unique(), config.evaluation)
    return [Measurement(f"retrieval_{row['generator']}_recall_at_100", row["recall@100_converted"], "quality",
                        "higher", "eval users' converted items, next 7 days") for row in metrics.iter_rows(named=True)]


def _ranking(world, world_config, seed: int, hooks: SuiteHooks, clock: Clock) -> list[Measurement]:
    """The DCN ranker trained (2 epochs, `seed`) on two weeks of logged impressions with most-recent-advertiser
    lists as its LLM features: test AUC and PR-AUC per task, and its scoring speed on the test rows; and
    paper Table 5's deltas on the same rows: each task's AUC and PR-AUC with the LLM features and with
    random lists, relative to without them (DCN only, seeds `seed` and `seed + 1`)."""
    from datetime import date

    from ranking.config import RankingConfig, TrainConfig
    from ranking.features import split_by_time
    from ranking.lift import run_lift, summarize_lift
    from ranking.pipeline import fit_builder, train_ranker
    from ranking.recency_predictions import recent_advertiser_predictions
    from synthetic_data.impressions import ImpressionConfig, generate_impressions
    from synthetic_data.response import build_response_state

    state = build_response_state(world, date.fromisoformat(world_config.start_date),
                                 world_config.users.drift_period_days)
    impressions, _ = generate_impressions(world, state, ImpressionConfig(n_days=14, requests_per_user_day=2.0))
    lists = recent_advertiser_predictions(world.events, world.advertisers,
                                          world.labels["anchor_date"].unique().to_list(), 10)
    config = RankingConfig(reference_models=(), train=TrainConfig(epochs=2), seeds=(seed, seed + 1))
    ranker, metrics = train_ranker(world, impressions, lists, None, config, seed=seed)
    out = [Measurement(f"ranking_dcn_{task}_{name}", float(metrics["dcn"][task][name]), "quality", "higher",
                       "test impressions") for task in config.tasks for name in ("auc", "pr_auc")]
    splits = split_by_time(impressions, config.features)
    _, scores = run_lift(fit_builder(world, config), splits, lists, None, config)
    lift = summarize_lift(scores, replicates=100).filter(pl.col("metric").is_in(["auc", "pr_auc"]))
    for row in lift.filter(pl.col("comparison") != "with_llm vs random_control").iter_rows(named=True):
        arm = "with_llm" if row["comparison"].startswith("with_llm") else "random_lists"
        out.append(Measurement(f"table5_{row['task']}_{row['metric']}_change_{arm}", row["change_pct"] / 100,
                               "quality", "both", "relative change against no LLM features"))
    table = ranker.builder.transform(splits["test"], ranker.lists_)
    score = hooks.dcn_scoring(ranker.table_probabilities)
    score(table)  # built once: the bf16 scoring copy
    with _one_thread():  # as the reference workload
        _, seconds = _fastest(lambda: score(table))
    return [*out, clock.rate("dcn_candidates_per_second", len(table), seconds, "candidates", is_one_thread=True)]


def market_stack(world, world_config, experiment, hooks: SuiteHooks):
    """The model-free stack (sources `main` and `llm`) with `experiment`'s plug-ins and the hooks' scorer.
    Raises ConfigError for a plug-in that does not fit its protocol or an arm whose quotas do not name
    exactly the stack's sources."""
    from simulator.experiment import check_quotas
    from simulator.plugins import with_plugins
    from simulator.stack import baseline_stack, load_predictions

    stack = with_plugins(baseline_stack(world, world_config, load_predictions(None, world)[0]), experiment.plugins,
                         world)
    check_quotas(experiment.arms, [generator.source for generator in stack.generators])
    return replace(stack, scorer=hooks.scorer(stack.scorer))


def _market(world, experiment, stack, clock: Clock) -> list[Measurement]:
    """An A/B of `stack` (by default its advertiser-list generator off versus on): the treatment's relative
    change of RoAS, conversions, spend, CTR and advertiser diversity, the control scorer's ctcvr AUC on what
    it showed, the A/A false-positive rate, each source's funnel survival in the treatment and the market's
    requests per second."""
    from sklearn.metrics import roc_auc_score

    from simulator.experiment import aa_check, aa_false_positive_rates, pre_period_covariates, run_ab

    result, seconds = _fastest(lambda: run_ab(experiment, world, stack))
    treatment = experiment.arms[1].name
    out = [clock.rate("simulator_requests_per_second", sum(r.summary["requests"] for r in result.results.values()),
                      seconds, "requests")]
    changes = dict(result.comparisons.filter(pl.col("arm") == treatment).select("metric", "relative_change").rows())
    out += [Measurement(f"ab_{metric}_change", changes[metric], "quality", "both", "relative change")
            for metric in ("roas", "conversions_per_user", "spend_per_user", "ctr", "advertiser_entropy")]
    control = result.results[experiment.arms[0].name]
    # the market's scorer judged on what it showed: its ctcvr against the impressions that converted after a click
    impressions = control.impressions
    out.append(Measurement("scorer_ctcvr_auc", float(roc_auc_score(impressions["is_ctcvr"].to_numpy(),
                                                                      impressions["ctcvr"].to_numpy())),
                           "quality", "higher", "control arm's impressions"))
    aa = aa_check(experiment, world, stack, control, pre_period_covariates(world, experiment.pre_period_days),
                  experiment.aa_splits)
    out.append(Measurement("aa_false_positive_rate", aa_false_positive_rates(aa, experiment.alpha)["all"]["rate"],
                           "quality", "lower", f"share of {experiment.aa_splits} x 6 tests"))
    funnel = result.funnels.filter(pl.col("arm") == treatment)
    counts = {(row["source"], row["stage"]): row["count"] for row in funnel.iter_rows(named=True)}
    for source in sorted({source for source, _ in counts}):
        out.append(Measurement(f"funnel_{source}_impressed_per_retrieved",
                               counts.get((source, "impressed"), 0) / max(counts.get((source, "retrieved"), 0), 1),
                               "quality", "both", "share"))
    return out
